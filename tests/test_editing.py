import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import missing, official_data_dir
from e4e.editing import (GANSPACE_PRESETS, apply_direction, fit_direction, ganspace_coordinates, ganspace_edit,
                         ganspace_pca, load_direction, load_pca, resolve_edit, save_direction, save_pca,
                         sefa_directions, sweep_direction)
from e4e.errors import E4EError
from e4e.nets.stylegan2 import Generator, GeneratorConfig

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_DATA = official_data_dir()


def official(pattern):
    files = sorted(OFFICIAL_DATA.glob(pattern)) if OFFICIAL_DATA.is_dir() else []
    if not files:
        missing(f"no official {pattern} under {OFFICIAL_DATA} (set E4E_OFFICIAL_DATA)")
    return files


def random_pca(d=32, k=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return {"mean": torch.randn(1, d, generator=g), "comp": q.T[:k, None].float().contiguous(),
            "std": torch.linspace(3, 0.5, k)}


def tiny_generator(size=16):
    return Generator(GeneratorConfig(size=size, style_dim=32, n_mlp=2, channel_max=16)).eval()


# -- InterFaceGAN directions -------------------------------------------------------------------------
def test_official_interfacegan_files_load_and_apply():
    for path in official("interfacegan_directions/*.pt"):
        d = load_direction(path)
        assert d.dtype == torch.float32 and d.shape[0] == 1 and d.shape[-1] == 512
        assert d.ndim == 2 or d.shape[1] == 18, f"{path.name}: {tuple(d.shape)}"
        assert torch.allclose(d.norm(dim=-1), torch.ones(()), atol=1e-5)
        lat = torch.randn(2, 18, 512)
        out = apply_direction(lat, d, 3.0)
        torch.testing.assert_close(out - lat, (3.0 * d).expand(2, 18, 512), rtol=0, atol=1e-5)
        if d.ndim == 3:  # a per-style direction made for 18 styles cannot edit a 14-style latent
            with pytest.raises(E4EError, match="18 styles"):
                apply_direction(torch.randn(1, 14, 512), d, 1.0)
            with pytest.raises(E4EError, match="W\\+"):
                apply_direction(torch.randn(1, 512), d, 1.0)
        else:
            out_w = apply_direction(lat[:, 0], d, -2.0)
            torch.testing.assert_close(out_w, lat[:, 0] - 2.0 * d, rtol=0, atol=1e-6)


def test_direction_shapes_roundtrip_and_errors(tmp_path):
    v = torch.randn(512)
    for shape in [(512,), (1, 512)]:
        save_direction(tmp_path / "a.pt", v.reshape(shape))
        assert load_direction(tmp_path / "a.pt").shape == (1, 512)
    per_style = torch.randn(18, 512)
    np.save(tmp_path / "p.npy", per_style.numpy())
    d = load_direction(tmp_path / "p.npy")
    assert d.shape == (1, 18, 512) and torch.equal(d[0], per_style)
    with pytest.raises(E4EError, match="512-d.*256-d"):
        apply_direction(torch.randn(2, 14, 256), v, 1.0)
    with pytest.raises(E4EError, match="no such"):
        load_direction(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(E4EError):
        load_direction(tmp_path / "junk.pt")


def test_check_direction_takes_every_shape_and_names_the_fix():
    """A per-style direction given as (n, D), as the benchmark's W+ directions are kept, is checked against
    the style count too (it used to pass unchecked), and the hint ends the message."""
    from e4e.editing import check_direction
    check_direction(torch.randn(14, 512), 14, 512)
    check_direction(torch.randn(512), None, 512)
    with pytest.raises(E4EError, match="14 styles but the latents have 12.*: refit"):
        check_direction(torch.randn(14, 512), 12, 512, hint="refit")
    with pytest.raises(E4EError, match="needs W\\+ latents"):
        check_direction(torch.randn(1, 14, 512), None, 512)
    with pytest.raises(E4EError, match="512-d but the latents are 256-d"):
        check_direction(torch.randn(512), 14, 256)


def test_apply_strength_per_sample_styles_and_sweep():
    lat, d = torch.randn(3, 6, 8), torch.randn(1, 8)
    out = apply_direction(lat, d, torch.tensor([0.0, 1.0, -2.0]))
    torch.testing.assert_close(out[0], lat[0])
    torch.testing.assert_close(out[2], lat[2] - 2 * d.expand(6, 8))
    out = apply_direction(lat, d, 5.0, styles=[1, 4])
    changed = (out - lat).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [False, True, False, False, True, False]
    with pytest.raises(E4EError, match="out of range"):
        apply_direction(lat, d, 1.0, styles=[6])
    sw = sweep_direction(lat, d, [-1.0, 0.0, 2.0])
    assert sw.shape == (3, 3, 6, 8)
    torch.testing.assert_close(sw[:, 1], lat)
    torch.testing.assert_close(sw[:, 2] - sw[:, 0], (3 * d).expand(3, 6, 8))


# -- GANSpace -----------------------------------------------------------------------------------------
def test_official_ganspace_files_layout():
    for path in official("ganspace_pca/*_pca.pt"):
        p = load_pca(path)
        k, d = p["std"].shape[0], p["mean"].shape[-1]
        assert p["mean"].shape == (1, d) and p["comp"].shape == (k, 1, d) and (k, d) == (80, 512)
        c = p["comp"][:, 0].double()
        torch.testing.assert_close(c @ c.T, torch.eye(k, dtype=torch.float64), rtol=0, atol=1e-5)
        s = p["std"]
        # GANSpace orders by the PCA's variance but re-measures std on samples: nearly, not exactly, sorted
        assert (s > 0).all() and s.argmax() == 0 and (s[1:] <= s[:-1] * 1.05).all()
        for preset in GANSPACE_PRESETS.get(path.name.split("_")[0], {}).values():
            assert preset[0] < k


def pcas():
    out = [("random", random_pca())]
    if OFFICIAL_DATA.is_dir():
        out += [(f.name, load_pca(f)) for f in sorted(OFFICIAL_DATA.glob("ganspace_pca/*_pca.pt"))]
    return out


@pytest.mark.parametrize("name,pca", pcas(), ids=[n for n, _ in pcas()])
def test_ganspace_edit_algebra(name, pca):
    d = pca["mean"].shape[-1]
    n, pc, start, end = 8, 3, 2, 5
    lat = pca["mean"] + torch.randn(4, n, d)
    # the layout's formula written out literally: coordinate read on style 0, same delta on start..end-1
    for strength in (-4.0, 0.5, 7.0):
        c0 = ((lat[:, 0] - pca["mean"]) @ pca["comp"][pc, 0]) / pca["std"][pc]
        delta = (strength - c0)[:, None] * pca["comp"][pc, 0] * pca["std"][pc]
        want = lat.clone()
        want[:, start:end] += delta[:, None]
        torch.testing.assert_close(ganspace_edit(lat, pca, (pc, start, end, strength)), want, rtol=0, atol=1e-5)
    # strength equal to the current coordinate (of style 0) is a no-op
    c = ganspace_coordinates(lat[:1], pca, pc)
    torch.testing.assert_close(ganspace_edit(lat[:1], pca, (pc, 0, n, float(c[0, 0]))), lat[:1], rtol=0, atol=1e-5)
    # a W latent broadcast to every style: the edited styles end exactly at `strength`, the rest unchanged
    w = lat[:, :1].expand(-1, n, -1).contiguous()
    out = ganspace_edit(w, pca, (pc, start, end, 2.5))
    coords = ganspace_coordinates(out, pca, pc)
    torch.testing.assert_close(coords[:, start:end], torch.full((4, end - start), 2.5), rtol=0, atol=1e-4)
    torch.testing.assert_close(out[:, :start], w[:, :start], rtol=0, atol=0)
    torch.testing.assert_close(out[:, end:], w[:, end:], rtol=0, atol=0)
    # other components' coordinates do not move (components are orthonormal)
    torch.testing.assert_close(ganspace_coordinates(out, pca, pc + 1), ganspace_coordinates(w, pca, pc + 1),
                               rtol=0, atol=1e-3)
    # per_style reads every edited style's own coordinate, so general W+ also ends at `strength`
    out = ganspace_edit(lat, pca, (pc, start, end, -1.5), per_style=True)
    torch.testing.assert_close(ganspace_coordinates(out, pca, pc)[:, start:end], torch.full((4, end - start), -1.5),
                               rtol=0, atol=1e-4)


def test_ganspace_edit_errors_and_specs():
    pca = random_pca()
    lat = torch.randn(1, 6, 32)
    with pytest.raises(E4EError, match="out of range"):
        ganspace_edit(lat, pca, (0, 4, 8, 1.0))
    with pytest.raises(E4EError, match="component 8"):
        ganspace_edit(lat, pca, (8, 0, 2, 1.0))
    with pytest.raises(E4EError, match="32-d but the latents are 16-d"):
        ganspace_edit(torch.randn(1, 6, 16), pca, (0, 0, 2, 1.0))
    assert resolve_edit("smile") == (46, 4, 5, -20.0)
    assert resolve_edit("smile=5") == (46, 4, 5, 5.0)
    assert resolve_edit("3,0,5,-2.5") == (3, 0, 5, -2.5)
    with pytest.raises(E4EError, match="pc,start,end,strength"):
        resolve_edit("frown")
    # a list of edits composes them
    both = ganspace_edit(lat, pca, [(0, 0, 6, 1.0), (1, 0, 6, -1.0)], per_style=True)
    assert torch.allclose(ganspace_coordinates(both, pca, 0), torch.ones(1, 6), atol=1e-4)
    assert torch.allclose(ganspace_coordinates(both, pca, 1), -torch.ones(1, 6), atol=1e-4)


def test_pca_recovers_planted_direction(tmp_path):
    g = torch.Generator().manual_seed(1)
    d, n = 24, 4000
    u = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    mean = torch.randn(d, generator=g)
    x = mean + 0.3 * torch.randn(n, d, generator=g) + 4.0 * torch.randn(n, 1, generator=g) * u
    p = ganspace_pca(x, n_components=5)
    assert p["mean"].shape == (1, d) and p["comp"].shape == (5, 1, d) and p["std"].shape == (5,)
    assert abs(float(p["comp"][0, 0] @ u)) > 0.999
    assert abs(float(p["std"][0]) - (4.0 ** 2 + 0.3 ** 2) ** 0.5) < 0.2
    assert (p["std"][1:] <= p["std"][:-1]).all() and abs(float(p["std"][1]) - 0.3) < 0.05
    c = p["comp"][:, 0]
    torch.testing.assert_close(c @ c.T, torch.eye(5), rtol=0, atol=1e-5)
    torch.testing.assert_close(p["mean"][0], mean, rtol=0, atol=0.25)
    save_pca(tmp_path / "p.pt", p)
    q = load_pca(tmp_path / "p.pt")
    assert all(torch.equal(p[k], q[k]) for k in p)


def test_ganspace_pca_from_generator_is_seeded():
    gen = tiny_generator()
    a = ganspace_pca(gen, n_components=4, n_samples=600, seed=3, batch=256)
    b = ganspace_pca(gen, n_components=4, n_samples=600, seed=3, batch=256)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        w = gen.mapping(torch.randn(600, 32, generator=torch.Generator().manual_seed(3)))
    # the same samples, so the same moments: only batching differs
    torch.testing.assert_close(a["mean"], w.mean(0, keepdim=True), rtol=0, atol=1e-4)


# -- SeFa ---------------------------------------------------------------------------------------------
def stacked_modulations(gen, styles=None, to_rgb=False):
    """Independent re-derivation: modulation weights by parameter name, style index from rosinality's order."""
    rows = []
    for name, p in gen.named_parameters():
        m = re.fullmatch(r"(conv1|convs\.(\d+)|to_rgb1|to_rgbs\.(\d+))\.conv\.modulation\.weight", name)
        if not m or (not to_rgb and "rgb" in name):
            continue
        style = {"conv1": 0, "to_rgb1": 1}.get(m.group(1))
        style = style if style is not None else int(m.group(2)) + 1 if m.group(2) else 2 * int(m.group(3)) + 3
        if styles is None or style in styles:
            rows.append(p.detach().double())
    a = torch.cat(rows)
    return a / a.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("layers,to_rgb", [(None, False), ([2, 3, 4], False), ([1, 3, 5], True)])
def test_sefa_matches_svd(layers, to_rgb):
    gen = tiny_generator()
    res = sefa_directions(gen, layers=layers, include_to_rgb=to_rgb)
    d = gen.style_dim
    assert res.directions.shape == (d, d) and res.eigenvalues.shape == (d,)
    torch.testing.assert_close(res.directions.double() @ res.directions.double().T,
                               torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-5)
    assert (res.eigenvalues[1:] <= res.eigenvalues[:-1] + 1e-5).all()
    expected_styles = list(range(gen.num_layers)) if layers is None else layers
    assert res.styles == expected_styles
    _, s, vh = torch.linalg.svd(stacked_modulations(gen, None if layers is None else set(layers), to_rgb))
    assert abs(float(res.directions[0].double() @ vh[0])) > 1 - 1e-6
    torch.testing.assert_close(res.eigenvalues[:3].double(), s[:3] ** 2, rtol=1e-5, atol=0)


def test_sefa_scale_and_edit():
    gen = tiny_generator()
    raw = sefa_directions(gen, normalize=False, n_directions=2)
    a = torch.cat([m.weight.detach().double() for m in (gen.conv1.conv.modulation,
                                                        *(c.conv.modulation for c in gen.convs))])
    _, s, vh = torch.linalg.svd(a)
    assert raw.directions.shape == (2, 32) and abs(float(raw.directions[0].double() @ vh[0])) > 1 - 1e-6
    scale = gen.conv1.conv.modulation.scale  # equalised lr rescales eigenvalues, not eigenvectors
    torch.testing.assert_close(raw.eigenvalues[0].double(), s[0] ** 2 * scale ** 2, rtol=1e-5, atol=0)
    res = sefa_directions(gen, layers=[2, 3])
    lat = torch.randn(2, gen.n_latent, 32)
    out = apply_direction(lat, res.directions[0], 4.0, styles=res.styles)
    assert ((out - lat).abs().amax(dim=(0, 2)) > 0).nonzero().flatten().tolist() == [2, 3]
    with pytest.raises(E4EError, match="to_rgb"):
        sefa_directions(gen, layers=[gen.n_latent - 1])
    with pytest.raises(E4EError, match="out of range"):
        sefa_directions(gen, layers=[gen.n_latent])


# -- fitting ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["svm", "logistic"])
def test_fit_recovers_planted_direction(method):
    g = torch.Generator().manual_seed(2)
    d, n = 64, 1000
    u = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    x = 0.8 * torch.randn(n, d, generator=g) + 1.5
    score = (x - 1.5) @ u + 0.05 * torch.randn(n, generator=g)
    labels = (score > 0.2).long()
    res = fit_direction(x, labels, method=method, seed=0, steps=200)
    cos = float(res.direction[0] @ u)
    assert res.direction.shape == (1, d) and abs(float(res.direction.norm()) - 1) < 1e-5
    assert cos > 0.95, cos
    assert res.accuracy > 0.9 and res.n_val == int(0.3 * n) and res.n_train == n - res.n_val
    # W+: the same signal on every style, fitted on the style mean and on one chosen style
    wplus = x[:, None].repeat(1, 4, 1) + 0.01 * torch.randn(n, 4, d, generator=g)
    for style in (None, 2):
        r = fit_direction(wplus, labels.bool(), method=method, style=style, steps=200)
        assert float(r.direction[0] @ u) > 0.95
    again = fit_direction(x, labels, method=method, seed=0, steps=200)
    assert torch.equal(again.direction, res.direction)


def test_class_gap_is_the_per_style_mean_difference():
    """method="class_gap" on W+ latents: the training split's class-mean difference style by style, (1, n, D),
    not normalised; an attribute planted in one style only shows in that style, where the style average
    keeps a quarter of it; the held-out accuracy is that of the midpoint threshold on the projection."""
    g = torch.Generator().manual_seed(3)
    n, styles, d = 800, 4, 16
    labels = torch.rand(n, generator=g) < 0.4
    x = torch.randn(n, styles, d, generator=g)
    x[:, 2, 5] += 3.0 * labels  # the attribute lives in style 2 only
    res = fit_direction(x, labels, method="class_gap", seed=1)
    assert res.direction.shape == (1, styles, d) and res.n_val == int(0.3 * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    train = perm[res.n_val:]
    xt, yt = x[train].double(), labels[train]
    torch.testing.assert_close(res.direction[0].double(), xt[yt].mean(0) - xt[~yt].mean(0), rtol=1e-5, atol=1e-6)
    assert float(res.direction[0, 2, 5]) == pytest.approx(3.0, abs=0.3)
    assert float(res.direction[0, [0, 1, 3]].abs().max()) < 0.4
    assert res.accuracy > 0.9 and res.baseline == pytest.approx(float((~labels[perm[:res.n_val]]).double().mean()))
    flat = fit_direction(x, labels, method="class_gap", style=2, seed=1)  # one style: a W direction
    assert flat.direction.shape == (1, d)
    torch.testing.assert_close(flat.direction[0], res.direction[0, 2])


def test_fit_errors():
    x = torch.randn(20, 8)
    with pytest.raises(E4EError, match="binary"):
        fit_direction(x, torch.arange(20))
    with pytest.raises(E4EError, match="labels for"):
        fit_direction(x, torch.ones(19))
    with pytest.raises(E4EError, match="both labels"):
        fit_direction(x, torch.ones(20))
    with pytest.raises(E4EError, match="unknown fit method"):
        fit_direction(x, torch.arange(20) % 2, method="tree")


def test_presets_are_refused_for_another_generator():
    assert resolve_edit("smile", n_styles=18) == (46, 4, 5, -20.0)
    with pytest.raises(E4EError, match="'smile' was found on the ffhq generator .18 styles.*10 styles"):
        resolve_edit("smile", n_styles=10)
    assert resolve_edit("3,0,5,-2.5", n_styles=10) == (3, 0, 5, -2.5)  # explicit edits are the user's call
