"""e4e generate: sample a generator at given seeds -> image grid PNG + W latents (.npy).
The sampling itself is `e4e.sampling.sample`; this module keeps the flags and the output folder."""
from e4e.cli import check_batch_and_size
from e4e.errors import E4EError


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]."""
    seeds = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (None, None)
                a, b = int(a), int(b)
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            elif part:
                seeds.append(int(part))
    except (ValueError, TypeError):
        raise E4EError(f"--seeds: cannot parse {text!r} (use e.g. 0-15 or 1,5,9)") from None
    if not seeds or min(seeds) < 0:
        raise E4EError(f"--seeds: need non-negative seeds, got {text!r}")
    return seeds


def run(args) -> int:
    import numpy as np

    from e4e.api import resolve_device
    from e4e.checkpoints import load_generator
    from e4e.imageio import save_grid
    from e4e.outputs import atomic_write, writable_dir
    from e4e.sampling import sample
    seeds = parse_seeds(args.seeds)
    if not 0 <= args.truncation <= 1:
        raise E4EError("--truncation must be in [0, 1]")
    check_batch_and_size(args.batch_size)
    device = resolve_device(args.device)
    out = writable_dir(args.output)  # before sampling: a bad -o costs one line
    g, avg = load_generator(args.checkpoint, compute_latent_avg=args.truncation < 1)
    images, ws = sample(g, seeds, args.truncation, avg, device, args.batch_size)
    save_grid(images, out / "grid.png", nrow=int(np.ceil(np.sqrt(len(seeds)))))
    atomic_write(out / "w.npy", lambda f: np.save(f, ws.numpy()))
    atomic_write(out / "seeds.txt", lambda f: f.write("\n".join(map(str, seeds)) + "\n"), mode="w")
    print(f"wrote {out / 'grid.png'} ({len(seeds)} images, {g.size}x{g.size}) and {out / 'w.npy'} {tuple(ws.shape)}")
    return 0


def register(sub):
    from e4e.cli import add_threads
    p = sub.add_parser("generate", help="sample a generator: image grid + W latents")
    p.add_argument("--checkpoint", required=True, help="generator: rosinality .pt, NVIDIA .pkl or e4e .safetensors")
    p.add_argument("--seeds", default="0-15", help="e.g. 0-15 or 1,5,9 (default 0-15)")
    p.add_argument("--truncation", type=float, default=1.0, help="psi in [0,1] toward the mean latent")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--device", help="cpu, cuda ... (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=8)
    add_threads(p)
    p.set_defaults(func=run)
