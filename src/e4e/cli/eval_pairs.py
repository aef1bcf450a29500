"""`e4e eval --pairs DIR --classifier EVAL.safetensors [--labeller SIM.safetensors] --methods ... -o OUT`:
the ground-truth editing benchmark on an avatar dataset folder (e4e.benchmark says what is measured).

Part of `e4e eval` rather than a command of its own: the methods, checkpoints, metric networks, limits,
device and resumable row cache are the same, and the reconstruction / LEC / distance-to-W columns are
e4e.evaluate's; the pairs add the edits scored against the true counterfactuals.

Writes OUT/pairs.md (tables + definitions + the command), OUT/pairs_summary.csv (one row per method),
OUT/pairs_curves.csv (method x direction kind x attribute x strength, with standard errors),
OUT/pairs_paired.csv (e4e minus pSp pair by pair, with e4e and psp both run), OUT/pairs_directions.csv,
OUT/pairs_tradeoff.png, OUT/pairs_bars.png, OUT/sheets/<method>.png (input | inversion | edit | truth) and
OUT/directions.safetensors. Directions and each method's rows are kept in OUT/.cache with a fingerprint of
what they depend on, so an interrupted run resumes at the method it was on; directions fitted for more
kinds or targets (a larger --limit) serve a run that asks for fewer.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

import torch

from e4e.errors import E4EError


def parse_method_limits(text: str | None, methods) -> dict[str, int]:
    """'pti=8,optimize=16' -> {'pti': 8, 'optimize': 16}."""
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in methods or not value.strip().isdigit():
            raise E4EError(f"--method-limits: expected METHOD=N for methods in --methods, got {item.strip()!r}")
        out[name] = int(value)
    return out


def parse_names(text: str | None, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """'smile,hat' -> ('smile', 'hat'), in the order of `allowed`; None or empty: all of `allowed`."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise E4EError(f"{flag}: unknown {', '.join(bad)}; choose from {','.join(allowed)}")
    return tuple(n for n in allowed if n in names) if names else allowed


def load_attribute_nets(args, device):
    """(judge, labeller or None): the evaluation classifier and the similarity network."""
    try:
        from e4e.checkpoints.attributes import load_attribute_net
    except ImportError:
        raise E4EError("--classifier needs e4e.checkpoints.attributes (the attribute networks' module), "
                       "which this installation lacks") from None
    if not args.classifier:
        raise E4EError("--pairs needs the evaluation classifier: pass --classifier PATH")
    judge = load_attribute_net(args.classifier).to(device).eval()
    labeller = load_attribute_net(args.labeller).to(device).eval() if args.labeller else None
    return judge, labeller


def _plain(fp: dict) -> dict:
    """The fingerprint as its JSON round trip (tuples become lists), so a saved one compares equal."""
    import json
    return json.loads(json.dumps(fp))


def _sha(path) -> str | None:
    from e4e.latents import checkpoint_sha256
    return checkpoint_sha256(path) if path else None


def run_pairs(args) -> int:
    from e4e import benchmark as bm
    from e4e.api import load, resolve_device
    from e4e.cli.eval_common import (build_scorers, cached, command_line, device_name, parse_floats,
                                     parse_methods, save_cached, saved_entry)
    from e4e.evaluate import REFINED, EvalOptions, image_features, markdown_table, same_generator, write_csv
    from e4e.imageio import save_grid
    from e4e.plot import BarPanel, Panel, bar_panels, scatter_panels

    methods = parse_methods(args.methods)
    if "psp" in methods and not args.psp:
        raise E4EError("method psp needs the pSp inverter: pass --psp PATH")
    if args.images:
        raise E4EError("--pairs DIR reads its images from DIR: give no IMAGES")
    strengths = parse_floats(args.edit_strengths, "--edit-strengths")
    lec_strengths = parse_floats(args.strengths, "--strengths")
    limits = parse_method_limits(args.method_limits, methods)
    kinds = parse_names(args.kinds, bm.KINDS, "--kinds")
    edit_attributes = parse_names(args.attributes, bm.EDIT_ATTRIBUTES, "--attributes")
    if args.sheet_kind not in kinds:
        raise E4EError(f"--sheet-kind {args.sheet_kind} is not among --kinds {','.join(kinds)}")
    calib_grid = tuple(sorted(parse_floats(args.calib_grid, "--calib-grid"))) if args.calib_grid else None
    for m in REFINED:
        if m in methods and m not in limits and args.refine_limit is not None:
            limits[m] = args.refine_limit
    if args.limit is not None and args.limit < 1:
        raise E4EError("--limit must be at least 1")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.overwrite and (out / ".cache").is_dir():
        import shutil
        shutil.rmtree(out / ".cache")

    inverters = {"e4e": load(args.checkpoint, device)}
    e4e = inverters["e4e"]
    if "psp" in methods:
        inverters["psp"] = load(args.psp, device)
        if not same_generator(inverters["psp"].decoder, e4e.decoder):
            raise E4EError("the pSp and e4e checkpoints hold different generators: the directions live in one W "
                           "space, so both encoders must invert into the same generator")
    judge, labeller = load_attribute_nets(args, device)
    scorers = build_scorers(args, device)
    data = bm.read_pairs(args.pairs)
    data.pairs = [p for p in data.pairs if p["attribute"] in edit_attributes]  # preservation still checks all
    if not data.pairs:
        raise E4EError(f"{data.root / 'pairs.csv'}: no test pairs of --attributes {','.join(edit_attributes)}")
    size = e4e.input_size
    say = (lambda *a: None) if args.quiet else print

    # test images and their counterfactuals; unreadable ones are skipped with a reason
    source_files, pairs = bm.select_pairs(data, args.limit)
    sources, source_files, skipped = bm.load_files(data.root, source_files, size, args.fit)
    truth_imgs, truth_files, more = bm.load_files(data.root, [p["file"] for p in pairs], size, args.fit)
    skipped += more
    if sources is None or truth_imgs is None:
        raise E4EError(f"{data.root}: no readable test images or counterfactuals")
    truths = dict(zip(truth_files, truth_imgs))
    got = bm.label_strings(judge, truth_imgs, data.attributes, args.batch_size)
    truth_labels = {f: {a: got[a][i] for a in data.attributes} for i, f in enumerate(truth_files)}
    pairs_of = [[p for p in pairs if p["source"] == s and p["file"] in truths] for s in source_files]
    n_pairs = sum(map(len, pairs_of))
    for line in skipped:
        say(line)
    say(f"benchmarking {', '.join(methods)} on {len(source_files)} test images, {n_pairs} pairs "
        f"({size} px) on {device}")

    # realism references: real test avatars, grouped by attribute value
    test_rows = data.split("test")
    if args.reference_limit is not None and len(test_rows) > args.reference_limit:
        pick = torch.randperm(len(test_rows), generator=torch.Generator().manual_seed(args.seed))
        test_rows = [test_rows[i] for i in pick[:args.reference_limit].sort().values.tolist()]
    ref_imgs, ref_files, _ = bm.load_files(data.root, [r["file"] for r in test_rows], size, args.fit)
    row_of = {r["file"]: r for r in test_rows}
    real_by_attr = bm.group_features(image_features(scorers.features, ref_imgs, args.batch_size, device),
                                     [row_of[f] for f in ref_files], data.attributes)

    # directions (fitted once, cached)
    targets = bm.targets_of([p for ps in pairs_of for p in ps])
    dopts = bm.DirectionOptions(samples=args.direction_samples, codes=args.direction_images,
                                components=args.components, calib_samples=args.calib_samples,
                                goal=args.success, batch_size=args.batch_size, seed=args.seed, fit=args.fit,
                                kinds=kinds, stop_at_goal=True, calib_on=args.calib_on,
                                **({"calib_grid": calib_grid} if calib_grid else {}))
    base = {"e4e": _sha(e4e.checkpoint_path), "judge": _sha(args.classifier), "labeller": _sha(args.labeller),
            "data": str(Path(args.pairs).resolve()), "fit": args.fit, "seed": args.seed,
            "metrics": [args.perceptual_weights, args.lpips_backbone, args.lpips_weights, args.lpips_net,
                        args.inception]}
    # a saved set made the same way for a superset of these kinds and targets serves this run (bm.covers)
    how = {**base, "options": repr(replace(dopts, kinds=()))}
    fp_dirs = _plain({**how, "kinds": list(kinds), "targets": targets})
    dir_file = out / "directions.safetensors"
    entry = saved_entry(out, "pairs-directions")
    fp_saved = entry["fingerprint"] if entry is not None else {}
    if (dir_file.is_file() and {k: v for k, v in fp_saved.items() if k not in ("kinds", "targets")} == _plain(how)
            and bm.covers(fp_saved["kinds"], fp_saved["targets"], kinds, targets)):
        dirs, dir_notes = bm.select_directions(*bm.load_directions(dir_file), kinds, targets)
        say(f"reusing the directions in {dir_file}")
    else:
        dirs, dir_notes = bm.prepare_directions(data, targets, e4e, judge, labeller, dopts, progress=not args.quiet)
        bm.save_directions(dir_file, dirs, dir_notes)
        save_cached(out, "pairs-directions", fp_dirs, {"file": dir_file.name})

    eo = EvalOptions(methods=methods, optimize_steps=args.optimize_steps, pti_steps=args.pti_steps,
                     batch_size=args.batch_size, strengths=lec_strengths, n_directions=args.directions,
                     w_samples=args.w_samples, seed=args.seed)
    bo = bm.BenchOptions(eval=eo, strengths=strengths, goal=args.success, sheet_pairs=args.sheet_pairs,
                         sheet_kind=args.sheet_kind)
    recon_rows, curves = [], []
    for m in methods:
        k = min(limits.get(m, len(source_files)), len(source_files))
        fp = {**fp_dirs, "method": m, "sources": source_files[:k], "strengths": strengths, "lec": lec_strengths,
              "directions_lec": args.directions, "w_samples": args.w_samples, "psp": _sha(args.psp) if m == "psp"
              else None, "steps": args.pti_steps if m == "pti" else args.optimize_steps if m in REFINED else None,
              "batch_size": args.batch_size, "sheet": [args.sheet_pairs, args.sheet_kind]}
        fp = _plain(fp)
        row = cached(out, f"pairs-{m}", fp)
        if row is None:
            recon, curve, sheet = bm.benchmark_method(m, sources[:k], pairs_of[:k], truths, truth_labels, dirs,
                                                      inverters, scorers, judge, real_by_attr,
                                                      replace(bo, eval=replace(eo, methods=(m,))),
                                                      progress=not args.quiet)
            if sheet:
                save_grid(torch.stack(sheet), out / "sheets" / f"{m}.png", nrow=4)
            row = {"recon": recon, "curves": curve}
            save_cached(out, f"pairs-{m}", fp, row)
        else:
            say(f"reusing the rows of an earlier run for {m} (in {out / '.cache'}; --overwrite recomputes them)")
        recon_rows.append(row["recon"])
        curves += row["curves"]
    curves += bm.reference_curves(sources, pairs_of, truths, truth_labels, judge, scorers, real_by_attr,
                                  args.batch_size, args.seed)

    summary = bm.summary_rows(recon_rows, curves, args.sheet_kind)
    write_csv(out / "pairs_summary.csv", summary, bm.SUMMARY_COLUMNS)
    write_csv(out / "pairs_curves.csv", curves, bm.CURVE_COLUMNS + bm.CURVE_SE_COLUMNS)
    paired = bm.paired_rows(curves)
    if paired:
        write_csv(out / "pairs_paired.csv", paired, bm.PAIRED_COLUMNS)
    drows = bm.direction_rows(dirs)
    write_csv(out / "pairs_directions.csv", drows, bm.DIRECTION_COLUMNS)

    p_name = scorers.perceptual_name
    pts = [(r["method"], r["perceptual"], r["edit_perceptual"]) for r in summary if r.get("edit_perceptual") is not None]
    pts_mse = [(r["method"], r["mse"], r["edit_mse"]) for r in summary if r.get("edit_mse") is not None]
    tradeoff = scatter_panels([Panel("Perceptual", f"reconstruction {p_name} distance",
                                     f"edit {p_name} distance to the truth", pts),
                               Panel("MSE", "reconstruction MSE", "edit MSE to the truth", pts_mse)],
                              out / "pairs_tradeoff.png",
                              title=f"Reconstruction vs edit distortion ({args.sheet_kind} directions at "
                                    f"{args.success:.0%} strength; lower left is better)")
    attrs = [a for a in bm.EDIT_ATTRIBUTES if a in targets]
    s90 = {(c["method"], c["attribute"]): c for c in curves if c["kind"] == args.sheet_kind and c["strength"] == bm.S90}

    def series(key):
        return {m: [s90.get((m, a), {}).get(key) for a in attrs] for m in methods}

    bars = bar_panels([BarPanel("Edit success", "success rate", attrs, series("success")),
                       BarPanel("Preservation", "other attributes unchanged", attrs, series("preservation")),
                       BarPanel("Edit distortion", f"{p_name} distance to the truth", attrs,
                                series("edit_perceptual")),
                       BarPanel("Edit MSE", "MSE to the truth", attrs, series("edit_mse"))],
                      out / "pairs_bars.png", title=f"Per attribute ({args.sheet_kind} directions at s90)")

    header = [f"Command: `{command_line(args, args._parser)}`  ",
              f"Date: {datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}  ",
              f"Device: {device_name(device)}, torch {torch.__version__}  ",
              f"Data: {data.root}: {len(source_files)} test images, {n_pairs} counterfactual pairs ({size} px)"
              + "".join(f"; {m} on the first {v} images" for m, v in limits.items() if v < len(source_files))
              + (f"; pairs of {', '.join(edit_attributes)} only" if edit_attributes != bm.EDIT_ATTRIBUTES else "")
              + (f"; direction kinds {', '.join(kinds)} only" if kinds != bm.KINDS else "") + "  ",
              f"Judge (evaluation classifier): `{Path(args.classifier).name}`; direction labeller: "
              + (f"`{Path(args.labeller).name}` (the similarity network)" if args.labeller
                 else "**the judge itself** (no --labeller given: the directions on generator samples were fitted "
                      "on the judge's own labels, so their success is optimistic)")]
    kind = args.sheet_kind
    per_attr = [c for c in curves if (c["kind"] == kind and c["strength"] == bm.S90) or c["kind"] == "–"]
    text = ["# Editing against the ground truth", "", *header, "",
            f"## Per method ({kind} directions at the strength for {args.success:.0%} success, mean over "
            "attributes)", "", markdown_table(summary, bm.SUMMARY_COLUMNS), "",
            f"## Per attribute ({kind} at s90; reference rows: the unedited input and the truth itself)", "",
            markdown_table(per_attr, bm.CURVE_COLUMNS), "",
            *([f"## e4e minus pSp, pair by pair ({kind} at s90)", "",
               "The mean over the pairs both methods scored of (e4e's distance to the truth − pSp's), with its "
               "standard error; z = mean / s.e. (|z| > 2: a difference this many pairs resolve). Every strength "
               "and kind: pairs_paired.csv.", "",
               markdown_table([r for r in paired if r["kind"] == kind and r["strength"] == bm.S90],
                              bm.PAIRED_COLUMNS), ""] if paired else []),
            "## Directions", "", markdown_table(drows, bm.DIRECTION_COLUMNS), "",
            "Curves over strength for every direction kind: pairs_curves.csv. Figures: pairs_tradeoff.png, "
            "pairs_bars.png; sample sheets (input | inversion | edit | truth): sheets/<method>.png.", "",
            "## Definitions", "", *_definitions(bm, args, scorers, strengths), ""]
    if dir_notes or skipped:
        text += ["## Skipped", "", *[f"- {n}" for n in dir_notes + skipped], ""]
    (out / "pairs.md").write_text("\n".join(text), encoding="utf-8")
    if not args.quiet:
        print(markdown_table(summary, bm.SUMMARY_COLUMNS))
    print(f"wrote {out / 'pairs.md'}, {out / 'pairs_summary.csv'}, {out / 'pairs_curves.csv'}, {tradeoff}, {bars}")
    return 0


def _definitions(bm, args, scorers, strengths) -> list[str]:
    return [
        "- Methods: e4e / psp = one encoder pass; optimize_w = W+ optimisation from the mean latent; optimize = "
        f"e4e + W+ optimisation ({args.optimize_steps} steps); pti = pivotal tuning around the e4e code "
        f"({args.pti_steps} steps).",
        "- Directions: ifg_samples = InterFaceGAN (linear SVM) on labelled generator samples "
        f"({args.direction_samples} W samples); ifg_codes = the same on the e4e codes of {args.direction_images} "
        "training images with their true labels (their mean over styles); codes_wplus = the class-mean difference "
        "of those codes, style by style (a W+ direction); component = the best-correlated of the top "
        f"{args.components} SeFa and {args.components} GANSpace directions. hair_colour: one-vs-rest toward the "
        "target colour. Strengths are in standard deviations of W along the direction, added to every style; "
        "for codes_wplus in class gaps (1 = from one class's mean code to the other's).",
        f"- s90: the smallest strength at which the judge sees the target on {args.success:.0%} of "
        f"{bm.CALIBRATED_ON[args.calib_on].format(n=args.calib_samples, codes=args.direction_images)} that lacked it "
        "(tried at "
        f"{args.calib_grid or '0, 0.5, ..., 6'}, up to the first that reaches it); curve strengths: "
        f"{', '.join(f'{s:g}' for s in strengths)}.",
        "- success: the judge predicts the target on the edited inversion. preservation: its predictions of every "
        "other edit attribute on the edit equal its predictions on the true counterfactual.",
        f"- edit MSE / perceptual: between the clamped edit and the counterfactual ({scorers.perceptual_name}); "
        f"edit FID / KID (at s90 only) ({scorers.features_name} features): edits against real test avatars with the target "
        f"value (at most {args.reference_limit} test images), weighted over target values, leaving out target values "
        f"with fewer than {bm.REALISM_MIN} edits or real images; small sets bias FID upwards, compare rows of "
        "similar size.",
        "- recon columns, LEC and Mahalanobis to W: as `e4e eval` (e4e.evaluate), on the same test images.",
        "- s.e. (pairs_curves.csv's *_se columns, the paired table): the standard error of a mean over pairs, "
        "sample standard deviation / sqrt(pairs). A test image gives at most one pair per attribute, so a "
        "cell's pairs are independent test images; it measures how much the sample of test avatars moves the "
        "mean, not the uncertainty of the judge or of the directions' fit.",
    ]


def register_flags(p) -> None:
    """The flags `e4e eval` adds for --pairs."""
    from e4e.benchmark import CALIB_ON, KINDS
    g = p.add_argument_group("ground-truth editing benchmark (--pairs)")
    g.add_argument("--pairs", metavar="DIR", help="avatar dataset folder (labels.csv, pairs.csv, pairs/): run the "
                                                  "editing benchmark against the true counterfactuals")
    g.add_argument("--classifier", metavar="PATH", help="evaluation classifier (e4e.nets.attributes safetensors)")
    g.add_argument("--labeller", metavar="PATH", help="similarity network: labels the generator samples the "
                                                      "InterFaceGAN directions are fitted on (default: the judge)")
    g.add_argument("--edit-strengths", default="0,1,2,3", help="curve strengths in W std, class gaps for codes_wplus "
                                                               "(default 0,1,2,3)")
    g.add_argument("--success", type=float, default=0.9, help="success rate the calibrated strength reaches")
    g.add_argument("--direction-samples", type=int, default=10_000, help="labelled generator samples (10000)")
    g.add_argument("--direction-images", type=int, default=2000,
                   help="training images for ifg_codes and codes_wplus (2000)")
    g.add_argument("--components", type=int, default=10, help="SeFa and GANSpace candidates each (10)")
    g.add_argument("--calib-samples", type=int, default=256, help="generator samples for the strength (256)")
    g.add_argument("--calib-on", default="samples", choices=CALIB_ON,
                   help="what s90 is calibrated on: samples (generator samples, the default) or codes (the e4e "
                        "codes of --calib-samples training avatars after the --direction-images ones: the images "
                        "an edit of a real picture starts from)")
    g.add_argument("--calib-grid", metavar="S,S,...", help="strengths tried for s90, ascending (default 0,0.5,...,6)")
    g.add_argument("--kinds", metavar="K,...", help="direction kinds to fit and score, from "
                                                    f"{','.join(KINDS)} (default all)")
    g.add_argument("--attributes", metavar="A,...", help="edit attributes whose pairs are scored, from "
                                                         "smile,glasses,facial_hair,hat,hair_colour (default all; "
                                                         "preservation still checks all five)")
    g.add_argument("--method-limits", metavar="M=N,...", help="per-method image limits, e.g. pti=8,optimize=32")
    g.add_argument("--sheet-pairs", type=int, default=8, help="pairs per method in the sample sheets (8)")
    g.add_argument("--sheet-kind", default="ifg_samples", choices=KINDS,
                   help="direction kind of the summary, figures and sheets (default ifg_samples)")
