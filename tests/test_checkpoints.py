import pytest
import torch

from e4e.checkpoints import (infer_generator_config, load_native, load_rosinality, save_native,
                             save_rosinality)
from e4e.errors import E4EError
from e4e.nets.stylegan2 import Generator, GeneratorConfig


def tiny(**kw):
    cfg = dict(size=16, style_dim=32, n_mlp=2, channel_max=16)
    cfg.update(kw)
    return Generator(GeneratorConfig(**cfg)).eval()


# (config, the layout it must be read back as: size, style_dim, n_mlp, width at 4, 8, ... px, and the
# channel_multiplier where the widths identify it; None where every width is capped and any would do)
LAYOUTS = [
    (dict(), (16, 32, 2, [16, 16, 16], None)),
    (dict(size=64, n_mlp=8, channel_multiplier=1, channel_max=8), (64, 32, 8, [8] * 5, None)),
    (dict(size=128, channel_multiplier=2, channel_max=512, style_dim=8, n_mlp=1),
     (128, 8, 1, [512, 512, 512, 512, 512, 256], 2)),
    (dict(size=128, channel_multiplier=1, channel_max=512, style_dim=8, n_mlp=1),
     (128, 8, 1, [512, 512, 512, 512, 256, 128], 1)),
]


@pytest.mark.parametrize("cfg,layout", LAYOUTS)
def test_infer_config_from_keys(cfg, layout):
    size, style_dim, n_mlp, widths, multiplier = layout
    g = tiny(**cfg)
    got = infer_generator_config(g.state_dict())
    assert (got.size, got.style_dim, got.n_mlp) == (size, style_dim, n_mlp)
    assert [got.channels(2 ** i) for i in range(2, got.log_size + 1)] == widths
    if multiplier is not None:
        assert got.channel_multiplier == multiplier
    g2 = Generator(got)
    g2.load_state_dict(g.state_dict(), strict=True)


def test_rosinality_round_trip(tmp_path):
    g = tiny()
    avg = torch.randn(32)
    save_rosinality(tmp_path / "g.pt", g, latent_avg=avg)
    g2, avg2 = load_rosinality(tmp_path / "g.pt")
    assert torch.equal(avg2, avg[None])
    for (k, a), (_, b) in zip(g.state_dict().items(), g2.state_dict().items()):
        assert torch.equal(a, b), k


def test_checkpoint_without_latent_avg(tmp_path):
    torch.save({"g_ema": tiny().state_dict()}, tmp_path / "g.pt")
    _, avg = load_rosinality(tmp_path / "g.pt")
    assert avg is None


def test_native_round_trip_is_bit_exact(tmp_path):
    g = tiny()
    save_native(tmp_path / "m.safetensors", {"generator": g.state_dict()}, {"generator": g.cfg.__dict__},
                tensors={"latent_avg": torch.ones(1, 32)}, info={"note": "x"})
    parts, configs, extra, info = load_native(tmp_path / "m.safetensors")
    assert configs["generator"] == g.cfg.__dict__ and info == {"note": "x"}
    assert torch.equal(extra["latent_avg"], torch.ones(1, 32))
    for k, v in g.state_dict().items():
        assert torch.equal(parts["generator"][k], v)


def one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


def test_errors_not_a_checkpoint(tmp_path):
    p = tmp_path / "x.pt"
    p.write_text("hello, not a checkpoint")
    with pytest.raises(E4EError) as e:
        load_rosinality(p)
    assert "x.pt" in one_line(e)


def test_errors_missing_and_empty(tmp_path):
    with pytest.raises(E4EError, match="no such file"):
        load_rosinality(tmp_path / "nope.pt")
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(E4EError, match="empty"):
        load_rosinality(tmp_path / "e.pt")


def test_errors_truncated(tmp_path):
    p = tmp_path / "g.pt"
    save_rosinality(p, tiny())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(E4EError) as e:
        load_rosinality(p)
    assert "truncated" in one_line(e) or "corrupt" in one_line(e)


def test_errors_discriminator_only(tmp_path):
    torch.save({"d": {"convs.0.0.weight": torch.zeros(1)}}, tmp_path / "d.pt")
    with pytest.raises(E4EError, match="only a discriminator"):
        load_rosinality(tmp_path / "d.pt")


def test_errors_shape_mismatch_names_key_and_shapes(tmp_path):
    sd = tiny().state_dict()
    sd["conv1.conv.modulation.bias"] = torch.zeros(7)
    torch.save({"g_ema": sd}, tmp_path / "g.pt")
    with pytest.raises(E4EError) as e:
        load_rosinality(tmp_path / "g.pt")
    msg = one_line(e)
    assert "conv1.conv.modulation.bias" in msg and "(7,)" in msg and "(16,)" in msg


def test_errors_unexpected_keys(tmp_path):
    sd = tiny().state_dict()
    sd["extra.weight"] = torch.zeros(1)
    torch.save({"g_ema": sd}, tmp_path / "g.pt")
    with pytest.raises(E4EError, match="unexpected key"):
        load_rosinality(tmp_path / "g.pt")


def test_refuses_arbitrary_pickled_objects(tmp_path):
    import argparse
    p = tmp_path / "obj.pt"
    torch.save({"g_ema": {"x": torch.zeros(1)}, "opts": argparse.Namespace(a=1)}, p)
    with pytest.raises(E4EError, match="refusing"):
        load_rosinality(p)


def test_strict_state_dict_check_names_the_first_problem_in_one_line():
    """e4e.checkpoints.strict: the one check every weight loader uses (formats here, loss networks in nets/,
    --encoder_init): first a non-tensor, then a shape, then missing and unexpected keys; optional keys
    (batch-norm step counters) may be absent and keep the module's values."""
    from torch import nn

    from e4e.checkpoints.strict import load_state_dict_checked, mismatch
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    own = net.state_dict()
    assert mismatch(own, dict(own)) is None
    assert mismatch(own, {**own, "0.weight": 1.0}) == "'0.weight' is not a tensor (float)"
    assert mismatch(own, {**own, "0.weight": torch.zeros(4, 3, 1, 1)}) == (
        "shape mismatch at '0.weight': file (4, 3, 1, 1), model (4, 3, 3, 3)")
    partial = {k: v for k, v in own.items() if k != "0.bias"}
    assert mismatch(own, {**partial, "x": torch.zeros(1)}) == (
        "1 missing key(s) (first: 0.bias); 1 unexpected key(s) (first: x)")
    no_counter = {k: v for k, v in own.items() if not k.endswith("num_batches_tracked")}
    assert mismatch(own, no_counter).startswith("1 missing key(s) (first: 1.num_batches_tracked)")
    assert mismatch(own, no_counter, optional=("num_batches_tracked",)) is None
    new = {k: torch.full_like(v, 2) if v.is_floating_point() else v for k, v in no_counter.items()}
    load_state_dict_checked(net, new, "f.pth", optional=("num_batches_tracked",))
    assert torch.equal(net[0].weight, torch.full_like(net[0].weight, 2))
    with pytest.raises(E4EError, match=r"^f.pth: 1 missing key\(s\) \(first: 0.bias\)$"):
        load_state_dict_checked(net, partial, "f.pth")
