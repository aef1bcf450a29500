import pytest
import torch
from torch import nn

from conftest import assert_parity, fixture_params, load_npz, need, state_dict_from_manifest
from e4e.nets.discriminators import LatentCodesDiscriminator

TOL = 1e-6  # measured 0 on 1 and 2 threads (docs/testing.md)


@pytest.mark.parametrize("fx", fixture_params("wdisc"))
def test_latent_discriminator_matches_official(fx):
    fx = need(fx)
    state = state_dict_from_manifest(fx.manifest)
    style_dim = state["mlp.0.weight"].shape[1]
    n_mlp = sum(1 for k in state if k.endswith(".weight"))
    model = LatentCodesDiscriminator(style_dim, n_mlp)
    model.load_state_dict(state, strict=True)
    data = load_npz(fx["npz"])
    with torch.no_grad():
        logits = model.eval()(data["w"])
    assert_parity(f"{fx.name}.logits", logits, data["logits"], TOL)


def test_latent_discriminator_layout():
    model = LatentCodesDiscriminator()
    assert list(model.state_dict()) == [f"mlp.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")]
    acts = [m for m in model.mlp if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 3 and all(a.negative_slope == 0.2 for a in acts)
    assert model(torch.randn(5, 512)).shape == (5, 1)


# ---- StyleGAN2 image discriminator (rosinality layout; no official fixture: checked against a
# ---- float64 re-derivation written directly from the state dict)
import math  # noqa: E402

import torch.nn.functional as F  # noqa: E402

from e4e.nets.discriminators import Discriminator, DiscriminatorConfig  # noqa: E402
from e4e.nets.stylegan2 import GeneratorConfig  # noqa: E402


def _lrelu(x, b):
    return F.leaky_relu(x + b.view(1, -1, *[1] * (x.ndim - 2)), 0.2) * math.sqrt(2)


def _conv(x, w, stride=1, padding=0):
    return F.conv2d(x, w / math.sqrt(w[0].numel()), stride=stride, padding=padding)


def _blur(x, k, pad):
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    c = x.shape[1]
    return F.conv2d(x, k.flip(0, 1).expand(c, 1, *k.shape), groups=c)


def _reference(sd, x, group):
    x = _lrelu(_conv(x, sd["convs.0.0.weight"]), sd["convs.0.1.bias"])
    i = 1
    while f"convs.{i}.conv1.0.weight" in sd:
        p = f"convs.{i}."
        h = _lrelu(_conv(x, sd[p + "conv1.0.weight"], padding=1), sd[p + "conv1.1.bias"])
        h = _lrelu(_conv(_blur(h, sd[p + "conv2.0.kernel"], (2, 2)), sd[p + "conv2.1.weight"], stride=2),
                   sd[p + "conv2.2.bias"])
        s = _conv(_blur(x, sd[p + "skip.0.kernel"], (1, 1)), sd[p + "skip.1.weight"], stride=2)
        x = (h + s) / math.sqrt(2)
        i += 1
    b = x.shape[0]
    g = min(b, group)
    m = b // g
    stats = []
    for n in range(b):
        members = x[[j for j in range(b) if j % m == n % m]]
        stats.append(torch.sqrt(members.var(0, unbiased=False) + 1e-8).mean())
    std = torch.stack(stats).view(b, 1, 1, 1).expand(b, 1, *x.shape[2:])
    x = torch.cat([x, std], 1)
    x = _lrelu(_conv(x, sd["final_conv.0.weight"], padding=1), sd["final_conv.1.bias"]).flatten(1)
    w1, w2 = sd["final_linear.0.weight"], sd["final_linear.1.weight"]
    x = _lrelu(F.linear(x, w1 / math.sqrt(w1.shape[1])), sd["final_linear.0.bias"])
    return F.linear(x, w2 / math.sqrt(w2.shape[1]), sd["final_linear.1.bias"])


def test_image_discriminator_rosinality_layout():
    d = Discriminator(DiscriminatorConfig(size=16, channel_multiplier=2))
    keys = list(d.state_dict())
    block = ["conv1.0.weight", "conv1.1.bias", "conv2.0.kernel", "conv2.1.weight", "conv2.2.bias",
             "skip.0.kernel", "skip.1.weight"]
    assert keys == (["convs.0.0.weight", "convs.0.1.bias"] + [f"convs.{i}.{k}" for i in (1, 2) for k in block]
                    + ["final_conv.0.weight", "final_conv.1.bias", "final_linear.0.weight", "final_linear.0.bias",
                       "final_linear.1.weight", "final_linear.1.bias"])
    assert d.state_dict()["final_conv.0.weight"].shape == (512, 513, 3, 3)
    g = GeneratorConfig(size=256, channel_multiplier=1, channel_max=128)
    big = Discriminator(DiscriminatorConfig.from_generator(g))
    assert big.state_dict()["convs.0.0.weight"].shape[0] == g.channels(256) == 64
    assert [big.state_dict()[f"convs.{i}.conv2.1.weight"].shape[0] for i in range(1, 7)] == \
        [g.channels(2 ** r) for r in range(7, 1, -1)]


def test_image_discriminator_matches_reference():
    torch.manual_seed(3)
    d = Discriminator(DiscriminatorConfig(size=16, channel_max=32)).double()
    sd = {k: v.clone() for k, v in d.state_dict().items()}
    for k in sd:  # non-zero biases and asymmetric kernels: the stored buffers must be used, flipped
        if k.endswith("bias") or k.endswith("kernel"):
            sd[k] = torch.rand_like(sd[k]) * (0.5 if k.endswith("bias") else 1)
    d.load_state_dict(sd, strict=True)
    for batch in (8, 2):
        x = torch.randn(batch, 3, 16, 16, dtype=torch.float64)
        out = d(x)
        assert out.shape == (batch, 1)
        assert torch.allclose(out, _reference(sd, x, 4), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="stddev group"):
        d(torch.randn(6, 3, 16, 16, dtype=torch.float64))


def test_image_discriminator_supports_r1_double_backward():
    d = Discriminator(DiscriminatorConfig(size=8, channel_max=16))
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
    grad.pow(2).sum().backward()
    # d(logit)/dx does not involve the last bias, so only that one gets no gradient
    missing = [k for k, p in d.named_parameters() if p.grad is None]
    assert missing == ["final_linear.1.bias"]
