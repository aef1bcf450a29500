import pytest
import torch
import torch.nn.functional as F

from e4e.errors import E4EError
from e4e.losses import MocoLoss
from e4e.nets.perceptual import (
    ResNet50Features,
    alexnet_features,
    load_moco_resnet50,
    load_torchvision_features,
    lpips_backbone,
)


def randomised_resnet():
    """A ResNet50Features whose every tensor (BN statistics included) is random, as a stand-in
    for real MoCo weights."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, v in ResNet50Features().state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("weight") and v.dim() == 4:
            sd[k] = torch.randn(v.shape, generator=g) * (2 / v[0].numel()) ** 0.5
        elif k.endswith("weight"):  # BatchNorm scale
            sd[k] = 1 + 0.1 * torch.randn(v.shape, generator=g)
        else:  # BatchNorm shift and running mean
            sd[k] = 0.1 * torch.randn(v.shape, generator=g)
    return sd


def test_resnet50_layout_is_torchvision():
    sd = ResNet50Features().state_dict()
    # torchvision resnet50 has 320 state-dict entries and 25,557,032 parameters, of which the
    # fc (2 entries, 2048*1000 + 1000 parameters) is left out here.
    assert len(sd) == 318
    n_params = sum(p.numel() for p in ResNet50Features().parameters())
    assert n_params == 25_557_032 - 2048 * 1000 - 1000
    shapes = {"conv1.weight": (64, 3, 7, 7), "layer1.0.downsample.0.weight": (256, 64, 1, 1),
              "layer2.0.conv2.weight": (128, 128, 3, 3), "layer3.5.bn3.running_var": (1024,),
              "layer4.2.conv3.weight": (2048, 512, 1, 1), "bn1.num_batches_tracked": ()}
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape


def test_strided_bottleneck_puts_stride_on_the_3x3_conv():
    net = ResNet50Features().eval()
    block = net.layer2[0]
    x = torch.randn(1, 256, 8, 8)

    def bn(h, m):
        return F.batch_norm(h, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    h = F.relu(bn(F.conv2d(x, block.conv1.weight), block.bn1))
    h = F.relu(bn(F.conv2d(h, block.conv2.weight, stride=2, padding=1), block.bn2))
    h = bn(F.conv2d(h, block.conv3.weight), block.bn3)
    skip = bn(F.conv2d(x, block.downsample[0].weight, stride=2), block.downsample[1])
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(h + skip))


def test_loads_official_moco_checkpoint(tmp_path):
    sd = randomised_resnet()
    state = {f"module.encoder_q.{k}": v for k, v in sd.items()}
    state["module.encoder_k.conv1.weight"] = torch.zeros(64, 3, 7, 7)  # the key encoder: unused
    state.update({"module.encoder_q.fc.0.weight": torch.ones(4, 2048), "module.encoder_q.fc.0.bias": torch.ones(4),
                  "module.encoder_q.fc.2.weight": torch.ones(2, 4), "module.encoder_q.fc.2.bias": torch.ones(2),
                  "module.queue": torch.randn(2, 5), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    path = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": state, "optimizer": {"state": {}}}, path)

    net = load_moco_resnet50(path)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, sd[k]), k
    feats = net(torch.randn(2, 3, 64, 64))
    assert feats.shape == (2, 2048)

    # a torchvision-layout resnet50 state dict (fc included) loads to the same network
    plain = dict(sd, **{"fc.weight": torch.ones(1000, 2048), "fc.bias": torch.ones(1000)})
    torch.save(plain, tmp_path / "resnet50.pth")
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(load_moco_resnet50(tmp_path / "resnet50.pth")(x), net(x), rtol=0, atol=0)

    f = MocoLoss(net).features(torch.rand(1, 3, 32, 32))
    assert f.shape == (1, 2048) and float(f.norm()) == pytest.approx(1.0, abs=1e-5)


def test_moco_errors(tmp_path):
    with pytest.raises(E4EError, match=r"missing\.pth\.tar.*--moco-weights"):
        MocoLoss.from_weights(tmp_path / "missing.pth.tar")
    torch.save({"state_dict": {"module.encoder_q.conv1.weight": torch.zeros(64, 3, 7, 7)}}, tmp_path / "bad.tar")
    with pytest.raises(E4EError, match="layout"):
        load_moco_resnet50(tmp_path / "bad.tar")


def test_bare_features_state_dict_loads(tmp_path):
    feats = alexnet_features().state_dict()
    torch.save(feats, tmp_path / "bare.pth")
    net = load_torchvision_features(lpips_backbone("alex"), tmp_path / "bare.pth", "LPIPS (alex)", "pass it")
    for k, v in net.features.state_dict().items():
        assert torch.equal(v, feats[k])
    outs = net(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 192, 384, 256, 256]
