import pytest
import torch

from conftest import assert_parity, fixture_params, load_npz, need, state_dict_from_manifest
from e4e.nets.stylegan2 import Generator, GeneratorConfig

# Per-check tolerances (relative error, max|a-b|/max|b|), from the errors measured on 1 and 2 CPU threads
# (docs/testing.md): 0 for the grouped path, 9.5e-7 for the shared-weight one; the margin is for other BLAS
# builds.
TOL = {"mapping": 1e-6, "img_wplus": 2e-6, "mean_w": 1e-6, "img_trunc": 2e-6, "img_z": 2e-6, "ungrouped": 5e-6}


@pytest.fixture(scope="module", params=fixture_params("generator"), ids=lambda f: getattr(f, "name", "missing"))
def official(request):
    fx = need(request.param)
    from e4e.checkpoints import generator_from_state
    g = generator_from_state(state_dict_from_manifest(fx.manifest), fx.manifest.name)
    return fx.name, g, load_npz(fx["npz"])


def test_official_mapping_and_mean_w(official):
    name, g, f = official
    with torch.no_grad():
        assert_parity(f"{name}.mapping", g.mapping(f["z"]), f["w"], TOL["mapping"])
        mean_w = g.mapping(f["z_for_mean"]).mean(0, keepdim=True)
    assert_parity(f"{name}.mean_w", mean_w, f["mean_w"].reshape(mean_w.shape), TOL["mean_w"])


def test_official_wplus_synthesis(official):
    name, g, f = official
    with torch.no_grad():
        img, _ = g(f["codes"], input_is_latent=True, randomize_noise=False)
    assert img.shape[-1] == g.size
    assert_parity(f"{name}.img_wplus", img, f["img_wplus"], TOL["img_wplus"])


def test_official_truncation_and_z_input(official):
    name, g, f = official
    with torch.no_grad():
        img, _ = g(f["codes"], input_is_latent=True, randomize_noise=False, truncation=0.7,
                   truncation_latent=f["mean_w"].reshape(1, -1))
        assert_parity(f"{name}.img_trunc", img, f["img_trunc"], TOL["img_trunc"])
        img, _ = g(f["z"], randomize_noise=False)
    assert_parity(f"{name}.img_z", img, f["img_z"], TOL["img_z"])


def test_official_ungrouped_fast_path(official):
    """The shared-weight (ungrouped) fast path computes the same function as the official code."""
    name, g, f = official
    try:
        g.use_grouped_conv(False)
        with torch.no_grad():
            img, _ = g(f["codes"], input_is_latent=True, randomize_noise=False)
    finally:
        g.use_grouped_conv(True)
    assert_parity(f"{name}.ungrouped", img, f["img_wplus"], TOL["ungrouped"])


def small(size=32, **kw):
    return Generator(GeneratorConfig(size=size, style_dim=32, n_mlp=2, channel_max=16, **kw)).eval()


@pytest.mark.parametrize("size", [8, 16, 64, 256, 1024])
def test_every_power_of_two_size(size):
    g = Generator(GeneratorConfig(size=size, style_dim=16, n_mlp=1, channel_max=4)).eval()
    assert g.n_latent == 2 * g.log_size - 2
    with torch.no_grad():
        img, lat = g(torch.randn(1, 16), return_latents=True)
    assert img.shape == (1, 3, size, size) and lat.shape == (1, g.n_latent, 16)


def test_rejects_bad_size():
    with pytest.raises(ValueError):
        GeneratorConfig(size=48)


def test_channel_widths_follow_rosinality():
    cfg = GeneratorConfig(size=1024, channel_multiplier=2)
    assert [cfg.channels(2 ** i) for i in range(2, 11)] == [512, 512, 512, 512, 512, 256, 128, 64, 32]
    cfg = GeneratorConfig(size=256, channel_multiplier=1, channel_max=128)
    assert [cfg.channels(2 ** i) for i in range(2, 9)] == [128, 128, 128, 128, 128, 128, 64]


def test_input_spaces_agree():
    g = small()
    z = torch.randn(2, 32)
    with torch.no_grad():
        a, _ = g(z, randomize_noise=False)
        w = g.mapping(z)
        b, _ = g(w, input_is_latent=True, randomize_noise=False)
        c, _ = g(w.unsqueeze(1).repeat(1, g.n_latent, 1), input_is_latent=True, randomize_noise=False)
    assert torch.equal(a, b) and torch.allclose(b, c)


def test_truncation_one_is_identity_and_zero_gives_mean():
    g = small()
    w = torch.randn(2, 32)
    mean = g.mean_latent(256)
    with torch.no_grad():
        a, _ = g(w, input_is_latent=True, randomize_noise=False)
        b, _ = g(w, input_is_latent=True, randomize_noise=False, truncation=1.0, truncation_latent=mean)
        c, lat = g(w, input_is_latent=True, randomize_noise=False, truncation=0.0, truncation_latent=mean,
                   return_latents=True)
    assert torch.equal(a, b)
    assert torch.allclose(lat, mean.expand(2, -1).unsqueeze(1).expand_as(lat))
    assert torch.allclose(c[0], c[1])


def test_mean_latent_is_seeded():
    g = small()
    assert torch.equal(g.mean_latent(100, seed=3), g.mean_latent(100, seed=3))


def test_style_mixing_uses_each_code_on_its_layers():
    g = small()
    w1, w2 = torch.randn(1, 32), torch.randn(1, 32)
    with torch.no_grad():
        _, lat = g([w1, w2], input_is_latent=True, inject_index=3, return_latents=True)
    assert torch.equal(lat[0, :3], w1.expand(3, -1)) and torch.equal(lat[0, 3:], w2.expand(g.n_latent - 3, -1))


def test_noise_fixed_vs_random():
    g = small()
    for name, buf in g.noises.named_buffers():
        buf.normal_()
    for m in g.modules():
        if m.__class__.__name__ == "NoiseInjection":
            m.weight.data.fill_(0.5)
    w = torch.randn(1, g.n_latent, 32)
    with torch.no_grad():
        a, _ = g(w, input_is_latent=True, randomize_noise=False)
        b, _ = g(w, input_is_latent=True, randomize_noise=False)
        c, _ = g(w, input_is_latent=True, randomize_noise=True)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_state_dict_keys_are_rosinalitys():
    keys = set(small(16).state_dict())
    for k in ["style.1.weight", "style.2.bias", "input.input", "conv1.conv.weight", "conv1.conv.modulation.weight",
              "conv1.noise.weight", "conv1.activate.bias", "to_rgb1.conv.weight", "to_rgb1.bias",
              "convs.0.conv.blur.kernel", "to_rgbs.0.upsample.kernel", "noises.noise_0", "noises.noise_4"]:
        assert k in keys, k


@pytest.mark.parametrize("grouped", [True, False])
def test_channels_last_synthesis_is_the_same_function(grouped):
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(size=32, style_dim=16, n_mlp=1, channel_max=8)).eval().double()
    w = torch.randn(3, g.n_latent, 16, dtype=torch.float64)
    with torch.no_grad():
        ref = g.use_grouped_conv(True).use_channels_last(False).synthesis(w)
        out = g.use_grouped_conv(grouped).use_channels_last(True).synthesis(w)
    assert (out - ref).abs().max() < 1e-9 * ref.abs().max()  # float64: rounding only


def test_configure_sets_every_op_and_checks_the_impl():
    """configure() is the one switch: the form and the op implementation reach every layer; the taps
    form (what torch.compile gets) and random noise in the shared-form epilogue stay the same function."""
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(size=16, style_dim=16, n_mlp=1, channel_max=8)).eval().double()
    w = torch.randn(2, g.n_latent, 16, dtype=torch.float64)
    with torch.no_grad():
        ref = g.synthesis(w)
        g.configure(grouped=False, impl="taps")
        impls = {m.impl for m in g.modules() if hasattr(m, "impl")}
        assert impls == {"taps"} and not any(m.grouped for m in g.modules() if hasattr(m, "grouped"))
        assert (g.synthesis(w) - ref).abs().max() < 1e-9 * ref.abs().max()
        torch.manual_seed(1)
        a = g.synthesis(w, randomize_noise=True)
        torch.manual_seed(1)
        b = g.use_grouped_conv(True).synthesis(w, randomize_noise=True)  # the earlier API still works
        assert (a - b).abs().max() < 1e-9 * b.abs().max()
    with pytest.raises(ValueError, match="impl must be one of"):
        g.configure(impl="cuda")


def test_each_layer_reads_its_own_style():
    """rosinality's W+ indexing, stated independently: conv1 <- 0, to_rgb1 <- 1, then per resolution k:
    up-conv <- 2k+1, conv <- 2k+2, to_rgb <- 2k+3. Every style is distinct, so a shifted index shows."""
    g = small(32)
    codes = torch.randn(2, g.n_latent, 32)
    layers = [g.conv1.conv, g.to_rgb1.conv]
    for k in range(len(g.to_rgbs)):
        layers += [g.convs[2 * k].conv, g.convs[2 * k + 1].conv, g.to_rgbs[k].conv]
    expected = [0, 1] + [i for k in range(len(g.to_rgbs)) for i in (2 * k + 1, 2 * k + 2, 2 * k + 3)]
    seen = {}
    hooks = [m.modulation.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, inp[0]))
             for i, m in enumerate(layers)]
    try:
        with torch.no_grad():
            g.synthesis(codes)
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == len(layers) and max(expected) == g.n_latent - 1  # every layer ran; every style used
    for i, style in enumerate(expected):
        assert torch.equal(seen[i], codes[:, style]), (i, style)
