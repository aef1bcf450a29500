"""e4e.benchmark and `e4e eval --pairs`: each metric against an independent expectation on tiny inputs, and the
command end to end on a tiny synthetic avatar-format folder (coloured patches stand for the attributes)."""
import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import e4e.cli.eval_common as eval_common  # build_scorers, shared with e4e eval
import e4e.cli.eval_pairs as cli_pairs
from e4e import benchmark as bm
from e4e import metrics
from e4e.cli import main
from e4e.errors import E4EError
from e4e.evaluate import EditSet, EvalOptions, Scorers, sample_w
from e4e.inverter import Inverter
from e4e.refine import render
from test_evaluate import LookupEncoder, TinyFeatures, cheap_scorers, l1_distance
from tiny_inverters import tiny_inverter



@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is fastest, and on a shared CPU far faster than torch's default."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


COLOURS = {"black": (-0.8, -0.8, -0.8), "blond": (0.8, 0.6, -0.4), "red": (0.7, -0.6, -0.6)}


class _Cfg:
    def __init__(self, vocab):
        self._vocab = vocab

    def vocab(self, name):
        return self._vocab[name]


class StubNet(nn.Module):
    """The e4e.nets.attributes interface (forward / predict / embed / cfg.vocab) around a rule
    images -> {name: LongTensor}; hair_colour indexes cfg.vocab('hair_colour')."""

    def __init__(self, rule):
        super().__init__()
        self.rule = rule
        self.cfg = _Cfg({"hair_colour": ["none", *COLOURS]})
        self.anchor = nn.Parameter(torch.zeros(()))

    def predict(self, x):
        return self.rule(x)

    def forward(self, x):
        return {k: nn.functional.one_hot(v, 2 if k in bm.BINARY else 4).float() for k, v in self.rule(x).items()}

    def embed(self, x):
        return nn.functional.normalize(x.flatten(1), dim=1)


def patch_rule(x):
    """Reads the synthetic avatars: one quadrant per binary attribute (red channel above 0), the centre's
    colour for hair_colour (nearest of the palette)."""
    h = x.shape[-1] // 2
    quads = {"smile": x[:, 0, :h, :h], "glasses": x[:, 0, :h, h:], "facial_hair": x[:, 0, h:, :h],
             "hat": x[:, 0, h:, h:]}
    out = {k: (v.mean(dim=(1, 2)) > 0).long() for k, v in quads.items()}
    c = x[:, :, h - 2:h + 2, h - 2:h + 2].mean(dim=(2, 3))
    palette = torch.tensor(list(COLOURS.values()))
    out["hair_colour"] = 1 + torch.cdist(c, palette).argmin(dim=1)
    return out


def draw(labels: dict, size: int = 32, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    a = rng.uniform(-0.3, 0.3, (size, size, 3))
    h = size // 2
    for name, (ys, xs) in {"smile": (slice(0, h), slice(0, h)), "glasses": (slice(0, h), slice(h, size)),
                           "facial_hair": (slice(h, size), slice(0, h)), "hat": (slice(h, size), slice(h, size))}.items():
        a[ys, xs, 0] = 0.7 if labels[name] == "1" else -0.7
    a[h - 3:h + 3, h - 3:h + 3] = COLOURS[labels["hair_colour"]]
    return Image.fromarray(((a + 1) * 127.5).clip(0, 255).astype(np.uint8))


def make_avatar_folder(root, n_train: int = 8, n_test: int = 3):
    """labels.csv / pairs.csv / images in the `e4e data avatars` layout."""
    rng = np.random.default_rng(0)
    attrs = list(bm.EDIT_ATTRIBUTES)
    labels, pairs = [], []
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        lab = {a: str(int(rng.integers(0, 2))) for a in bm.BINARY}
        lab["hair_colour"] = list(COLOURS)[i % 3]
        f = f"{split}/{i:06d}.png"
        (root / split).mkdir(parents=True, exist_ok=True)
        draw(lab, seed=i).save(root / f)
        labels.append({"file": f, "split": split, "seed": i, **lab, "skin_colour": "light"})
        if split == "test":
            for a in attrs:
                cf = dict(lab)
                cf[a] = ("0" if lab[a] == "1" else "1") if a in bm.BINARY else list(COLOURS)[(i + 1) % 3]
                pf = f"pairs/{a}/{i:06d}.png"
                (root / "pairs" / a).mkdir(parents=True, exist_ok=True)
                draw(cf, seed=i).save(root / pf)
                pairs.append({"file": pf, "source": f, "attribute": a, "target": cf[a], **cf})
    for name, rows in (("labels.csv", labels), ("pairs.csv", pairs)):
        with open(root / name, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return root


# ------------------------------------------------------------------------------------------- units


def test_strength_for_success_monotone():
    s = [0.0, 1.0, 2.0, 3.0]
    assert bm.strength_for_success(s, [0.0, 0.5, 0.8, 1.0], 0.9) == pytest.approx(2.5)
    assert bm.strength_for_success(s, [0.95, 1, 1, 1], 0.9) == 0.0
    assert bm.strength_for_success(s, [0.0, 0.2, 0.4, 0.6], 0.9) is None
    # a logistic success curve sampled on a fine grid: the interpolated crossing is its inverse at 0.9
    grid = [0.05 * k for k in range(121)]
    rates = [1 / (1 + math.exp(-(g - 3.0) * 2)) for g in grid]
    assert bm.strength_for_success(grid, rates, 0.9) == pytest.approx(3.0 + math.log(9) / 2, abs=2e-3)


def test_label_strings_and_one_line_errors():
    x = torch.stack([torch.from_numpy(np.asarray(draw(lab)) / 127.5 - 1).permute(2, 0, 1).float() for lab in (
        {"smile": "1", "glasses": "0", "facial_hair": "1", "hat": "0", "hair_colour": "red"},
        {"smile": "0", "glasses": "1", "facial_hair": "0", "hat": "1", "hair_colour": "blond"})])
    got = bm.label_strings(StubNet(patch_rule), x, bm.EDIT_ATTRIBUTES, batch_size=1)
    assert got == {"smile": ["1", "0"], "glasses": ["0", "1"], "facial_hair": ["1", "0"], "hat": ["0", "1"],
                   "hair_colour": ["red", "blond"]}
    with pytest.raises(E4EError, match="no head 'beard'"):
        bm.label_strings(StubNet(patch_rule), x, ("beard",))


def test_fit_directions_recover_a_planted_attribute():
    torch.manual_seed(0)
    d = 8
    w = torch.randn(600, d).double() * torch.linspace(0.5, 2, d).double()
    u = torch.zeros(d, dtype=torch.float64)
    u[2] = 1.0
    smile = ["1" if v > 0 else "0" for v in (w @ u).tolist()]
    colour = ["red" if v > 0.5 else "black" for v in w[:, 5].tolist()]
    labels = {"smile": smile, "hair_colour": colour}
    cands = EditSet(["sefa0", "ganspace0", "ganspace1"], torch.eye(d)[[0, 2, 5]].float())
    dirs, skipped = bm.fit_directions(w, labels, w[:, None].expand(-1, 3, -1), labels, cands,
                                      {"smile": ["0", "1"], "hair_colour": ["red"]}, steps=100)
    assert skipped == []
    by = {(x.kind, x.attribute, x.target): x for x in dirs}
    assert len(by) == 12
    for kind in bm.KINDS:
        up, down = by[(kind, "smile", "1")].vector.double(), by[(kind, "smile", "0")].vector.double()
        red = by[(kind, "hair_colour", "red")].vector.double()
        torch.testing.assert_close(down, -up)
        if kind == "codes_wplus":  # one vector per style, each the class gap of that style's codes
            assert up.shape == (3, d)
            y = torch.tensor([s == "1" for s in smile])
            torch.testing.assert_close(up[1], w[y].mean(0) - w[~y].mean(0), rtol=1e-6, atol=1e-6)
            up, red = up[0], red[0]
        else:
            assert float(up.norm()) == pytest.approx(float((w @ (up / up.norm())).std()), rel=1e-5)  # one W std
        assert float(up @ u) / float(up.norm()) > 0.95  # toward smile = 1
        assert float(red[5]) / float(red.norm()) > 0.95
    assert by[("component", "smile", "1")].info["component"] == "ganspace0"
    assert by[("component", "hair_colour", "red")].info["component"] == "ganspace1"
    # one kind only: nothing else is needed (no sample labels, no components), the same vectors come out
    only, _ = bm.fit_directions(w, None, w[:, None].expand(-1, 3, -1), labels, None,
                                {"smile": ["0", "1"], "hair_colour": ["red"]}, steps=100, kinds=("ifg_codes",))
    assert [(x.kind, x.attribute, x.target) for x in only] == [k for k in by if k[0] == "ifg_codes"]
    assert all(torch.equal(x.vector, by[(x.kind, x.attribute, x.target)].vector) for x in only)
    with pytest.raises(E4EError, match="unknown direction kind"):
        bm.fit_directions(w, labels, None, None, cands, {"smile": ["1"]}, kinds=("svm",))


def test_directions_file_round_trip_with_info(tmp_path):
    dirs = [bm.Direction("ifg_codes", "smile", "1", torch.randn(8), {"strength": 1.5}, 1.5, [0.2, 0.95])]
    bm.save_directions(tmp_path / "d.safetensors", dirs, ["a note"], {"kind": "ifg_codes", "model_sha256": "ab"})
    back, notes = bm.load_directions(tmp_path / "d.safetensors")
    assert notes == ["a note"] and back[0].info == {"strength": 1.5} and torch.equal(back[0].vector, dirs[0].vector)
    assert bm.directions_info(tmp_path / "d.safetensors") == {"kind": "ifg_codes", "model_sha256": "ab"}
    bm.save_directions(tmp_path / "bare.safetensors", dirs, [])
    assert bm.directions_info(tmp_path / "bare.safetensors") == {}
    with pytest.raises(E4EError, match="no such directions file"):
        bm.directions_info(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(E4EError, match="not a directions file"):
        bm.load_directions(tmp_path / "junk.safetensors")


@pytest.fixture(scope="module")
def exact_setup():
    """An exact inverter (lookup of stored codes) of two sources whose true edit is one step along a known
    direction: edit == truth at that strength."""
    base = tiny_inverter(0)
    g = base.decoder
    torch.manual_seed(1)
    codes = g.mapping(torch.randn(2, g.style_dim)).detach()[:, None].repeat(1, g.n_latent, 1)
    vec = torch.randn(g.style_dim)
    with torch.no_grad():
        sources = render(g, codes, (32, 32)).clamp(-1, 1)
        truths = render(g, bm.edit_codes(codes, vec, 1.5), (32, 32)).clamp(-1, 1)
    exact = Inverter(LookupEncoder(sources, codes), g, latent_avg=None, output_size=None).eval()
    pairs = [[{"file": f"t{i}", "source": f"s{i}", "attribute": "smile", "target": "1"}] for i in range(2)]

    def rule(x):  # smile = 1 iff the image is nearer its truth than its source (known output per image)
        ds = (x[:, None] - sources[None]).pow(2).flatten(2).mean(2).min(1).values
        dt = (x[:, None] - truths[None]).pow(2).flatten(2).mean(2).min(1).values
        zeros = torch.zeros(x.shape[0], dtype=torch.long)
        return {"smile": (dt < ds).long(), "glasses": zeros, "facial_hair": zeros, "hat": zeros,
                "hair_colour": zeros + 1}

    judge = StubNet(rule)
    truth_labels = {f"t{i}": {a: v[i] for a, v in bm.label_strings(judge, truths, bm.EDIT_ATTRIBUTES).items()}
                    for i in range(2)}
    return exact, sources, truths, vec, pairs, judge, truth_labels


def test_edit_success_preservation_and_zero_distortion_at_the_truth(exact_setup, monkeypatch):
    exact, sources, truths, vec, pairs, judge, truth_labels = exact_setup
    monkeypatch.setattr(bm, "REALISM_MIN", 2)
    d = bm.Direction("ifg_samples", "smile", "1", vec, s90=1.5)
    opts = bm.BenchOptions(eval=EvalOptions(methods=("e4e",), batch_size=2, strengths=(1.0,), n_directions=1,
                                            w_samples=200), strengths=(0.0,), sheet_pairs=2)
    feats = TinyFeatures().eval()
    scorers = Scorers(perceptual=l1_distance, features=feats)
    with torch.no_grad():
        real = {"smile": {"1": feats(truths).double()}}
    rendered = []  # codes the edits render: the strength-0 "edits" reuse the reconstruction
    real_render = bm.render
    monkeypatch.setattr(bm, "render", lambda g, c, size: (rendered.append(c.shape[0]), real_render(g, c, size))[1])
    row, curves, sheet = bm.benchmark_method("e4e", sources, pairs, dict(zip(["t0", "t1"], truths)), truth_labels,
                                             [d], {"e4e": exact}, scorers, judge, real, opts)
    cell = {c["strength"]: c for c in curves}
    assert set(cell) == {"0.0", bm.S90}
    at = cell[bm.S90]  # the edit reproduces the truth
    assert at["pairs"] == 2 and at["success"] == 1 and at["preservation"] == 1
    assert at["edit_mse"] < 1e-10 and at["edit_perceptual"] < 1e-6 and at["strength_used"] == 1.5
    assert at["edit_fid"] == pytest.approx(0, abs=1e-6)  # the edits are exactly the reference set
    zero = cell["0.0"]  # no edit: the inversion (= the source), judged 0, as far from the truth as the source
    assert zero["success"] == 0 and zero["preservation"] == 1
    assert zero["edit_mse"] == pytest.approx(float(metrics.mse(sources, truths).mean()), rel=1e-5)
    assert sum(rendered) == 2  # the two s90 edits only
    assert row["mse"] < 1e-10 and row["images"] == 2
    assert len(sheet) == 8  # two pairs x (input, inversion, edit, truth)
    torch.testing.assert_close(sheet[2], truths[0], atol=1e-5, rtol=0)


def test_reference_rows_truth_is_the_ceiling(exact_setup, monkeypatch):
    exact, sources, truths, vec, pairs, judge, truth_labels = exact_setup
    monkeypatch.setattr(bm, "REALISM_MIN", 2)
    feats = TinyFeatures().eval()
    with torch.no_grad():
        real = {"smile": {"1": feats(truths).double()}}
    rows = bm.reference_curves(sources, pairs, dict(zip(["t0", "t1"], truths)), truth_labels, judge,
                               Scorers(perceptual=l1_distance, features=feats), real)
    by = {r["method"]: r for r in rows}
    assert by["truth"]["success"] == 1 and by["truth"]["edit_mse"] == 0 and by["truth"]["edit_fid"] == pytest.approx(0, abs=1e-6)
    assert by["input (no edit)"]["success"] == 0
    assert by["input (no edit)"]["edit_mse"] == pytest.approx(float(metrics.mse(sources, truths).mean()), rel=1e-5)


def test_calibrate_finds_the_strength_a_threshold_judge_needs():
    g = tiny_inverter(0).decoder
    w = sample_w(g, 40, 0)
    vec = torch.randn(g.style_dim)

    def rule(x):  # "smile" = the image is brighter than a threshold: monotone in the strength along vec?
        zeros = torch.zeros(x.shape[0], dtype=torch.long)
        return {"smile": (x.mean(dim=(1, 2, 3)) > thr).long(), "hair_colour": zeros}

    with torch.no_grad():
        size = (32, 32)
        means = [render(g, bm.edit_codes(w.float()[:, None].expand(-1, g.n_latent, -1), vec, s), size)
                 .clamp(-1, 1).mean(dim=(1, 2, 3)) for s in (0.0, 4.0)]
    if (means[1] - means[0]).mean() < 0:
        vec = -vec
        means = means[::-1]
    thr = float(means[0].max())  # no sample smiles at strength 0
    d = bm.Direction("component", "smile", "1", vec)
    grid = [0.0, 1.0, 2.0, 3.0, 4.0]
    bm.calibrate(g, StubNet(rule), [d], w, size, grid, goal=0.9)
    assert d.calibration[0] == 0
    # independent expectation: the same rates recomputed by hand at every grid strength; the curve stops at the
    # first that reaches the goal, and s90 is what the whole curve gives
    with torch.no_grad():
        want = [float((render(g, bm.edit_codes(w.float()[:, None].expand(-1, g.n_latent, -1), vec, s), size)
                       .clamp(-1, 1).mean(dim=(1, 2, 3)) > thr).double().mean()) for s in grid]
    assert d.calibration == pytest.approx(want)
    assert d.s90 == (bm.strength_for_success(grid, want, 0.9))
    # stop_at_goal: the curve ends at the first strength reaching the goal, with the same s90
    goal = max(want)  # a goal this direction reaches
    assert goal > 0
    short = bm.Direction("component", "smile", "1", vec)
    bm.calibrate(g, StubNet(rule), [short], w, size, grid, goal=goal, stop_at_goal=True)
    k = next(i for i, r in enumerate(want) if r >= goal)
    assert short.calibration == pytest.approx(want[:k + 1])
    assert short.s90 == bm.strength_for_success(grid, want, goal)
    # W+ codes (the encoder's codes of real images) calibrate the same way: W codes broadcast to every style
    # are the same images, so the same curve
    plus = bm.Direction("component", "smile", "1", vec)
    bm.calibrate(g, StubNet(rule), [plus], w.float()[:, None].expand(-1, g.n_latent, -1).clone(), size, grid)
    assert plus.calibration == pytest.approx(d.calibration) and plus.s90 == d.s90


def test_read_pairs_errors(tmp_path):
    with pytest.raises(E4EError, match="labels.csv: not found"):
        bm.read_pairs(tmp_path)
    (tmp_path / "labels.csv").write_text("file,split,smile\n")
    with pytest.raises(E4EError, match="missing column"):
        bm.read_pairs(tmp_path)


# --------------------------------------------------------------------------------------------- CLI


def results_doc():
    from pathlib import Path

    from conftest import load_module
    return load_module(Path(__file__).parents[1] / "bench" / "results_doc.py", "results_doc")


def test_results_doc_table_escapes_pipes_and_drops_empty_columns():
    rd = results_doc()
    rows = [{"kind": "ifg_samples", "correlation": "", "component": "", "s90": "5.4"},
            {"kind": "ifg_samples", "correlation": "", "s90": ""}]
    head, rule, *body = rd.table(rows, [("kind", "direction", "s"), ("s90", "s90", ".2f"),
                                        ("correlation", "|r|", ".3f"), ("component", "component", "s")])
    assert head == "| direction | s90 |" and rule == "|:---|---:|"
    assert body == ["| ifg_samples | 5.40 |", "| ifg_samples | – |"]
    cells = rd.table([{"kind": "component", "correlation": "0.5"}], [("kind", "direction", "s"),
                                                                     ("correlation", "|r|", ".3f")])
    assert cells[0] == "| direction | \\|r\\| |" and cells[2] == "| component | 0.500 |"
    # every row has as many cells as the header (a raw pipe in a header would add two)
    assert all(line.replace("\\|", "").count("|") == cells[0].replace("\\|", "").count("|") for line in cells)


def test_results_doc_fixed_strength_table_scores_every_attribute():
    rd = results_doc()

    def c(m, a, s, success, perc, kind="codes_wplus"):
        return {"method": m, "kind": kind, "attribute": a, "strength": s, "success": success, "edit_perceptual": perc}
    curves = [c("e4e", "smile", "0.0", "0.1", "1.5"), c("e4e", "smile", "2.0", "0.9", "1.4"),
              c("psp", "smile", "0.0", "0.2", "1.45"), c("psp", "smile", "2.0", "0.8", "1.6"),
              c("e4e", "hat", "2.0", "0.5", "3.0"), c("e4e", "hat", "s90", "0.9", "9.9"),
              c("e4e", "smile", "2.0", "0.0", "7.7", kind="ifg_samples")]
    head, rule, smile, hat = rd.fixed_strength(curves, "codes_wplus", 2.0, ["smile", "hat"])[4:8]
    assert head.startswith("| attribute | e4e success ↑ | psp success ↑ | e4e edit perceptual ↓")
    assert smile == "| smile | 0.900 | 0.800 | 1.400 | 1.600 | 1.500 | 1.450 |"
    assert hat == "| hat | 0.500 | – | 3.000 | – | – | – |"  # s90 and other kinds are not mixed in
    assert rd.fixed_strength(curves, "codes_wplus", 3.0, ["smile"]) == []  # no such curve strength
    paired = [{"kind": "codes_wplus", "attribute": "smile", "strength": "2.0", "edit_perceptual_diff": "-0.2",
               "edit_perceptual_se": "0.05"},
              {"kind": "codes_wplus", "attribute": "smile", "strength": "s90", "edit_perceptual_diff": "9",
               "edit_perceptual_se": "1"}]
    lines = rd.fixed_strength(curves, "codes_wplus", 2.0, ["smile", "hat"], paired=paired)
    assert lines[4].endswith("| e4e − pSp edit perceptual ± s.e. |") and "standard errors" in lines[2]
    assert lines[6] == "| smile | 0.900 | 0.800 | 1.400 | 1.600 | 1.500 | 1.450 | -0.200 ± 0.050 |"
    assert lines[7].endswith("| – | – |  |")


def test_results_doc_verdicts_follow_the_numbers():
    rd = results_doc()
    summary = {"e4e": {"mse": "0.11", "perceptual": "0.21", "ms_ssim": "0.8", "success": "0.9", "preservation": "0.8",
                       "edit_fid": "10", "edit_kid": "0.001"},
               "psp": {"mse": "0.10", "perceptual": "0.20", "ms_ssim": "0.8", "success": "0.9", "preservation": "0.7",
                       "edit_fid": "12", "edit_kid": "0.002"}}
    s90 = {("e4e", "smile"): {"edit_perceptual": "0.3"}, ("psp", "smile"): {"edit_perceptual": "0.4"},
           ("e4e", "hat"): {"edit_perceptual": "0.3"}, ("psp", "hat"): {"edit_perceptual": "0.35"},
           ("e4e", "glasses"): {"edit_perceptual": "0.5"}, ("psp", "glasses"): {"edit_perceptual": "0.4"}}
    text = "\n".join(rd.claims(summary, s90, ["smile", "hat", "glasses"]))
    assert "**reproduced.** Reconstruction MSE" in text  # 10% and 5% worse: inside the 15% margin
    assert "**reproduced** (2 of 3 attributes)" in text
    assert "**reproduced.** FID of edits" in text
    assert "from the s90 edits of" not in text  # no per-attribute FIDs given
    with_fid = {**s90, ("e4e", "hat"): {"edit_perceptual": "0.3", "edit_fid": "10"},
                ("psp", "hat"): {"edit_perceptual": "0.35", "edit_fid": "12"}}
    assert "from the s90 edits of hat (the attributes" in "\n".join(rd.claims(summary, with_fid, ["smile", "hat"]))
    summary["e4e"]["mse"] = "0.2"  # 100% worse
    summary["e4e"]["edit_kid"] = "0.003"
    text = "\n".join(rd.claims(summary, s90, ["glasses"]))
    assert "more than 15% worse" in text and "**not reproduced** (0 of 1" in text and "mixed" in text
    assert "**not measured (no attribute" in "\n".join(rd.claims(summary, {}, ["glasses"]))


@pytest.fixture(scope="module")
def avatar_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("avatars")
    make_avatar_folder(root / "data")
    e4e = tiny_inverter(0)
    e4e.save(root / "e4e.safetensors")
    psp = tiny_inverter(1)
    psp.decoder.load_state_dict(e4e.decoder.state_dict())  # one generator, two encoders
    psp.save(root / "psp.safetensors")
    (root / "judge.safetensors").write_bytes(b"stub: the tests replace the loader")  # hashed for the cache only
    return root


def stub_eval_nets(monkeypatch):
    """Cheap scorers and rule-based judge/labeller in place of the networks `e4e eval --pairs` loads."""
    monkeypatch.setattr(eval_common, "build_scorers", lambda args, device: cheap_scorers())
    monkeypatch.setattr(cli_pairs, "load_attribute_nets", lambda args, device: (StubNet(patch_rule),
                                                                                StubNet(patch_rule)))


@pytest.mark.slow
def test_cli_pairs_end_to_end_and_resume(avatar_setup, tmp_path, monkeypatch, capsys):
    root = avatar_setup
    stub_eval_nets(monkeypatch)
    out = tmp_path / "bench"
    argv = ["eval", "--pairs", str(root / "data"), "-o", str(out), "--classifier", str(root / "judge.safetensors"),
            "--methods", "e4e,psp,optimize_w,optimize,pti", "--checkpoint", str(root / "e4e.safetensors"),
            "--psp", str(root / "psp.safetensors"), "--optimize-steps", "1", "--pti-steps", "1",
            "--method-limits", "pti=1,optimize_w=1", "--limit", "2", "--strengths=1", "--directions", "1",
            "--w-samples", "100", "--direction-samples", "120", "--calib-samples", "16", "--components", "2",
            "--edit-strengths", "0,2", "--batch-size", "4", "-q"]
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    with open(out / "pairs_summary.csv") as f:
        summary = {r["method"]: r for r in csv.DictReader(f)}
    assert list(summary) == ["e4e", "psp", "optimize_w", "optimize", "pti"]
    assert [summary[m]["images"] for m in summary] == ["2", "2", "1", "2", "1"]
    for r in summary.values():
        assert all(math.isfinite(float(r[k])) for k in ("mse", "perceptual", "ms_ssim", "lec_latent"))
    with open(out / "pairs_curves.csv") as f:
        curves = list(csv.DictReader(f))
    e4e_cells = [c for c in curves if c["method"] == "e4e"]
    assert {c["strength"] for c in e4e_cells} >= {"0.0", "2.0"}
    assert all(0 <= float(c["success"]) <= 1 and float(c["edit_mse"]) >= 0 for c in e4e_cells)
    refs = [c for c in curves if c["method"] == "truth"]
    assert len(refs) == 5 and all(float(c["success"]) == 1 for c in refs)  # the stub reads the truth exactly
    assert all(c["edit_perceptual_se"] != "" for c in e4e_cells if int(c["pairs"]) > 1)
    with open(out / "pairs_paired.csv") as f:  # e4e minus pSp on the same pairs, cell by cell
        paired = list(csv.DictReader(f))
    two = {(c["attribute"], c["strength"]): c for c in curves if c["method"] == "e4e" and c["kind"] == "ifg_samples"}
    for r in paired:
        if r["kind"] == "ifg_samples":
            e = two[(r["attribute"], r["strength"])]
            p = next(c for c in curves if c["method"] == "psp" and c["kind"] == "ifg_samples"
                     and c["attribute"] == r["attribute"] and c["strength"] == r["strength"])
            assert float(r["edit_perceptual_diff"]) == pytest.approx(
                float(e["edit_perceptual"]) - float(p["edit_perceptual"]), rel=1e-4, abs=1e-6)  # same pairs
    assert {r["strength"] for r in paired} >= {"0.0", "2.0"}
    md = (out / "pairs.md").read_text()
    assert "Command: `e4e eval" in md and "--pairs" in md and "## Directions" in md and "| ifg_codes |" in md
    for name in ("pairs_tradeoff.png", "pairs_bars.png", "directions.safetensors"):
        assert (out / name).is_file(), name
    assert len(Image.open(out / "pairs_bars.png").convert("RGB").getcolors(1 << 20)) > 8
    # the docs page is generated from the folder (claims section, figures copied, emoji text kept below)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text("# Results: e4e on a domain of our own\n\nemoji text\n")
    assert results_doc().main([str(out), "--docs", str(docs)]) == 0
    page = (docs / "results.md").read_text()
    assert "### 1. Distortion" in page and "| e4e |" in page and "## Earlier: emoji" in page and "emoji text" in page
    assert (docs / "eval" / "pairs" / "pairs_tradeoff.png").is_file()
    assert (docs / "eval" / "pairs" / "sheet_pti.png").is_file()
    assert (docs / "eval" / "pairs" / "pairs_paired.csv").is_file()
    # rerun: every method and the directions come from the cache, the table is the same
    rc = main(argv[:-1])
    log = capsys.readouterr().out
    assert rc == 0 and "reusing the directions" in log and log.count("reusing the rows") == 5
    with open(out / "pairs_summary.csv") as f:
        assert {r["method"]: r for r in csv.DictReader(f)} == summary


def test_cli_pairs_kinds_attributes_and_calib_grid(avatar_setup, tmp_path, monkeypatch, capsys):
    root = avatar_setup
    stub_eval_nets(monkeypatch)
    out = tmp_path / "bench"
    argv = ["eval", "--pairs", str(root / "data"), "-o", str(out), "--classifier", str(root / "judge.safetensors"),
            "--methods", "e4e", "--checkpoint", str(root / "e4e.safetensors"), "--limit", "2", "--strengths=1",
            "--directions", "1", "--w-samples", "100", "--direction-samples", "120", "--calib-samples", "8",
            "--components", "2", "--edit-strengths", "1", "--batch-size", "4", "--kinds", "ifg_samples",
            "--attributes", "hat,smile", "--calib-grid", "2,0,4", "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    with open(out / "pairs_curves.csv") as f:
        curves = list(csv.DictReader(f))
    assert {c["kind"] for c in curves} == {"ifg_samples", "–"}
    assert {c["attribute"] for c in curves} == {"smile", "hat"}
    with open(out / "pairs_directions.csv") as f:
        drows = list(csv.DictReader(f))
    assert {(r["kind"], r["attribute"]) for r in drows} <= {("ifg_samples", "smile"), ("ifg_samples", "hat")}
    dirs, _ = bm.load_directions(out / "directions.safetensors")
    assert all(1 <= len(d.calibration) <= 3 for d in dirs)
    assert all(d.s90 is None or 0 <= d.s90 <= 4 for d in dirs)
    md = (out / "pairs.md").read_text()
    assert "pairs of smile, hat only" in md and "direction kinds ifg_samples only" in md and "tried at 2,0,4" in md
    # other kinds: the directions are fitted again, not reused
    capsys.readouterr()
    assert main(argv[:-1]) == 0  # the same settings, not quiet: everything is reused
    log = capsys.readouterr().out
    assert "reusing the directions" in log and "reusing the rows" in log
    assert main(argv[:-1] + ["--kinds", "ifg_samples,component"]) == 0  # other kinds: fitted again
    assert "reusing the directions" not in capsys.readouterr().out
    # fewer kinds and fewer images (so fewer targets): the saved superset serves, and gives the same
    # directions and the same table as a fresh fit of just these
    fewer = argv[:-1] + ["--kinds", "component", "--sheet-kind", "component", "--limit", "1"]
    assert main(fewer) == 0
    assert "reusing the directions" in capsys.readouterr().out
    fresh = tmp_path / "fresh"
    assert main([str(fresh) if a == str(out) else a for a in fewer]) == 0
    assert "reusing the directions" not in capsys.readouterr().out
    for name in ("pairs_directions.csv", "pairs_curves.csv"):
        assert (out / name).read_text() == (fresh / name).read_text(), name
    assert {r.split(",")[0] for r in (out / "pairs_directions.csv").read_text().splitlines()[1:]} == {"component"}
    # strengths calibrated on the encoder's codes of training avatars after the fitted ones
    codes = argv + ["--kinds", "codes_wplus", "--sheet-kind", "codes_wplus", "--direction-images", "5",
                    "--calib-samples", "3", "--calib-on", "codes"]
    assert main(codes) == 0, capsys.readouterr().err
    assert "the e4e inversions of 3 training avatars (rows after the first 5) that lacked it" in \
        (out / "pairs.md").read_text()
    assert all(d.kind == "codes_wplus" for d in bm.load_directions(out / "directions.safetensors")[0])


@pytest.mark.parametrize("extra, message", [
    (["--method-limits", "pti=x"], "--method-limits"),
    (["--methods", "e4e,psp"], "needs the pSp inverter"),
    (["extra.png"], "give no IMAGES"),
    (["--kinds", "ifg_samples,bogus"], "--kinds: unknown bogus"),
    (["--kinds", "component"], "--sheet-kind ifg_samples is not among --kinds component"),
    (["--attributes", "nose"], "--attributes: unknown nose"),
    (["--calib-grid", "0,x"], "--calib-grid"),
])
def test_cli_pairs_errors(avatar_setup, tmp_path, capsys, extra, message):
    root = avatar_setup
    front = [e for e in extra if not e.startswith("-") and e.endswith(".png")]
    extra = [e for e in extra if e not in front]
    rc = main(["eval", *front, "--pairs", str(root / "data"), "-o", str(tmp_path / "o"), "--checkpoint",
               str(root / "e4e.safetensors"), "--methods", "e4e,pti", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1


def test_cli_pairs_without_attribute_module(avatar_setup, tmp_path, capsys):
    root = avatar_setup
    rc = main(["eval", "--pairs", str(root / "data"), "-o", str(tmp_path / "o"), "--checkpoint",
               str(root / "e4e.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and ("--classifier" in err or "e4e.checkpoints.attributes" in err)


def test_covers_and_select_directions():
    assert bm.covers(["ifg_codes", "component"], {"hair_colour": ["black", "red"], "smile": ["0", "1"]},
                     ["component"], {"hair_colour": ["red"]})
    assert not bm.covers(["component"], {"smile": ["0", "1"]}, ["component", "ifg_codes"], {"smile": ["1"]})
    assert not bm.covers(["component"], {"smile": ["1"]}, ["component"], {"smile": ["0"]})
    assert not bm.covers(["component"], {"smile": ["0", "1"]}, ["component"], {"hat": ["1"]})
    v = torch.zeros(4)
    dirs = [bm.Direction(k, a, t, v) for k in ("ifg_codes", "component") for a, t in (("smile", "1"), ("hat", "0"))]
    notes = ["ifg_codes hat=1: not fitted", "component hair_colour=pink: same label", "skipped x.png: unreadable"]
    keep, kept = bm.select_directions(dirs, notes, ("component",), {"smile": ["1"], "hair_colour": ["pink"]})
    assert [(d.kind, d.attribute, d.target) for d in keep] == [("component", "smile", "1")]
    assert kept == notes[1:]


def test_mean_and_se_and_paired_rows():
    assert bm.mean_and_se([1.0]) == (1.0, None)
    m, se = bm.mean_and_se([1.0, 2.0, 3.0, 6.0])
    assert m == 3.0 and se == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2)

    def cell(method, files, perc, mse, strength="s90"):
        return {"method": method, "kind": "codes_wplus", "attribute": "smile", "strength": strength,
                "per_pair": {"file": files, "edit_perceptual": perc, "edit_mse": mse}}
    curves = [cell("e4e", ["a", "b", "c"], [1.0, 2.0, 4.0], [0.1, 0.2, 0.3]),
              cell("psp", ["c", "a", "b", "d"], [5.0, 2.0, 2.5, 9.0], [0.3, 0.1, 0.1, 0.9]),
              cell("psp", ["a"], [1.0], [0.1], strength="1.0"),  # no e4e cell at this strength
              {"method": "e4e", "kind": "codes_wplus", "attribute": "hat", "strength": "s90"}]  # an older row
    rows = bm.paired_rows(curves)
    assert len(rows) == 1 and rows[0]["pairs"] == 3  # matched by file, not position; "d" only pSp scored
    diffs = [1.0 - 2.0, 2.0 - 2.5, 4.0 - 5.0]  # a, b, c
    assert rows[0]["edit_perceptual_diff"] == pytest.approx(np.mean(diffs))
    assert rows[0]["edit_perceptual_se"] == pytest.approx(np.std(diffs, ddof=1) / np.sqrt(3))
    assert rows[0]["edit_perceptual_z"] == pytest.approx(rows[0]["edit_perceptual_diff"] / rows[0]["edit_perceptual_se"])
    assert rows[0]["edit_mse_diff"] == pytest.approx(np.mean([0.0, 0.1, 0.0]))
    assert "change_diff" not in rows[0]  # no strength-0 cells to measure the change from
    curves += [cell("e4e", ["b", "a"], [1.5, 0.5], [0, 0], strength="0.0"),
               cell("psp", ["a", "b", "c"], [2.0, 2.0, 4.0], [0, 0, 0], strength="0.0")]
    row = next(r for r in bm.paired_rows(curves) if r["strength"] == "s90")
    changes = [(1.0 - 0.5) - (2.0 - 2.0), (2.0 - 1.5) - (2.5 - 2.0)]  # a, b ("c" has no e4e strength 0)
    assert row["change_diff"] == pytest.approx(np.mean(changes)) and row["change_se"] == pytest.approx(0.25)
    assert "change_diff" not in next(r for r in bm.paired_rows(curves) if r["strength"] == "0.0")


def test_group_row_keeps_per_pair_values_and_standard_errors():
    g = bm._Group()
    for ok, d, f in ((True, 1.0, "a"), (False, 3.0, "b")):
        g.success.append(ok)
        g.preserved.append(True)
        g.mse.append(d / 10)
        g.perceptual.append(d)
        g.strength.append(2.0)
        g.files.append(f)
    row = g.row({}, seed=0, realism=False)
    assert row["success"] == 0.5 and row["success_se"] == pytest.approx(0.5)
    assert row["preservation_se"] == 0.0 and row["edit_perceptual"] == 2.0
    assert row["per_pair"] == {"file": ["a", "b"], "edit_mse": [0.1, 0.3], "edit_perceptual": [1.0, 3.0]}


def test_results_doc_paired_sentence_counts_resolved_differences():
    rd = results_doc()
    paired = {"smile": {"edit_perceptual_diff": "-0.05", "edit_perceptual_se": "0.01", "edit_perceptual_z": "-5"},
              "hat": {"edit_perceptual_diff": "0.02", "edit_perceptual_se": "0.02", "edit_perceptual_z": "1"},
              "glasses": {"edit_perceptual_diff": "0.3", "edit_perceptual_se": "0.1", "edit_perceptual_z": "3"}}
    text = rd.paired_text(paired, ["smile", "glasses", "hat", "facial_hair"])
    assert "smile -0.0500 ± 0.0100" in text and "e4e closer on 1 (smile)" in text
    assert "pSp closer on 1 (glasses)" in text and "the other 1 are within noise" in text
    assert rd.paired_text({}, ["smile"]) == ""
    paired["smile"].update(change_diff="-0.03", change_se="0.01", change_z="-3")
    assert "e4e's edits moved nearer the truth on 1 (smile), pSp's on 0 (none)" in \
        rd.paired_text(paired, ["smile", "hat"])
