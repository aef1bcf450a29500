import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import fixture_params, load_npz, need, state_dict_from_manifest
from e4e.errors import E4EError
from e4e.losses import (
    LPIPS,
    IDLoss,
    MocoLoss,
    WPool,
    d_logistic_loss,
    delta_norms,
    delta_regularisation,
    g_nonsaturating_loss,
    r1_penalty,
)

# ------------------------------------------------------------------------------------------------ LPIPS
# Layer specs written out here from torchvision's definitions, independently of e4e.nets.perceptual:
# ("conv", index, c_in, c_out, kernel, stride, padding) | ("relu", index, tapped) | ("pool", k, s)
ALEX = [("conv", 0, 3, 64, 11, 4, 2), ("relu", True), ("pool", 3, 2),
        ("conv", 3, 64, 192, 5, 1, 2), ("relu", True), ("pool", 3, 2),
        ("conv", 6, 192, 384, 3, 1, 1), ("relu", True),
        ("conv", 8, 384, 256, 3, 1, 1), ("relu", True),
        ("conv", 10, 256, 256, 3, 1, 1), ("relu", True)]


def vgg16_spec():
    spec, i, c_in = [], 0, 3
    for block, (c, n) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if block:
            spec.append(("pool", 2, 2))
            i += 1
        for j in range(n):
            spec += [("conv", i, c_in, c, 3, 1, 1), ("relu", j == n - 1)]
            i, c_in = i + 2, c
    return spec


SPECS = {"alex": ALEX, "vgg": vgg16_spec()}
SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


def write_lpips_files(tmp_path, net):
    """Random torchvision-layout backbone (with classifier keys to ignore) and lpips-layout lin file."""
    g = torch.Generator().manual_seed(1)
    backbone, channels = {}, []
    for op in SPECS[net]:
        if op[0] == "conv":
            _, i, c_in, c_out, k, _, _ = op
            backbone[f"features.{i}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) / math.sqrt(c_in * k * k)
            backbone[f"features.{i}.bias"] = 0.1 * torch.randn(c_out, generator=g)
            last = c_out
        elif op[0] == "relu" and op[1]:
            channels.append(last)
    backbone["classifier.1.weight"] = torch.randn(4, 3, generator=g)
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(channels)}
    bpath, lpath = tmp_path / f"{net}_tv.pth", tmp_path / f"{net}.pth"
    torch.save(backbone, bpath)
    torch.save(lins, lpath)
    return bpath, lpath, backbone, lins


def reference_lpips(x, y, backbone, lins, net):
    """The LPIPS v0.1 formula written out directly, per image."""
    def feats(img):
        h, out = (img - SHIFT) / SCALE, []
        for op in SPECS[net]:
            if op[0] == "conv":
                _, i, _, _, _, s, p = op
                h = F.conv2d(h, backbone[f"features.{i}.weight"], backbone[f"features.{i}.bias"], s, p)
            elif op[0] == "relu":
                h = torch.clamp(h, min=0)
                if op[1]:
                    out.append(h)
            else:
                h = F.max_pool2d(h, op[1], op[2])
        return out

    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for k, (a, b) in enumerate(zip(feats(x), feats(y))):
        a, b = a.double(), b.double()
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = lins[f"lin{k}.model.1.weight"].double().view(1, -1, 1, 1)
        total += ((a - b) ** 2 * w).sum(1).mean(dim=(1, 2))
    return total


@pytest.mark.parametrize("net,size", [("alex", 64), ("vgg", 16)])
def test_lpips_matches_formula(tmp_path, net, size):
    bpath, lpath, backbone, lins = write_lpips_files(tmp_path, net)
    lpips = LPIPS(net, backbone_weights=bpath, lin_weights=lpath)
    x = torch.rand(2, 3, size, size) * 2 - 1
    y = torch.rand(2, 3, size, size) * 2 - 1

    assert float(lpips(x, x)) == 0.0
    ref = reference_lpips(x, y, backbone, lins, net)
    assert ref.min() > 0
    torch.testing.assert_close(lpips.distance(x, y).double(), ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(lpips(x, y).double(), ref.mean(), rtol=1e-5, atol=0)


def test_lpips_gradient_reaches_images_not_weights(tmp_path):
    bpath, lpath, *_ = write_lpips_files(tmp_path, "alex")
    lpips = LPIPS("alex", backbone_weights=bpath, lin_weights=lpath)
    lpips.train()
    assert not lpips.training and not lpips.backbone.training
    x = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_()
    lpips(x, torch.zeros(1, 3, 64, 64)).backward()
    assert x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in lpips.parameters())


def test_lpips_missing_files_say_how_to_pass_them(tmp_path):
    bpath, lpath, *_ = write_lpips_files(tmp_path, "alex")
    with pytest.raises(E4EError, match=r"nowhere\.pth.*--lpips-backbone"):
        LPIPS("alex", backbone_weights=tmp_path / "nowhere.pth", lin_weights=lpath)
    with pytest.raises(E4EError, match=r"alex\.pth.*--lpips-weights"):
        LPIPS("alex", backbone_weights=bpath, lin_weights=None)
    with pytest.raises(E4EError, match="vgg16-397923af.pth"):
        LPIPS("vgg", backbone_weights=None, lin_weights=lpath)
    with pytest.raises(E4EError, match="layout"):  # an alexnet file given for vgg
        LPIPS("vgg", backbone_weights=bpath, lin_weights=lpath)


# ------------------------------------------------------------------------------------ similarity losses


class UnitFeatures(nn.Module):
    """Stub feature net: the image's pixels as a unit vector; records the input size it saw."""

    def forward(self, img):
        self.seen = tuple(img.shape[2:])
        return F.normalize(img.flatten(1), dim=1)


def test_id_loss_hand_computed():
    loss_fn = IDLoss(UnitFeatures())
    y_hat = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 1, 2).requires_grad_()
    y = torch.tensor([[0.6, 0.8], [0.0, 1.0]]).view(2, 1, 1, 2)
    x = torch.tensor([[0.0, 1.0], [0.6, 0.8]]).view(2, 1, 1, 2)
    res = loss_fn(y_hat, y, x)
    loss, improvement, logs = res.loss, float(res.improvement), res.logs
    assert res.improvement.ndim == 0 and not res.improvement.requires_grad  # no host sync in the step
    # <y_hat, y> = 0.6, 1.0 -> loss = mean(0.4, 0.0); <y, x> = 0.8, 0.8 -> improvement mean(-0.2, 0.2)
    assert float(loss.detach()) == pytest.approx(0.2)
    assert improvement == pytest.approx(0.0)
    assert logs[0] == pytest.approx({"diff_target": 0.6, "diff_input": 0.0, "diff_views": 0.8})
    assert logs[1] == pytest.approx({"diff_target": 1.0, "diff_input": 0.8, "diff_views": 0.8})
    loss.backward()
    assert y_hat.grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize("fx", fixture_params("irse50"))
def test_id_loss_on_official_arcface_fixture(tmp_path, fx):
    fx = need(fx)
    weights = tmp_path / "model_ir_se50.pth"
    torch.save(state_dict_from_manifest(fx.manifest), weights)
    data = load_npz(fx["npz"])
    x256, emb = data["x256"], data["id_feats"].double()
    res = IDLoss.from_weights(weights)(x256[:1], x256[1:2], x256[:1])
    loss, improvement, logs = res.loss, float(res.improvement), res.logs
    # y_hat = x = image 0, y = image 1: loss = 1 - <e0, e1>, diff_views = <e1, e0>, diff_input = 1
    sim = float(emb[0] @ emb[1])
    assert float(loss) == pytest.approx(1 - sim, abs=1e-5)
    assert improvement == pytest.approx(0.0, abs=1e-5)
    assert logs[0] == pytest.approx({"diff_target": sim, "diff_input": 1.0, "diff_views": sim}, abs=1e-5)


def test_id_loss_missing_weights_say_how_to_pass_them(tmp_path):
    with pytest.raises(E4EError, match=r"model_ir_se50.*--id-weights"):
        IDLoss.from_weights(tmp_path / "model_ir_se50.pth")


def test_moco_loss_resizes_to_224_nearest_and_normalises():
    net = UnitFeatures()
    loss_fn = MocoLoss(nn.Sequential(net))
    y_hat = torch.rand(2, 3, 192, 256)
    y = torch.rand(2, 3, 192, 256)
    loss, improvement, logs = loss_fn(y_hat, y, y)
    assert net.seen == (224, 224)
    expect_hat = F.normalize(F.interpolate(y_hat, size=224, mode="nearest").flatten(1), dim=1)
    expect_y = F.normalize(F.interpolate(y, size=224, mode="nearest").flatten(1), dim=1)
    sims = (expect_hat * expect_y).sum(1)
    assert float(loss) == pytest.approx(float((1 - sims).mean()), rel=1e-6)
    # x == y: improvement is <y_hat, y> - 1
    assert improvement == pytest.approx(float(sims.mean()) - 1, abs=1e-6)
    assert len(logs) == 2


# ----------------------------------------------------------------------------------- delta regulariser


def test_delta_regularisation_hand_computed():
    codes = torch.zeros(2, 4, 2)
    codes[:, 0] = torch.tensor([1.0, 1.0])  # w0, subtracted from every row
    codes[0, 1] = torch.tensor([4.0, 5.0])  # delta (3, 4): L2 5, L1 7
    codes[1, 1] = torch.tensor([1.0, 2.0])  # delta (0, 1): 1
    codes[:, 2] = torch.tensor([1.0, 1.0])  # delta 0
    codes[0, 3] = torch.tensor([2.0, 1.0])  # delta (1, 0) for sample 0; sample 1: (-1, -1)

    assert float(delta_regularisation(codes, 0)) == 0.0
    assert float(delta_regularisation(codes, 1)) == pytest.approx(3.0)  # mean(5, 1)
    assert float(delta_regularisation(codes, 2)) == pytest.approx(3.0)
    expect3 = 3.0 + (1.0 + math.sqrt(2)) / 2
    assert float(delta_regularisation(codes, 3)) == pytest.approx(expect3)
    assert float(delta_regularisation(codes, 17)) == pytest.approx(expect3)  # only n_styles-1 offsets exist
    assert delta_norms(codes, 3, norm=1).tolist() == pytest.approx([4.0, 0.0, 1.5])  # mean(7,1), 0, mean(1,2)


def test_delta_regularisation_ignores_a_shared_offset():
    codes = torch.randn(3, 5, 8)
    avg = torch.randn(1, 1, 8).expand(3, 5, 8)  # latent_avg repeated per style
    torch.testing.assert_close(delta_regularisation(codes + avg, 4), delta_regularisation(codes, 4))


# ------------------------------------------------------------------------------- latent discriminator


def test_discriminator_losses_hand_computed():
    real = torch.tensor([0.0, math.log(3)])
    fake = torch.tensor([0.0, math.log(3)])
    # softplus(-0) = ln 2, softplus(-ln 3) = ln(4/3), softplus(ln 3) = ln 4
    assert float(d_logistic_loss(real, fake)) == pytest.approx(
        (math.log(2) + math.log(4 / 3)) / 2 + (math.log(2) + math.log(4)) / 2)
    assert float(g_nonsaturating_loss(fake)) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)


def test_r1_penalty_hand_computed():
    w = torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 0.0]], requires_grad=True)
    a = torch.tensor([1.0, 2.0, 2.0])
    # D(w) = <a, w> + sum(w^2): grad = a + 2w -> (3, 2, 6) and (1, 0, 2); squared norms 49 and 5
    logits = (w @ a + (w ** 2).sum(1)).unsqueeze(1)
    assert float(r1_penalty(logits, w, gamma=1.0).detach()) == pytest.approx(0.5 * (49 + 5) / 2)
    penalty = r1_penalty(logits, w, gamma=10.0, every=16)
    assert float(penalty.detach()) == pytest.approx(5 * 16 * (49 + 5) / 2)
    penalty.backward()  # create_graph: the penalty is differentiable (d/dw of mean ||a + 2w||^2 * 80)
    torch.testing.assert_close(w.grad, 80 * 2 * (a + 2 * w.detach()) * 2 / 2)


def test_w_pool_semantics():
    assert WPool(0).query(torch.ones(3, 4, 2)).shape == (3, 4, 2)  # size 0: unchanged

    pool = WPool(size=3, seed=0)
    first = torch.arange(6.0).view(3, 2)
    assert torch.equal(pool.query(first), first)  # filling: returned as is and stored
    assert len(pool) == 3

    swaps, n = 0, 400
    for step in range(n):
        before = [s.clone() for s in pool.ws]
        w = torch.full((1, 2), 100.0 + step)
        out = pool.query(w)[0]
        after = pool.ws
        changed = [i for i in range(3) if not torch.equal(before[i], after[i])]
        if torch.equal(out, w[0]):
            assert changed == []  # returned as is, pool untouched
        else:
            swaps += 1  # a stored code comes back and w takes its slot
            assert len(changed) == 1 and torch.equal(out, before[changed[0]])
            assert torch.equal(after[changed[0]], w[0])
    assert 0.4 < swaps / n < 0.6  # swap with probability 1/2


def test_w_pool_draws_one_row_of_stacked_codes_and_resumes():
    pool = WPool(size=2, seed=3)
    ws = torch.randn(4, 5, 8)  # (batch, styles, 512)-like: one style drawn per sample
    out = pool.query(ws)
    assert out.shape == (4, 8)
    for i in range(4):
        assert any(torch.equal(out[i], row) for row in ws[i])

    state = pool.state_dict()
    other = WPool(size=2, seed=99)
    other.load_state_dict(state)
    nxt = torch.randn(6, 8)
    assert torch.equal(pool.query(nxt), other.query(nxt))
