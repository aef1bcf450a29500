"""Attribute networks (e4e.nets.attributes), their safetensors files (e4e.checkpoints.attributes) and the
avatar similarity loss built on them (e4e.losses.AttributeSimilarityLoss)."""
import pytest
import torch

from e4e.checkpoints.attributes import load_attribute_net, read_attribute_info, save_attribute_net
from e4e.checkpoints.native import save_native
from e4e.errors import E4EError
from e4e.losses import AttributeSimilarityLoss
from e4e.nets.attributes import ARCHS, AttributeNet, AttributeNetConfig

HEADS = dict(binary=["smile", "hat"], categorical={"hair_colour": ["black", "blonde", "none"]})


def tiny(arch="resnet", **kw) -> AttributeNet:
    torch.manual_seed(0)
    return AttributeNet(AttributeNetConfig(arch=arch, size=16, width=4, **HEADS, **kw)).eval()


def test_config_validates_and_round_trips():
    cfg = AttributeNetConfig(arch="convnet", size=32, **HEADS)
    assert cfg.heads() == ["smile", "hat", "hair_colour"]
    assert cfg.vocab("smile") == ["0", "1"] and cfg.vocab("hair_colour") == ["black", "blonde", "none"]
    assert AttributeNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(E4EError, match="arch 'vgg' unknown"):
        AttributeNetConfig(arch="vgg", **HEADS)
    with pytest.raises(E4EError, match="no heads"):
        AttributeNetConfig()
    with pytest.raises(E4EError, match="'hair_colour' needs >= 2 distinct classes"):
        AttributeNetConfig(binary=["a"], categorical={"hair_colour": ["black"]})
    with pytest.raises(E4EError, match="no head 'beard'"):
        cfg.vocab("beard")
    with pytest.raises(E4EError, match="unknown field"):
        AttributeNetConfig.from_dict({**cfg.to_dict(), "depth": 3})


@pytest.mark.parametrize("arch", ARCHS)
def test_outputs_shapes_ranges_and_any_input_size(arch):
    net = tiny(arch)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    logits = net(x)
    assert {k: tuple(v.shape) for k, v in logits.items()} == {"smile": (3, 2), "hat": (3, 2), "hair_colour": (3, 3)}
    pred = net.predict(x)
    assert all(p.dtype == torch.long and p.shape == (3,) for p in pred.values())
    assert all(int(pred[h].max()) < len(net.cfg.vocab(h)) and int(pred[h].min()) >= 0 for h in pred)
    e = net.embed(x)
    assert e.shape == (3, net.trunk.dim)
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    # a larger input is resized inside (antialiased bilinear) to the network's size
    big = torch.nn.functional.interpolate(x, size=40, mode="bilinear", align_corners=False)
    assert net.embed(big).shape == e.shape
    with pytest.raises(E4EError, match=r"needs \(B, 3, H, W\)"):
        net(torch.zeros(3, 16, 16))


def test_architectures_differ():
    a, b = tiny("resnet"), tiny("convnet")
    assert set(a.state_dict()) != set(b.state_dict())
    assert any(isinstance(m, torch.nn.MaxPool2d) for m in b.modules())
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in a.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip_is_exact(tmp_path, arch):
    net = tiny(arch)
    for p in net.parameters():  # non-trivial batch-norm statistics too
        p.data.normal_()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    path = save_attribute_net(tmp_path / "net.safetensors", net, info={"mean_accuracy": 0.5})
    back = load_attribute_net(path)
    assert back.cfg == net.cfg and not back.training
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    for k, v in net.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    assert all(torch.equal(a, b) for a, b in zip(net(x).values(), back(x).values()))
    assert read_attribute_info(path) == {"mean_accuracy": 0.5}


def test_half_storage_halves_the_file_and_loads_as_fp32(tmp_path):
    net = tiny()
    full = save_attribute_net(tmp_path / "full.safetensors", net)
    half = save_attribute_net(tmp_path / "half.safetensors", net, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    back = load_attribute_net(half)
    assert all(p.dtype == torch.float32 for p in back.parameters())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(back.embed(x), net.embed(x), atol=1e-2)


def test_loading_is_strict_with_one_line_errors(tmp_path):
    net = tiny()
    with pytest.raises(E4EError, match="no such file"):
        load_attribute_net(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(E4EError, match="not a readable safetensors file"):
        load_attribute_net(tmp_path / "junk.safetensors")
    save_native(tmp_path / "other.safetensors", {"encoder": {"w": torch.zeros(1)}}, {"encoder": {}})
    with pytest.raises(E4EError, match="not an attribute network"):
        load_attribute_net(tmp_path / "other.safetensors")
    sd = net.state_dict()
    missing = {k: v for k, v in sd.items() if k != "heads.hat.bias"}
    save_native(tmp_path / "missing.safetensors", {"attributes": missing}, {"attributes": net.cfg.to_dict()})
    with pytest.raises(E4EError, match="1 missing key.*heads.hat.bias"):
        load_attribute_net(tmp_path / "missing.safetensors")
    extra = {**sd, "heads.beard.weight": torch.zeros(2, 32)}
    save_native(tmp_path / "extra.safetensors", {"attributes": extra}, {"attributes": net.cfg.to_dict()})
    with pytest.raises(E4EError, match="unexpected key.*heads.beard.weight"):
        load_attribute_net(tmp_path / "extra.safetensors")
    bad_cfg = {**net.cfg.to_dict(), "arch": "vgg"}
    save_native(tmp_path / "cfg.safetensors", {"attributes": sd}, {"attributes": bad_cfg})
    with pytest.raises(E4EError, match="bad attribute network config"):
        load_attribute_net(tmp_path / "cfg.safetensors")


def test_similarity_loss_is_zero_for_identical_images_and_bounded(tmp_path):
    path = save_attribute_net(tmp_path / "sim.safetensors", tiny())
    loss = AttributeSimilarityLoss.from_weights(path)
    loss.train()  # a trainer's .train() leaves the frozen network in eval mode
    assert not loss.net.training
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    same = loss(x.clone(), x, x)
    assert abs(float(same.loss)) < 1e-5
    assert all(abs(r["diff_target"] - 1) < 1e-5 for r in same.logs)
    y_hat = (torch.rand(4, 3, 32, 32) * 2 - 1).requires_grad_(True)
    other = loss(y_hat, x, x)
    value = float(other.loss.detach())
    assert 1e-4 < value <= 2
    other.loss.backward()
    assert y_hat.grad is not None and float(y_hat.grad.abs().sum()) > 0
    assert all(p.grad is None for p in loss.net.parameters())  # the network stays frozen


def test_similarity_loss_missing_weights_names_the_flag(tmp_path):
    with pytest.raises(E4EError, match="similarity network .*missing: pass --sim-weights PATH"):
        AttributeSimilarityLoss.from_weights(str(tmp_path / "absent.safetensors"))
