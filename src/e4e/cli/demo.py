"""e4e demo: the main job on the embedded default model.

Inverts the held-out emoji shipped in e4e/assets/samples (images neither network trained on), edits
the codes along three kinds of direction -- skin tone (a linear SVM on labelled training codes), the top
SeFa direction and the first GANSpace component of this generator -- and writes one grid.
"""
import time
from pathlib import Path



def run(args) -> int:
    import torch
    from e4e import editing
    from e4e.api import invert, load
    from e4e.assets import default_inverter_path
    from e4e.imageio import iter_image_paths, load_image, save_grid, to_tensor
    t0 = time.perf_counter()
    torch.manual_seed(0)
    assets = Path(default_inverter_path()).parent
    inv = load(args.checkpoint)
    paths = list(iter_image_paths(args.images or [assets / "samples"]))[: args.limit]
    lat = invert(paths, inv, batch_size=16)
    codes = lat.codes
    g = inv.decoder
    s = args.strength
    sefa = editing.sefa_directions(g)
    pca = editing.ganspace_pca(g, n_samples=20_000, seed=0)
    skin = editing.load_direction(assets / "skin_tone.pt")
    edits = {
        "skin tone -": editing.apply_direction(codes, skin, -s),
        "skin tone +": editing.apply_direction(codes, skin, +s),
        "SeFa 0 -": editing.apply_direction(codes, sefa.directions[:1], -s, styles=sefa.styles),
        "SeFa 0 +": editing.apply_direction(codes, sefa.directions[:1], +s, styles=sefa.styles),
        # one standard deviation of W along the component: a full step of W's own spread
        "GANSpace 0 -": editing.apply_direction(codes, pca["comp"][0], -float(pca["std"][0])),
        "GANSpace 0 +": editing.apply_direction(codes, pca["comp"][0], +float(pca["std"][0])),
    }
    with torch.no_grad():
        inputs = to_tensor([load_image(p, g.size) for p in paths])
        columns = [inputs, inv.decode(codes, resize=False)] + [inv.decode(c, resize=False) for c in edits.values()]
    grid = torch.stack(columns, 1).flatten(0, 1).clamp(-1, 1)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    save_grid(grid, out / "demo.png", nrow=len(columns))
    names = ["input", "e4e inversion", *edits]
    (out / "columns.txt").write_text("\n".join(names) + "\n")
    mse = float(((columns[1] - inputs) ** 2).mean())
    print(f"e4e demo: inverted {len(paths)} held-out emoji with the embedded model ({Path(inv_path(args)).name}),"
          f" reconstruction MSE {mse:.4f}")
    print("columns: " + " | ".join(names))
    print(f"wrote {out / 'demo.png'} in {time.perf_counter() - t0:.1f} s")
    return 0


def inv_path(args):
    from e4e.assets import default_inverter_path
    return args.checkpoint or default_inverter_path()


def register(sub):
    from e4e.cli import add_threads
    p = sub.add_parser("demo", help="invert and edit held-out images with the embedded model; write a grid")
    p.add_argument("-o", "--output", default="out/demo")
    p.add_argument("--checkpoint", help="inverter to use instead of the embedded one")
    p.add_argument("--images", nargs="*", help="images instead of the shipped held-out samples")
    p.add_argument("--limit", type=int, default=12)
    p.add_argument("--strength", type=float, default=3.0, help="step along the skin-tone and SeFa directions")
    add_threads(p)
    p.set_defaults(func=run)
