"""Editability against the ground truth: inversion methods edited on counterfactual avatars (`e4e eval --pairs`).

In: an avatar dataset folder (labels.csv: file, split, clean attribute columns; pairs.csv: file, source,
attribute, target + the counterfactual's clean labels; the counterfactual PNGs), the inverters of
e4e.evaluate, an evaluation classifier (the judge) and a labeller (the similarity network), both with the
e4e.nets.attributes interface: `predict(x in [-1, 1]) -> {name: LongTensor}` (binary 0/1, categorical an
index into `cfg.vocab(name)`).
Out: rows of plain values (one per method x direction kind x attribute x strength) for a CSV/Markdown table,
curves and figures; see `benchmark` and `columns`.

Why: a paper can only score edits by proxies; a rendered avatar pair gives the true edited image, so the
distance between a method's edited inversion and that truth measures what an edit should have produced.

Directions (unit vectors scaled to one standard deviation of W along them, added to every style, like
e4e.evaluate's LEC directions; "codes_wplus" is the exception below), for every attribute and target value
(binary: toward 1, its negation toward 0; hair_colour: one-vs-rest toward the target colour, the
categorical analogue of InterFaceGAN's binary hyperplane):
- "ifg_samples": InterFaceGAN's protocol, a linear SVM on W samples mapping(z) labelled by the LABELLER on
  G(w). The judge never labels the data a direction is fitted on: the labeller is a different network
  trained on the other half of the training split (when no labeller is given the judge labels and the run's
  notes say so).
- "ifg_codes": the same SVM on the e4e encoder's codes (averaged over styles) of training images, with
  their true labels from labels.csv.
- "codes_wplus": a direction in W+ (one vector per style, (n_styles, D)): the difference between the mean
  e4e code of training images with the target and the mean code of those without, style by style (true
  labels from labels.csv). No classifier is fitted (a hyperplane in n_styles x 512 dimensions would need far
  more images than a few thousand); its strength unit is that class gap, not a W standard deviation:
  strength 1 moves a code from the mean of one class to the mean of the other. Attributes that live in a
  few layers (a smile, glasses) move along it where the style-mean directions above barely do
  (bench/direction_fit_check.py, docs/model_card_avatar.md).
- "component": the top SeFa / GANSpace direction (e4e.evaluate.edit_directions) whose W coordinate
  correlates best (Pearson, on the labeller's labels of the same W samples) with the attribute; sign toward
  the target.
Strength: curves over fixed strengths, plus "s90", the smallest strength at which the judge sees the target
on 90% of other generator samples that lacked it (linear interpolation on a grid; the judge calibrates the
strength on generator samples, never on the test pairs it then scores).

Per pair (a test image, an attribute, a target) and method: success = the judge predicts the target on the
edited inversion; preserved = the judge's predictions of every other edit attribute on the edit equal its
predictions on the true counterfactual (so classifier bias and legitimate couplings such as hat -> no hair
colour cancel); edit MSE / perceptual = between the (clamped) edit and the counterfactual; realism (at s90 only: one
FID per cell and target value is the slow part) = FID / KID of the edits against real test avatars that
have the target value (weighted over target values; target values with fewer than REALISM_MIN edits or
real images are left out). Each cell's means come with standard errors, and `paired_rows` compares two
methods pair by pair (the same test pairs, so the spread between avatars cancels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from e4e import metrics
from e4e.errors import E4EError
from e4e.evaluate import (EvalOptions, Scorers, _Totals, edit_directions, invert_units, sample_w, score_unit,
                          summarise)
from e4e.refine import render

EDIT_ATTRIBUTES = ("smile", "glasses", "facial_hair", "hat", "hair_colour")
BINARY = ("smile", "glasses", "facial_hair", "hat")
KINDS = ("ifg_samples", "ifg_codes", "codes_wplus", "component")
S90 = "s90"
# what strengths are calibrated on (DirectionOptions.calib_on), and how reports name each
CALIBRATED_ON = {"samples": "{n} generator samples",
                 "codes": "the e4e inversions of {n} training avatars (rows after the first {codes})"}
CALIB_ON = tuple(CALIBRATED_ON)
REALISM_MIN = 10  # FID / KID of fewer images per target value is noise (and costs 1280-d eigendecompositions)


# ------------------------------------------------------------------------------------------- dataset


@dataclass
class PairSet:
    root: Path
    labels: list[dict]  # labels.csv rows (strings)
    pairs: list[dict]  # pairs.csv rows (strings)
    attributes: tuple[str, ...]

    def split(self, name: str) -> list[dict]:
        return [r for r in self.labels if r["split"] == name]


def read_pairs(root, attributes: tuple[str, ...] = EDIT_ATTRIBUTES) -> PairSet:
    """Reads DIR/labels.csv and DIR/pairs.csv; keeps the pairs of `attributes` whose source is a test image."""
    from e4e.data.avatars import read_table
    root = Path(root)
    labels = read_table(root / "labels.csv", ("file", "split", *attributes))
    pairs = read_table(root / "pairs.csv", ("file", "source", "attribute", "target", *attributes))
    test = {r["file"] for r in labels if r["split"] == "test"}
    unknown = sorted({p["attribute"] for p in pairs} - set(EDIT_ATTRIBUTES))
    if unknown:
        raise E4EError(f"{root / 'pairs.csv'}: unknown attribute(s) {', '.join(unknown)}")
    pairs = [p for p in pairs if p["attribute"] in attributes and p["source"] in test]
    if not pairs:
        raise E4EError(f"{root / 'pairs.csv'}: no pairs of {', '.join(attributes)} with a test-split source")
    return PairSet(root, labels, pairs, tuple(attributes))


def select_pairs(data: PairSet, limit: int | None) -> tuple[list[str], list[dict]]:
    """The first `limit` source images (in pairs.csv order) and all their pairs."""
    sources = list(dict.fromkeys(p["source"] for p in data.pairs))
    if limit is not None:
        sources = sources[:limit]
    keep = set(sources)
    return sources, [p for p in data.pairs if p["source"] in keep]


# ------------------------------------------------------------------------------------------ labels


def label_strings(net: nn.Module, images: torch.Tensor, attributes, batch_size: int = 32) -> dict[str, list[str]]:
    """The attribute net's predictions as the strings labels.csv uses ('0'/'1', colour names)."""
    device = next(net.parameters()).device
    out: dict[str, list[str]] = {a: [] for a in attributes}
    with torch.no_grad():
        for chunk in images.split(max(1, batch_size)):
            pred = net.predict(chunk.to(device))
            for a in attributes:
                if a not in pred:
                    raise E4EError(f"the attribute network has no head {a!r} (heads: {', '.join(pred)})")
                idx = pred[a].reshape(-1).tolist()
                out[a] += [str(int(i)) for i in idx] if a in BINARY else [net.cfg.vocab(a)[int(i)] for i in idx]
    return out


@torch.no_grad()
def labels_of_w(generator: nn.Module, net: nn.Module, w: torch.Tensor, attributes, size,
                batch_size: int = 32) -> dict[str, list[str]]:
    """Labels of the images G(w) (W codes (N, D), which the generator puts on every style, or W+ codes
    (N, n, D)), rendered and labelled chunk by chunk."""
    device = next(generator.parameters()).device
    out: dict[str, list[str]] = {a: [] for a in attributes}
    for c in w.split(max(1, batch_size)):
        got = label_strings(net, render(generator, c.float().to(device), size).clamp(-1, 1), attributes, batch_size)
        for a in attributes:
            out[a] += got[a]
    return out


def targets_of(pairs: list[dict]) -> dict[str, list[str]]:
    """attribute -> the target values the pairs ask for, sorted."""
    out: dict[str, set] = {}
    for p in pairs:
        out.setdefault(p["attribute"], set()).add(p["target"])
    return {a: sorted(v) for a, v in out.items()}


# -------------------------------------------------------------------------------------- directions


@dataclass
class Direction:
    kind: str
    attribute: str
    target: str
    vector: torch.Tensor  # (D,), one W standard deviation long; codes_wplus: (n_styles, D), one class gap
    info: dict = field(default_factory=dict)  # accuracy / correlation / source component
    s90: float | None = None  # strength for 90% success on generator samples; None: not reached
    calibration: list[float] = field(default_factory=list)  # judge success rate at each calibration strength,
    # up to the first that reaches the goal (the strengths after it are not rendered: s90 does not need them)


def scale_to_w_std(direction: torch.Tensor, w_samples: torch.Tensor) -> torch.Tensor:
    """Rescales a direction so that strength 1 moves one standard deviation of `w_samples` along it."""
    u = direction.double().reshape(-1)
    u = u / u.norm().clamp_min(1e-12)
    return (u * (w_samples.double() @ u).std()).float()


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    den = float(x.norm() * y.norm())
    return float(x @ y) / den if den > 0 else 0.0


def _one_vs_rest(attribute: str, target: str, labels: list[str]) -> torch.Tensor:
    """1 where the label is the target. Binary attributes fit toward '1' (the caller negates for '0')."""
    want = "1" if attribute in BINARY else target
    return torch.tensor([lab == want for lab in labels], dtype=torch.float64)


def fit_directions(w_samples: torch.Tensor, sample_labels: dict[str, list[str]] | None,
                   code_feats: torch.Tensor | None, code_labels: dict[str, list[str]] | None, components,
                   targets: dict[str, list[str]], seed: int = 0, steps: int = 500,
                   kinds: tuple[str, ...] = KINDS) -> tuple[list[Direction], list[str]]:
    """The `kinds` (default all three) for every (attribute, target). -> (directions, one-line notes on those
    not fitted). w_samples (N, D) with sample_labels {attribute: N strings} (None when neither ifg_samples
    nor component is asked for); code_feats (M, n, D) or (M, D) with code_labels; components an
    e4e.evaluate.EditSet (None without "component"); targets {attribute: target values}."""
    from e4e.editing import class_gap, fit_direction
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise E4EError(f"unknown direction kind(s) {', '.join(unknown)} (kinds: {', '.join(KINDS)})")
    dirs, skipped, fits = [], [], {}
    if "component" in kinds:
        comp_vecs = components.directions.double()
        comp_coord = (w_samples.double() - w_samples.double().mean(0)) @ comp_vecs.T  # (N, K)
    for attribute, values in targets.items():
        for target in values:
            sign = -1.0 if attribute in BINARY and target == "0" else 1.0
            sources = [("ifg_samples", w_samples, sample_labels)] if "ifg_samples" in kinds else []
            if code_feats is not None and "ifg_codes" in kinds:
                sources.append(("ifg_codes", code_feats, code_labels))
            for kind, x, labels in sources:
                y = _one_vs_rest(attribute, target, labels[attribute])
                key = (kind, attribute, "1" if attribute in BINARY else target)  # a binary pair shares one fit
                try:
                    if key not in fits:
                        fits[key] = fit_direction(x, y, seed=seed, steps=steps)
                    fit = fits[key]
                except E4EError as e:
                    what = "labelled generator samples" if kind == "ifg_samples" else "encoded training images"
                    skipped.append(f"{kind} {attribute}={target}: not fitted on {x.shape[0]} {what} ({e})")
                    continue
                vec = scale_to_w_std(sign * fit.direction.reshape(-1), w_samples)
                dirs.append(Direction(kind, attribute, target, vec, {"accuracy": fit.accuracy, "n": x.shape[0]}))
            if code_feats is not None and "codes_wplus" in kinds:
                d = class_gap(code_feats, _one_vs_rest(attribute, target, code_labels[attribute]) > 0.5)
                if d is None:
                    skipped.append(f"codes_wplus {attribute}={target}: the encoded training images need both "
                                   "labels")
                else:
                    dirs.append(Direction("codes_wplus", attribute, target, (sign * d).float(),
                                          {"n": code_feats.shape[0], "unit": "class gap"}))
            if "component" not in kinds:
                continue
            y = _one_vs_rest(attribute, target, sample_labels[attribute])
            if y.min() == y.max():
                skipped.append(f"component {attribute}={target}: the labeller gives every sample the same label")
                continue
            r = torch.tensor([pearson(comp_coord[:, k], y) for k in range(comp_vecs.shape[0])])
            k = int(r.abs().argmax())
            vec = scale_to_w_std(sign * math.copysign(1.0, float(r[k])) * components.directions[k], w_samples)
            dirs.append(Direction("component", attribute, target, vec,
                                  {"component": components.names[k], "correlation": abs(float(r[k]))}))
    return dirs, skipped


def strength_for_success(strengths, rates, goal: float = 0.9) -> float | None:
    """The smallest strength where the success rate reaches `goal`, linearly interpolated between grid
    points (strengths ascending); None when it never does."""
    for i, (s, r) in enumerate(zip(strengths, rates)):
        if r >= goal:
            if i == 0:
                return float(s)
            s0, r0 = strengths[i - 1], rates[i - 1]
            return float(s0 + (goal - r0) / (r - r0) * (s - s0))
    return None


def edit_codes(codes: torch.Tensor, vector: torch.Tensor, strength: float) -> torch.Tensor:
    """W+ codes (B, n, D) moved by strength * vector: a W vector (D,) on every style, a W+ one (n, D) per style."""
    return codes + strength * vector.to(codes).reshape(1, -1, codes.shape[-1])


@torch.no_grad()
def calibrate(generator: nn.Module, judge: nn.Module, dirs: list[Direction], w: torch.Tensor, size, grid,
              goal: float = 0.9, batch_size: int = 32, progress: bool = False, stop_at_goal: bool = False) -> None:
    """Fills each direction's calibration curve and s90 from the images G(w) (the judge decides): w is
    generator samples (N, D), or W+ codes (N, n, D) such as the encoder's codes of real images.
    stop_at_goal: a curve ends at the first grid strength that reaches the goal (the same s90, fewer renders:
    what a CPU run can afford); its later points are then absent, not measured."""
    from tqdm import tqdm
    device = next(generator.parameters()).device
    n = generator.n_latent
    codes = w.float().to(device)
    codes = codes if codes.ndim == 3 else codes[:, None].expand(-1, n, -1)
    chunk = max(1, batch_size)
    attributes = sorted({d.attribute for d in dirs})
    base = labels_of_w(generator, judge, w, attributes, size, chunk)
    for d in tqdm(dirs, desc="calibrating strengths", unit="dir", disable=not progress, leave=False):
        lacking = torch.tensor([lab != d.target for lab in base[d.attribute]])
        start = codes[lacking.to(device)]
        if start.shape[0] == 0:
            d.calibration, d.s90 = [1.0], float(grid[0])
            continue
        rates = []
        for s in grid:
            if s == 0:  # unedited, these images lack the target by choice: nothing to render
                rates.append(0.0)
                continue
            moved = edit_codes(start, d.vector, s)
            imgs = torch.cat([render(generator, c, size) for c in moved.split(chunk)]).clamp(-1, 1)
            got = label_strings(judge, imgs, [d.attribute], chunk)[d.attribute]
            rates.append(sum(g == d.target for g in got) / len(got))
            if stop_at_goal and rates[-1] >= goal:
                break
        d.calibration, d.s90 = rates, strength_for_success(grid, rates, goal)


# --------------------------------------------------------------------------------------- the benchmark


@dataclass
class BenchOptions:
    eval: EvalOptions  # methods, steps, batch size, LEC strengths/directions, W samples, seed
    strengths: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0)  # curve points, W standard deviations
    goal: float = 0.9
    sheet_pairs: int = 8  # pairs per method in the sample sheet
    sheet_kind: str = "ifg_samples"
    method_limits: dict = field(default_factory=dict)  # method -> at most this many source images


class _Group:
    """Per-pair values of one (kind, attribute, strength) cell."""

    def __init__(self):
        self.success, self.preserved, self.mse, self.perceptual, self.strength = [], [], [], [], []
        self.files: list[str] = []  # the pair (counterfactual file) of each value, for paired comparisons
        self.features: dict[str, list[torch.Tensor]] = {}  # target -> edit features

    def row(self, real_by_target: dict, seed: int, realism: bool = True, device=None) -> dict:
        """Means over the pairs with their standard errors (`<key>_se`), the per-pair distances under
        "per_pair" (for `paired_rows`; not a table column); with `realism`, FID / KID against the real
        images of each target value (computed on `device`: 1280-d covariances are slow in float64 on a CPU)."""
        n = len(self.success)
        row = {"pairs": n, "strength_used": sum(self.strength) / n}
        for key, vals in (("success", self.success), ("preservation", self.preserved), ("edit_mse", self.mse),
                          ("edit_perceptual", self.perceptual)):
            row[key], row[f"{key}_se"] = mean_and_se([float(v) for v in vals])
        if len(self.files) == n:  # 6 significant digits: the row cache of a full GPU run stays a few MB
            row["per_pair"] = {"file": list(self.files), "edit_mse": [float(f"{v:.6g}") for v in self.mse],
                               "edit_perceptual": [float(f"{v:.6g}") for v in self.perceptual]}
        fids, kids, weights = [], [], []
        for target, feats in (self.features.items() if realism else ()):
            f, real = torch.cat(feats).to(device), real_by_target.get(target)
            if real is None or f.shape[0] < REALISM_MIN or real.shape[0] < REALISM_MIN:
                continue
            real = real.to(device)
            fids.append(metrics.fid_from_features(f, real))
            kids.append(metrics.kid_from_features(f, real, subsets=50, subset_size=1000, seed=seed))
            weights.append(f.shape[0])
        if weights:
            row["edit_fid"] = sum(w * v for w, v in zip(weights, fids)) / sum(weights)
            row["edit_kid"] = sum(w * v for w, v in zip(weights, kids)) / sum(weights)
        return row


def mean_and_se(values: list[float]) -> tuple[float, float | None]:
    """(mean, standard error of the mean: sample standard deviation / sqrt(n); None for n < 2)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def paired_rows(curves: list[dict], a: str = "e4e", b: str = "psp") -> list[dict]:
    """Method a minus method b on the pairs both scored, cell by cell (kind, attribute, strength): the mean
    paired difference of the edit distances to the truth and its standard error, and ("change_*") the same
    for how much each edit moved its distance from the unedited inversion's (perceptual; the part of the
    distance that is reconstruction cancels). Paired, so the spread between avatars (some are far harder to
    edit than others) cancels; `z` = mean / se, |z| > 2 is a
    difference the sample size resolves. Cells without per-pair values (rows of an earlier version) are left out."""
    cell = {(c["method"], c["kind"], c["attribute"], c["strength"]): c for c in curves if c.get("per_pair")}

    def by_file(c, key):  # a cell's per-pair values of `key`, by pair file
        return dict(zip(c["per_pair"]["file"], c["per_pair"][key]))
    rows = []
    for (m, kind, attribute, strength), ca in cell.items():
        cb = cell.get((b, kind, attribute, strength))
        if m != a or cb is None:
            continue
        in_b = set(cb["per_pair"]["file"])
        common = [f for f in ca["per_pair"]["file"] if f in in_b]
        if not common:
            continue
        row = {"kind": kind, "attribute": attribute, "strength": strength, "pairs": len(common)}
        for key in ("edit_perceptual", "edit_mse"):
            va, vb = by_file(ca, key), by_file(cb, key)
            d, se = mean_and_se([va[f] - vb[f] for f in common])
            row[f"{key}_diff"], row[f"{key}_se"] = d, se
            row[f"{key}_z"] = d / se if se else None
        # what the edit itself changed: each method's distance minus its unedited (strength 0) distance on the
        # same pair, e4e's change minus pSp's (the reconstruction gap between the two cancels)
        za, zb = cell.get((a, kind, attribute, "0.0")), cell.get((b, kind, attribute, "0.0"))
        if strength != "0.0" and za is not None and zb is not None:
            va, vb = by_file(ca, "edit_perceptual"), by_file(cb, "edit_perceptual")
            a0, b0 = by_file(za, "edit_perceptual"), by_file(zb, "edit_perceptual")
            ch = [(va[f] - a0[f]) - (vb[f] - b0[f]) for f in common if f in a0 and f in b0]
            if ch:
                d, se = mean_and_se(ch)
                row["change_diff"], row["change_se"], row["change_z"] = d, se, (d / se if se else None)
        rows.append(row)
    return rows


def _chunks(fn, x: torch.Tensor, chunk: int) -> torch.Tensor:
    return torch.cat([fn(c) for c in x.split(chunk)])


def benchmark_method(method: str, sources: torch.Tensor, pairs_of: list[list[dict]], truths: dict,
                     truth_labels: dict, dirs: list[Direction], inverters: dict, scorers: Scorers,
                     judge: nn.Module, real_by_attr: dict, opts: BenchOptions, progress: bool = False):
    """One method on its source images. sources (N, 3, H, W); pairs_of[i] the pairs of source i; truths /
    truth_labels: pair file -> counterfactual image (3, H, W) / the judge's labels of it.
    -> (reconstruction row as e4e.evaluate, curve rows, sample sheet images (input, inversion, edit, truth))."""
    from tqdm import tqdm

    from e4e.evaluate import REINVERTER
    eo = opts.eval
    inv = inverters["psp" if method == "psp" else "e4e"]
    w_samples = sample_w(inv.decoder, eo.w_samples, eo.seed)
    lec_dirs = edit_directions(inv.decoder, w_samples, eo.n_directions)
    reencode = inverters[REINVERTER[method]].encode
    by_key = {(d.kind, d.attribute, d.target): d for d in dirs}
    totals, groups, sheet, real = _Totals(), {}, [], []
    bar = tqdm(total=sources.shape[0], desc=f"{method} (pairs)", unit="img", disable=not progress, leave=False)
    for unit in invert_units(method, sources, inverters, scorers, eo):  # optimize / pti need gradients
        with torch.no_grad():
            _score_pairs(unit, sources, pairs_of, truths, truth_labels, by_key, scorers, judge, opts, reencode,
                         lec_dirs, totals, groups, sheet, real)
        bar.update(unit.codes.shape[0])
    bar.close()
    row = summarise(method, totals, torch.cat(real), w_samples, eo.seed)
    curves = []
    for (kind, attribute, label), g in groups.items():
        curves.append({"method": method, "kind": kind, "attribute": attribute, "strength": label,
                       **g.row(real_by_attr.get(attribute, {}), eo.seed, realism=label == S90,
                               device=next(judge.parameters()).device)})
    return row, curves, sheet


def _score_pairs(unit, sources, pairs_of, truths, truth_labels, by_key, scorers, judge, opts, reencode, lec_dirs,
                 totals, groups, sheet, real) -> None:
    """Reconstruction / LEC (e4e.evaluate.score_unit) and every edit of one inverted unit."""
    eo = opts.eval
    device = unit.codes.device
    size = tuple(sources.shape[-2:])
    chunk = max(1, eo.batch_size)
    b = unit.codes.shape[0]
    totals.seconds += unit.seconds
    x = sources[unit.start:unit.start + b].to(device)
    recon = score_unit(unit, x, reencode, lec_dirs, scorers, eo, totals)
    real.append(scorers.features(x).double().cpu())
    # every (pair, kind, strength) edit of this unit, rendered and scored in chunks of the batch size; a
    # strength-0 edit is the reconstruction itself (the same codes, the same render): reused, not rendered
    jobs, moved = [], []  # (pair, kind, strength label, strength, direction); edited codes or None
    for i in range(b):
        for p in pairs_of[unit.start + i]:
            for kind in KINDS:
                d = by_key.get((kind, p["attribute"], p["target"]))
                if d is None:
                    continue
                points = [(str(s), s) for s in opts.strengths] + ([(S90, d.s90)] if d.s90 is not None else [])
                for label, s in points:
                    jobs.append((i, p, kind, label, s, d))
                    moved.append(None if s == 0 else edit_codes(unit.codes[i:i + 1], d.vector, s))
    if not jobs:
        return
    attrs = tuple(next(iter(truth_labels.values())))
    for k in range(0, len(jobs), chunk):
        part = jobs[k:k + chunk]
        todo = [m for m in moved[k:k + chunk] if m is not None]
        rendered = iter(render(unit.generator, torch.cat(todo), size).clamp(-1, 1) if todo else [])
        edited = torch.stack([recon[i] if m is None else next(rendered)
                              for (i, *_), m in zip(part, moved[k:k + chunk])])
        t = torch.stack([truths[p["file"]] for _, p, *_ in part]).to(device)
        got = label_strings(judge, edited, attrs, chunk)
        feats = scorers.features(edited).double().cpu()
        mse = metrics.mse(edited, t).reshape(-1).tolist()
        perc = torch.as_tensor(scorers.perceptual(edited, t)).reshape(-1).tolist()
        for j, (i, p, kind, label, s, d) in enumerate(part):
            g = groups.setdefault((kind, p["attribute"], label), _Group())
            want = truth_labels[p["file"]]
            g.success.append(got[p["attribute"]][j] == p["target"])
            g.preserved.append(all(got[a][j] == want[a] for a in attrs if a != p["attribute"]))
            g.mse.append(mse[j])
            g.perceptual.append(perc[j])
            g.strength.append(s)
            g.files.append(p["file"])
            g.features.setdefault(p["target"], []).append(feats[j:j + 1])
            if kind == opts.sheet_kind and label == S90 and len(sheet) < opts.sheet_pairs * 4:
                sheet += [x[i].cpu(), recon[i].cpu(), edited[j].cpu(), t[j].cpu()]


# ------------------------------------------------------------------------------------- preparation


def load_files(root: Path, files: list[str], size: int, fit: str = "crop") -> tuple[torch.Tensor | None, list[str],
                                                                                       list[str]]:
    """Images root/file at `size` -> ((N, 3, size, size) in [-1, 1] or None, files read, one-line skip reasons)."""
    from e4e.imageio import load_image, to_tensor
    ok, names, skipped = [], [], []
    for f in files:
        try:
            ok.append(load_image(root / f, size, fit=fit))
            names.append(f)
        except E4EError as e:
            skipped.append(f"skipped {e}")
    return (to_tensor(ok) if ok else None), names, skipped


@dataclass
class DirectionOptions:
    samples: int = 10_000  # labelled generator samples (InterFaceGAN's protocol uses 500k on FFHQ)
    codes: int = 2_000  # training images the encoder inverts for "ifg_codes"
    components: int = 10  # SeFa and GANSpace candidates each for "component"
    calib_samples: int = 256  # generator samples per direction for the 90% strength
    calib_grid: tuple[float, ...] = tuple(0.5 * k for k in range(13))  # 0 .. 6 W standard deviations
    goal: float = 0.9
    batch_size: int = 32
    seed: int = 0
    fit: str = "crop"
    kinds: tuple[str, ...] = KINDS  # which directions to fit (fewer kinds: less to label, encode, calibrate)
    stop_at_goal: bool = False  # calibration: stop a direction's curve at the first strength reaching the goal
    # calibrate on: "samples" (generator samples G(w): issue #18's protocol) or "codes" (the encoder's codes
    # of calib_samples training avatars after the first `codes`: the images an edit of a real photo starts from)
    calib_on: str = "samples"


def prepare_directions(data: PairSet, targets: dict[str, list[str]], e4e_inv, judge: nn.Module,
                       labeller: nn.Module | None, opts: DirectionOptions, progress: bool = False):
    """Fits and calibrates every direction. -> (directions, notes: skipped fits and unreadable files)."""
    g = e4e_inv.decoder
    size = (e4e_inv.input_size, e4e_inv.input_size)
    attributes = tuple(targets)
    w = sample_w(g, opts.samples, opts.seed)
    sample_labels = components = None
    if {"ifg_samples", "component"} & set(opts.kinds):
        sample_labels = labels_of_w(g, labeller if labeller is not None else judge, w, attributes, size,
                                    opts.batch_size)
    if opts.calib_on not in CALIB_ON:
        raise E4EError(f"calib_on must be one of {', '.join(CALIB_ON)}, not {opts.calib_on!r}")
    by_codes = {"ifg_codes", "codes_wplus"} & set(opts.kinds)
    train = data.split("train")[:opts.codes] if by_codes else []
    images, names, notes = load_files(data.root, [r["file"] for r in train], e4e_inv.input_size, opts.fit)
    code_feats = code_labels = None

    def encode(images, what):
        from tqdm import tqdm
        device = next(e4e_inv.parameters()).device
        with torch.no_grad():
            return torch.cat([e4e_inv.encode(c.to(device)).double().cpu()
                              for c in tqdm(images.split(max(1, opts.batch_size)), desc=f"encoding {what}",
                                            unit="batch", disable=not progress, leave=False)])
    if images is not None:
        code_feats = encode(images, "training images")
        row_of = {r["file"]: r for r in train}
        code_labels = {a: [row_of[n][a] for n in names] for a in attributes}
    elif by_codes:
        notes.append(f"{', '.join(sorted(by_codes))}: no readable training images")
    if "component" in opts.kinds:
        components = edit_directions(g, w, opts.components)
    dirs, skipped = fit_directions(w, sample_labels, code_feats, code_labels, components, targets, opts.seed,
                                   kinds=opts.kinds)
    if opts.calib_on == "codes":
        rows = data.split("train")[opts.codes:opts.codes + opts.calib_samples]
        calib, _, more = load_files(data.root, [r["file"] for r in rows], e4e_inv.input_size, opts.fit)
        if calib is None:
            raise E4EError(f"{data.root}: no training avatars left after the first {opts.codes} to calibrate on")
        notes += more
        start = encode(calib, "calibration images").float()
    else:
        start = sample_w(g, opts.calib_samples, opts.seed + 1)
    calibrate(g, judge, dirs, start, size, opts.calib_grid, opts.goal, opts.batch_size, progress,
              stop_at_goal=opts.stop_at_goal)
    return dirs, notes + skipped


def save_directions(path, dirs: list[Direction], notes: list[str], info: dict | None = None) -> None:
    """Directions as one safetensors file; their metadata (kind, attribute, info, s90, curve) as JSON in it,
    and `info` (how the file was made; `directions_info` reads it back) when given."""
    import json

    from safetensors.torch import save_file
    path = Path(path)
    tensors = {f"{i}": d.vector.contiguous() for i, d in enumerate(dirs)}
    meta = [{"kind": d.kind, "attribute": d.attribute, "target": d.target, "info": d.info, "s90": d.s90,
             "calibration": d.calibration} for d in dirs]
    from e4e.outputs import atomic_write
    atomic_write(path, lambda tmp: save_file(tensors or {"none": torch.zeros(1)}, str(tmp),
                                             metadata={"directions": json.dumps(meta), "notes": json.dumps(notes),
                                                       **({"info": json.dumps(info)} if info else {})}),
                 mode="path")


def _directions_meta(path) -> dict:
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such directions file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a file that is not one
        raise E4EError(f"{path}: not a directions file (safetensors): {' '.join(str(e).split())}") from None
    if "directions" not in meta:
        raise E4EError(f"{path}: a safetensors file without directions metadata (not from save_directions)")
    return meta


def load_directions(path) -> tuple[list[Direction], list[str]]:
    import json

    from safetensors import safe_open
    _directions_meta(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        dirs = [Direction(m["kind"], m["attribute"], m["target"], f.get_tensor(str(i)), m["info"], m["s90"],
                          m["calibration"]) for i, m in enumerate(json.loads(meta["directions"]))]
    return dirs, json.loads(meta["notes"])


def directions_info(path) -> dict:
    """The `info` save_directions stored ({} when none)."""
    import json
    return json.loads(_directions_meta(path).get("info", "{}"))


def covers(fitted_kinds, fitted_targets: dict, kinds, targets: dict) -> bool:
    """Whether directions fitted for (fitted_kinds, fitted_targets) include every (kind, attribute, target)
    of (kinds, targets). Each direction is fitted and calibrated on its own (fixed seeds, the same samples and
    codes whatever else is fitted), so a superset's directions are the subset's: a run with fewer images
    (fewer targets) or fewer kinds can reuse them."""
    return set(kinds) <= set(fitted_kinds) and all(
        set(values) <= set(fitted_targets.get(attribute, ())) for attribute, values in targets.items())


def select_directions(dirs: list[Direction], notes: list[str], kinds, targets: dict) -> tuple[list[Direction],
                                                                                              list[str]]:
    """The directions (and skip notes: "<kind> <attribute>=<target>: ...") of `kinds` and `targets` only;
    other notes (unreadable files) are kept."""
    import re

    def wanted(kind, attribute, target):
        return kind in kinds and target in targets.get(attribute, ())
    keep = [d for d in dirs if wanted(d.kind, d.attribute, d.target)]
    kept_notes = []
    for n in notes:
        m = re.match(r"(\w+) (\w+)=(\S+):", n)
        if m is None or m.group(1) not in KINDS or wanted(*m.groups()):
            kept_notes.append(n)
    return keep, kept_notes


def _as_w(vector: torch.Tensor) -> torch.Tensor:
    return vector.float().reshape(-1, vector.shape[-1]).mean(0)


def direction_rows(dirs: list[Direction]) -> list[dict]:
    """One row per direction: how well it was fitted, the strength it needs, and its cosine to the others."""
    rows = []
    by = {(d.kind, d.attribute, d.target): d for d in dirs}
    for d in dirs:
        row = {"kind": d.kind, "attribute": d.attribute, "target": d.target, "s90": d.s90,
               "max_success": max(d.calibration) if d.calibration else None,
               "accuracy": d.info.get("accuracy"), "correlation": d.info.get("correlation"),
               "component": d.info.get("component")}
        for other in KINDS:
            o = by.get((other, d.attribute, d.target))
            if other != d.kind and o is not None:
                row[f"cos_{other}"] = float(torch.nn.functional.cosine_similarity(
                    _as_w(d.vector), _as_w(o.vector), dim=0))  # a W+ direction by its mean over styles
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ tables


def mean_over_attributes(curves: list[dict], method: str, kind: str, strength: str = S90) -> dict:
    """The s90 cells of one method and kind, averaged over attributes (each attribute weighs the same)."""
    cells = [c for c in curves if c["method"] == method and c["kind"] == kind and c["strength"] == strength]
    out = {"attributes": len(cells)}
    for k in ("success", "preservation", "edit_mse", "edit_perceptual", "edit_fid", "edit_kid"):
        vals = [c[k] for c in cells if c.get(k) is not None]
        out[k] = sum(vals) / len(vals) if vals else None
    return out


SUMMARY_COLUMNS = [
    ("method", "method", "s"), ("images", "images", "d"), ("attributes", "attributes at s90", "d"),
    ("mse", "recon MSE ↓", ".4f"),
    ("perceptual", "recon perceptual ↓", ".4f"), ("ms_ssim", "recon MS-SSIM ↑", ".4f"),
    ("lec_latent", "LEC latent ↓", ".3f"), ("mahalanobis_w", "Mahalanobis to W ↓", ".2f"),
    ("success", "edit success ↑", ".3f"), ("preservation", "preservation ↑", ".3f"),
    ("edit_mse", "edit MSE vs truth ↓", ".4f"), ("edit_perceptual", "edit perceptual vs truth ↓", ".4f"),
    ("edit_fid", "edit FID ↓", ".2f"), ("edit_kid", "edit KID ×10³ ↓", "kid"),
    ("seconds_per_image", "s / image", ".3g"),
]

CURVE_COLUMNS = [
    ("method", "method", "s"), ("kind", "direction", "s"), ("attribute", "attribute", "s"),
    ("strength", "strength", "s"), ("strength_used", "mean strength", ".2f"), ("pairs", "pairs", "d"),
    ("success", "success ↑", ".3f"), ("preservation", "preservation ↑", ".3f"),
    ("edit_mse", "edit MSE ↓", ".4f"), ("edit_perceptual", "edit perceptual ↓", ".4f"),
    ("edit_fid", "edit FID ↓", ".2f"), ("edit_kid", "edit KID ×10³ ↓", "kid"),
]
# the CSV's extra columns: standard errors of the means (pairs.md leaves them out to stay readable)
CURVE_SE_COLUMNS = [(f"{k}_se", f"{k} s.e.", ".4f") for k in ("success", "preservation", "edit_mse",
                                                                 "edit_perceptual")]

PAIRED_COLUMNS = [
    ("kind", "direction", "s"), ("attribute", "attribute", "s"), ("strength", "strength", "s"),
    ("pairs", "pairs", "d"), ("edit_perceptual_diff", "edit perceptual, e4e − pSp", ".4f"),
    ("edit_perceptual_se", "s.e.", ".4f"), ("edit_perceptual_z", "z", ".1f"),
    ("edit_mse_diff", "edit MSE, e4e − pSp", ".5f"), ("edit_mse_se", "s.e.", ".5f"), ("edit_mse_z", "z", ".1f"),
    ("change_diff", "change from unedited, e4e − pSp", ".4f"), ("change_se", "s.e.", ".4f"),
    ("change_z", "z", ".1f"),
]

DIRECTION_COLUMNS = [
    ("kind", "direction", "s"), ("attribute", "attribute", "s"), ("target", "target", "s"),
    ("s90", "strength for 90%", ".2f"), ("max_success", "best success in calibration", ".3f"),
    ("accuracy", "SVM held-out accuracy", ".3f"), ("correlation", "|r| of component", ".3f"),
    ("component", "component", "s"), ("cos_ifg_samples", "cos to ifg_samples", ".3f"),
    ("cos_ifg_codes", "cos to ifg_codes", ".3f"), ("cos_component", "cos to component", ".3f"),
]


def summary_rows(recon_rows: list[dict], curves: list[dict], kind: str) -> list[dict]:
    return [r | mean_over_attributes(curves, r["method"], kind) for r in recon_rows]


@torch.no_grad()
def reference_curves(sources: torch.Tensor, pairs_of: list[list[dict]], truths: dict, truth_labels: dict,
                     judge: nn.Module, scorers: Scorers, real_by_attr: dict, batch_size: int = 8,
                     seed: int = 0) -> list[dict]:
    """Two reference rows per attribute, scored like an edit: "input (no edit)" (the unedited real image:
    the distortion an edit must remove) and "truth" (the counterfactual itself: the judge's ceiling on
    success and the realism floor)."""
    attrs = None
    groups: dict = {}
    device = next(judge.parameters()).device
    for i, pairs in enumerate(pairs_of):
        if not pairs:
            continue
        x = sources[i:i + 1].to(device)
        for p in pairs:
            truth = truths[p["file"]][None].to(device)
            attrs = tuple(truth_labels[p["file"]])
            both = torch.cat([x, truth])
            got = label_strings(judge, both, attrs, batch_size)
            feats = scorers.features(both).double().cpu()
            others = [a for a in attrs if a != p["attribute"]]
            for j, name in enumerate(("input (no edit)", "truth")):
                g = groups.setdefault((name, p["attribute"]), _Group())
                g.success.append(got[p["attribute"]][j] == p["target"])
                g.preserved.append(all(got[a][j] == truth_labels[p["file"]][a] for a in others))
                g.mse.append(float(metrics.mse(both[j:j + 1], truth)))
                g.perceptual.append(float(torch.as_tensor(scorers.perceptual(both[j:j + 1], truth)).reshape(-1)[0]))
                g.strength.append(0.0)
                g.features.setdefault(p["target"], []).append(feats[j:j + 1])
    return [{"method": name, "kind": "–", "attribute": a, "strength": "–",
             **g.row(real_by_attr.get(a, {}), seed, device=device)} for (name, a), g in groups.items()]


def group_features(features: torch.Tensor, rows: list[dict], attributes) -> dict[str, dict[str, torch.Tensor]]:
    """Real images' features split by attribute value: {attribute: {value: (n, F)}} (the realism references)."""
    out: dict = {}
    for a in attributes:
        for v in sorted({r[a] for r in rows}):
            idx = [i for i, r in enumerate(rows) if r[a] == v]
            out.setdefault(a, {})[v] = features[idx]
    return out
