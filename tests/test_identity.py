import pytest
import torch

from conftest import assert_parity, fixture_params, load_npz, need, state_dict_from_manifest
from e4e.errors import E4EError
from e4e.nets.identity import Backbone, IdentityNet, crop_face, load_ir_se50

TOL = {"emb": 2e-6, "id_feats": 2e-6}  # measured: docs/testing.md (thread count moves it up to ~5e-7)


@pytest.mark.parametrize("fx", fixture_params("irse50"))
def test_arcface_matches_official(fx):
    fx = need(fx)
    data = load_npz(fx["npz"])
    backbone = Backbone(input_size=112, num_layers=50, drop_ratio=0.6, mode="ir_se")
    backbone.load_state_dict(state_dict_from_manifest(fx.manifest), strict=True)
    net = IdentityNet(backbone)
    net.train()  # the backbone must stay in eval mode regardless
    assert not net.facenet.training
    with torch.no_grad():
        emb = backbone(data["x112"])
        feats = net(data["x256"])
    assert_parity(f"{fx.name}.emb", emb, data["emb"], TOL["emb"])
    assert_parity(f"{fx.name}.id_feats", feats, data["id_feats"], TOL["id_feats"])
    assert torch.allclose(feats.norm(dim=1), torch.ones(len(feats)), atol=1e-5)


def test_crop_is_the_official_box():
    x = torch.arange(256.0).expand(1, 3, 256, 256)
    crop = crop_face(x)
    assert crop.shape == (1, 3, 188, 188)
    assert crop[0, 0, 0, 0] == 32 and crop[0, 0, 0, -1] == 219


@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory):
    torch.manual_seed(1)
    backbone = Backbone().eval()
    path = tmp_path_factory.mktemp("arcface") / "model_ir_se50.pth"
    torch.save(backbone.state_dict(), path)
    return backbone, path


def test_load_ir_se50_loads_frozen_net(saved_weights):
    backbone, path = saved_weights
    net = load_ir_se50(path)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    x = (torch.rand(1, 3, 256, 256) * 2 - 1).requires_grad_()
    feats = net(x)
    with torch.no_grad():
        expected = backbone(torch.nn.functional.adaptive_avg_pool2d(x[:, :, 35:223, 32:220], 112))
    assert torch.equal(feats.detach(), expected)
    feats.sum().backward()  # the ID loss needs gradients w.r.t. the images
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_load_ir_se50_errors(tmp_path, saved_weights):
    with pytest.raises(E4EError, match="not found.*missing.pth.*see --id-weights"):
        load_ir_se50(tmp_path / "missing.pth", hint="see --id-weights")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(E4EError, match="cannot read") as info:
        load_ir_se50(corrupt)
    assert "\n" not in str(info.value)
    wrong = tmp_path / "wrong.pth"
    torch.save({"mlp.0.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(E4EError, match="not an ArcFace IR-SE50"):
        load_ir_se50(wrong)
    truncated = tmp_path / "truncated.pth"
    state = torch.load(saved_weights[1], weights_only=True)
    state.pop("output_layer.3.weight")
    torch.save(state, truncated)
    with pytest.raises(E4EError, match="1 missing key.*output_layer.3.weight"):
        load_ir_se50(truncated)
