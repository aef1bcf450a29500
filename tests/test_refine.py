import pytest
import torch
import torch.nn.functional as F
from torch import nn

from e4e.errors import E4EError
from e4e.inverter import build_inverter
from e4e.nets.encoders import EncoderConfig
from e4e.nets.stylegan2 import Generator, GeneratorConfig
from e4e.refine import optimize, pti, render

FIELDS = {"distortion_before", "distortion_after", "seconds", "steps"}


def tiny_generator(seed=0, size=16):
    torch.manual_seed(seed)
    return Generator(GeneratorConfig(size=size, style_dim=16, n_mlp=2, channel_max=16)).eval()


class TinyPerceptual(nn.Module):
    """A frozen random conv feature distance, per image (B,): stands in for LPIPS."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(123)
        self.conv = nn.Conv2d(3, 8, 3, padding=1).requires_grad_(False)

    def forward(self, x, y):
        fx, fy = (F.normalize(F.leaky_relu(self.conv(t), 0.2), dim=1) for t in (x, y))
        return (fx - fy).pow(2).sum(1).mean(dim=(1, 2))


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def problem(g, batch=2, seed=1, target_size=None):
    """A reachable target (rendered from random codes) and a start some way off it."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w_true = g.mapping(torch.randn(batch, g.style_dim, generator=gen)).unsqueeze(1).repeat(1, g.n_latent, 1)
        start = w_true + 0.5 * torch.randn(w_true.shape, generator=gen)
        target = render(g, w_true, (target_size or g.size,) * 2)
    return target, start


@pytest.mark.parametrize("target_size", [16, 8])
def test_optimize_lowers_distortion_and_leaves_generator_alone(target_size):
    g = tiny_generator()
    before_state = snapshot(g)
    target, start = problem(g, target_size=target_size)
    lp = TinyPerceptual()
    codes, images, report = optimize(g, target, start, steps=30, lr=0.05, lpips_fn=lp)
    assert FIELDS <= report.keys() and report["steps"] == 30 and report["seconds"] > 0
    b, a = report["distortion_before"], report["distortion_after"]
    assert set(a) == {"l2", "perceptual"}
    assert a["l2"] < 0.5 * b["l2"] and a["perceptual"] < b["perceptual"]
    assert codes.shape == start.shape and not codes.requires_grad
    assert images.shape == target.shape
    torch.testing.assert_close(images, render(g, codes, (target_size,) * 2))
    assert a["l2"] == pytest.approx(float(F.mse_loss(images, target)), rel=1e-5)
    assert same(before_state, snapshot(g)) and all(p.grad is None for p in g.parameters())
    assert all(p.requires_grad for p in g.parameters())  # flags as they were
    assert not torch.equal(start, codes)


def test_optimize_l2_only_and_from_an_inverter():
    torch.manual_seed(0)
    enc = EncoderConfig(kind="e4e", stylegan_size=16, style_dim=16, widths=(8, 16, 16, 16), units=(1, 1, 1, 1),
                        input_size=32, mode="ir")
    inv = build_inverter(enc, GeneratorConfig(size=16, style_dim=16, n_mlp=2, channel_max=16),
                         latent_avg=0.1 * torch.randn(1, 16)).eval()
    target, _ = problem(inv.decoder, batch=1)
    with torch.no_grad():
        init = inv.encode(target)  # the encoder's code as the starting point
    codes, images, report = optimize(inv, target, init, steps=25, lr=0.05)
    assert set(report["distortion_after"]) == {"l2"}
    assert report["distortion_after"]["l2"] < report["distortion_before"]["l2"]
    assert images.shape == target.shape


def test_optimize_is_deterministic():
    g = tiny_generator()
    target, start = problem(g)
    r1 = optimize(g, target, start, steps=5, lr=0.05, lpips_fn=TinyPerceptual())
    r2 = optimize(g, target, start, steps=5, lr=0.05, lpips_fn=TinyPerceptual())
    assert torch.equal(r1.codes, r2.codes) and torch.equal(r1.images, r2.images)


def test_pti_tunes_a_copy():
    g = tiny_generator()
    original = snapshot(g)
    target, pivot = problem(g, batch=1, seed=3)
    tuned, images, report = pti(g, target, pivot, steps=25, lr=3e-3, lpips_fn=TinyPerceptual())
    assert FIELDS <= report.keys() and report["steps"] == 25
    b, a = report["distortion_before"], report["distortion_after"]
    assert a["l2"] < 0.7 * b["l2"] and a["perceptual"] < b["perceptual"]
    assert same(original, snapshot(g)) and all(p.grad is None for p in g.parameters())
    assert tuned is not g and not same(original, snapshot(tuned))
    assert all(not p.requires_grad and p.grad is None for p in tuned.parameters())
    with torch.no_grad():
        torch.testing.assert_close(images, render(tuned, pivot, (16, 16)))
    # the pivot's code is unchanged: before == the original generator at the pivot
    with torch.no_grad():
        assert b["l2"] == pytest.approx(float(F.mse_loss(render(g, pivot, (16, 16)), target)), rel=1e-5)


def test_pti_locality_regulariser_is_deterministic_and_keeps_other_codes_closer():
    g = tiny_generator()
    target, pivot = problem(g, batch=1, seed=5)
    mean = g.mean_latent(256)
    kw = dict(steps=8, lr=5e-3, lpips_fn=TinyPerceptual(), mean_latent=mean)
    free = pti(g, target, pivot, **kw)
    reg1 = pti(g, target, pivot, locality=True, locality_l2_weight=10.0, seed=7, **kw)
    reg2 = pti(g, target, pivot, locality=True, locality_l2_weight=10.0, seed=7, **kw)
    assert torch.equal(reg1.images, reg2.images) and same(snapshot(reg1.generator), snapshot(reg2.generator))
    assert reg1.report["distortion_after"]["l2"] < reg1.report["distortion_before"]["l2"]
    # away from the pivot, the regularised generator stays nearer to the original
    with torch.no_grad():
        w = g.mapping(torch.randn(8, 16, generator=torch.Generator().manual_seed(99)))
        w = w.unsqueeze(1).repeat(1, g.n_latent, 1)
        ref = render(g, w, (16, 16))
        drift_free = F.mse_loss(render(free.generator, w, (16, 16)), ref)
        drift_reg = F.mse_loss(render(reg1.generator, w, (16, 16)), ref)
    assert drift_reg < drift_free


def test_pti_early_stop_and_errors():
    g = tiny_generator()
    target, pivot = problem(g, batch=1)
    res = pti(g, target, pivot, steps=10, lpips_fn=TinyPerceptual(), lpips_stop=1e9)
    assert res.report["steps"] == 0 and same(snapshot(g), snapshot(res.generator))
    with pytest.raises(E4EError, match="lpips_stop needs lpips_fn"):
        pti(g, target, pivot, steps=1, lpips_stop=0.07)
    with pytest.raises(E4EError, match="W\\+ codes"):
        optimize(g, target, pivot[:, :3], steps=1)
    with pytest.raises(E4EError, match="target must be images"):
        pti(g, target[0], pivot, steps=1)


def test_pti_result_survives_into_edit(tmp_path, capsys, monkeypatch):
    """`e4e invert --refine pti` keeps each tuned generator; `e4e edit`'s original column is then exactly the
    refined reconstruction, not the plain e4e one."""
    import numpy as np
    from PIL import Image

    import e4e.cli.invert as cli_invert
    from e4e.cli import main
    from tiny_inverters import save_tiny
    # an L1 distance stands in for the perceptual network (which takes a minute per image on a busy CPU)
    monkeypatch.setattr(cli_invert, "refine_loss", lambda args: (lambda x, y: (x - y).abs().mean((1, 2, 3))))
    ckpt = save_tiny(tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(0)
    for name in ("p", "q"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    inv_dir, plain_dir = tmp_path / "inv", tmp_path / "plain"
    args = [str(tmp_path / "p.png"), str(tmp_path / "q.png"), "--checkpoint", str(ckpt), "-q", "--grid", "0"]
    assert main(["invert", *args, "-o", str(inv_dir), "--refine", "pti", "--refine-steps", "3"]) == 0
    assert main(["invert", *args, "-o", str(plain_dir)]) == 0
    from e4e.latents import load_latents
    meta = load_latents(inv_dir / "latents.npz").meta
    assert meta["refine"]["method"] == "pti" and (inv_dir / "pti" / "p.safetensors").is_file()
    for src, out in ((inv_dir, tmp_path / "e1"), (plain_dir, tmp_path / "e2")):
        assert main(["edit", str(src / "latents.npz"), "-o", str(out), "--checkpoint", str(ckpt), "--sefa", "0",
                     "--strength", "1", "-q"]) == 0
    for name in ("p", "q"):
        refined = np.asarray(Image.open(inv_dir / "recon" / f"{name}.png"))
        original = np.asarray(Image.open(tmp_path / "e1" / "original" / f"{name}.png"))
        untuned = np.asarray(Image.open(tmp_path / "e2" / "original" / f"{name}.png"))
        assert np.array_equal(original, refined)
        assert not np.array_equal(original, untuned)
    # the tuned generator is required: a moved latents file without it is one line, not the plain render
    (inv_dir / "pti" / "q.safetensors").unlink()
    capsys.readouterr()
    assert main(["edit", str(inv_dir / "latents.npz"), "-o", str(tmp_path / "e3"), "--checkpoint", str(ckpt),
                 "--sefa", "0", "--strength", "1", "-q"]) == 2
    assert "PTI-tuned generator recorded in the latents is missing" in capsys.readouterr().err
