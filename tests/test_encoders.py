
import pytest
import torch

from conftest import assert_parity, fixture_params, load_npz, manifest, need, state_dict_from_manifest
from e4e.errors import E4EError
from e4e.nets.encoders import INFERENCE, Encoder4Editing, EncoderConfig, GradualStyleEncoder, build_encoder

# Per-check tolerances (relative error). Measured (docs/testing.md): 0 at the fixtures' thread count, up to
# ~5e-7 when the CPU thread count changes (the fixtures' README); 2e-6 leaves a margin for that.
TOL = {"codes_stage_0": 2e-6, "codes_stage_2": 2e-6, "codes_stage_5": 2e-6, "codes_stage_inference": 2e-6,
       "psp": 2e-6}


def _load_official(fx, kind):
    fx = need(fx)
    state = state_dict_from_manifest(fx.manifest)
    cfg = EncoderConfig.from_state_dict(state, kind=kind)
    model = build_encoder(cfg)
    model.load_state_dict(state, strict=True)
    return fx, model.eval(), load_npz(fx["npz"])


@pytest.mark.parametrize("fx", fixture_params("e4e"))
def test_e4e_matches_official_at_every_stage(fx):
    fx, model, data = _load_official(fx, "e4e")
    shapes = manifest(fx.manifest)["tensors"]
    assert model.n_styles == data["codes_stage_inference"].shape[1]
    assert model.style_dim == shapes["styles.0.linear.weight"]["shape"][0]
    stage_keys = [k for k in data if k.startswith("codes_stage_")]
    assert "codes_stage_inference" in stage_keys and len(stage_keys) > 1
    with torch.no_grad():
        feats = model.features(data["x"])
        for key in stage_keys:
            stage = key.removeprefix("codes_stage_")
            model.set_stage(INFERENCE if stage == INFERENCE else int(stage))
            codes = model(data["x"]) if stage == INFERENCE else model.codes_from_features(feats)
            assert_parity(f"{fx.name}.{key}", codes, data[key], TOL.get(key, TOL["codes_stage_inference"]))


@pytest.mark.parametrize("fx", fixture_params("psp"))
def test_psp_matches_official(fx):
    fx, model, data = _load_official(fx, "psp")
    assert isinstance(model, GradualStyleEncoder)
    with torch.no_grad():
        codes = model(data["x"])
    assert_parity(f"{fx.name}.codes", codes, data["codes"], TOL["psp"])


def test_official_default_layout():
    cfg = EncoderConfig()
    assert (cfg.n_styles, cfg.units) == (18, (3, 4, 14, 3))
    assert EncoderConfig(num_layers=100).units == (3, 13, 30, 3)
    assert EncoderConfig(num_layers=152).units == (3, 8, 36, 3)
    assert EncoderConfig(stylegan_size=256).n_styles == 14


SMALL = dict(stylegan_size=32, style_dim=32, widths=(16, 24, 32, 48), units=(1, 1, 2, 1), input_size=256)


def test_small_e4e_forward_is_progressive():
    model = Encoder4Editing(EncoderConfig(kind="e4e", **SMALL)).eval()
    assert model.n_styles == 8  # uses all three pyramid levels (heads 0-2, 3-6, 7)
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        codes = model(x)
        assert codes.shape == (2, model.n_styles, model.style_dim)
        assert model.stage == INFERENCE
        for stage in range(model.n_styles + 1):
            model.set_stage(stage)
            staged = model(x)
            open_ = min(stage, model.n_styles - 1)
            w0 = staged[:, :1]
            # closed styles carry w0 exactly; open ones add their own offset
            assert torch.equal(staged[:, open_ + 1:], w0.expand_as(staged[:, open_ + 1:]))
            assert all(not torch.equal(staged[:, i], staged[:, 0]) for i in range(1, open_ + 1))
            assert torch.equal(staged[:, :open_ + 1], codes[:, :open_ + 1])
    model.set_stage(0)
    with torch.no_grad():
        codes0 = model(x)
    assert torch.equal(codes0, codes0[:, :1].expand_as(codes0))


def test_small_psp_and_backprop():
    """Codes differ per style, and backprop gives the true gradient: a float64 central difference along a
    random direction matches <dL/dx, v>; every parameter gets a gradient."""
    model = GradualStyleEncoder(EncoderConfig(kind="psp", mode="ir", **SMALL)).double()
    x = torch.randn(2, 3, 256, 256, dtype=torch.float64, requires_grad=True)
    codes = model(x)
    assert codes.shape == (2, 8, 32)
    assert not torch.equal(codes[:, 0], codes[:, 1])
    codes.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())
    v = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    h = 1e-6  # (P)ReLU kinks crossed by the step put the difference ~1e-4 off: 1e-3 still tells a wrong gradient
    with torch.no_grad():
        fd = (model(x + h * v).square().mean() - model(x - h * v).square().mean()) / (2 * h)
    assert float(fd) == pytest.approx(float((x.grad * v).sum()), rel=1e-3)


def test_config_round_trips_through_state_dict():
    for kind, mode in (("e4e", "ir_se"), ("psp", "ir")):
        cfg = EncoderConfig(kind=kind, mode=mode, **SMALL)
        state = build_encoder(cfg).state_dict()
        assert EncoderConfig.from_state_dict(state, kind=kind) == cfg
        assert not any("stage" in k for k in state)


def test_invalid_settings_raise_e4e_error():
    with pytest.raises(E4EError):
        EncoderConfig(num_layers=34)
    with pytest.raises(E4EError):
        EncoderConfig(mode="se")
    with pytest.raises(E4EError):
        EncoderConfig(kind="restyle")
    with pytest.raises(E4EError):
        EncoderConfig(stylegan_size=100)
    model = Encoder4Editing(EncoderConfig(**SMALL))
    for bad in (-1, 1.5, "all", True):
        with pytest.raises(E4EError):
            model.set_stage(bad)
    with pytest.raises(E4EError):
        EncoderConfig.from_state_dict({"foo": torch.zeros(1)})
