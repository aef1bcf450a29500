"""StyleGAN2 trainer: a CPU run writes a loadable rosinality checkpoint, resumes, and its pieces behave."""
import json

import torch

from e4e.checkpoints import load_generator
from e4e.imageio import to_pil
from e4e.train.augment import diff_augment
from e4e.train.stylegan import GANTrainConfig, path_length_penalty, train_gan


def make_data(folder, n=8, size=16):
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i, im in enumerate(to_pil(torch.rand(n, 3, size, size, generator=g) * 2 - 1)):
        im.save(folder / f"{i}.png")


def cfg(tmp_path, **kw):
    base = dict(data=str(tmp_path / "data"), out=str(tmp_path / "run"), size=16, style_dim=16, n_mlp=2,
                channel_max=8, batch=4, workers=0, log_every=1, sample_every=1000, save_every=2, device="cpu",
                d_reg_every=2, g_reg_every=2)
    base.update(kw)
    return GANTrainConfig(**base)


def test_train_resume_and_load(tmp_path):
    make_data(tmp_path / "data")
    final = train_gan(cfg(tmp_path, steps=4))
    g, avg = load_generator(final)
    assert g.size == 16 and g.style_dim == 16 and avg.shape == (1, 16)
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 4
    train_gan(cfg(tmp_path, steps=6))  # same out folder: resumes at step 4
    rows = [json.loads(x) for x in open(tmp_path / "run" / "log.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all("r1" in r for r in rows if (r["step"] - 1) % 2 == 0)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 6


def test_diff_augment_is_differentiable_and_seeded():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    a = diff_augment(x, generator=torch.Generator().manual_seed(1))
    b = diff_augment(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    a.sum().backward()
    assert x.grad.abs().sum() > 0
    # translation alone moves content but keeps values from the image or the zero padding
    t = diff_augment(x.detach(), "translation", torch.Generator().manual_seed(2))
    assert set(torch.unique(t).tolist()) <= set(torch.unique(x.detach()).tolist()) | {0.0}


# -- one GAN step's objectives against float64 references written from the papers (Goodfellow et al.'s
# logistic loss, Mescheder et al.'s R1 with StyleGAN2's lazy scaling, StyleGAN2's path length), on the
# public functions the trainer calls: e4e.losses and path_length_penalty. (When the trainer's step functions
# change, hook them in here: the references stay.)

def test_logistic_losses_and_their_gradients_match_the_formulas():
    from e4e.losses import d_logistic_loss, g_nonsaturating_loss
    from e4e.nets.discriminators import Discriminator, DiscriminatorConfig
    torch.manual_seed(4)
    d = Discriminator(DiscriminatorConfig(size=8, channel_max=8)).double()
    real, fake = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randn(4, 3, 8, 8, dtype=torch.float64)
    params = list(d.parameters())
    loss = d_logistic_loss(d(real), d(fake))
    ref = -torch.log(torch.sigmoid(d(real))).mean() - torch.log(1 - torch.sigmoid(d(fake))).mean()
    assert abs(float((loss - ref).detach())) < 1e-12 * abs(float(ref.detach()))
    for g, g_ref in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-12)
    fake.requires_grad_(True)
    g_loss = g_nonsaturating_loss(d(fake))
    g_ref = -torch.log(torch.sigmoid(d(fake))).mean()
    assert abs(float((g_loss - g_ref).detach())) < 1e-12 * abs(float(g_ref.detach()))
    (a,), (b,) = torch.autograd.grad(g_loss, fake), torch.autograd.grad(g_ref, fake)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


class Quadratic(torch.nn.Module):
    """D(x) = (a . x)^2 per sample: dD/dx = 2 (a . x) a, so ||dD/dx||^2 = 4 (a . x)^2 ||a||^2."""

    def __init__(self, a):
        super().__init__()
        self.a = torch.nn.Parameter(a)

    def forward(self, x):
        return (x.flatten(1) @ self.a.flatten()).pow(2)[:, None]


def test_lazy_r1_is_gamma_over_two_times_interval_times_mean_squared_gradient():
    from e4e.losses import r1_penalty
    a = torch.randn(3, 4, 4, dtype=torch.float64)
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    d = Quadratic(a.clone())
    gamma, every = 10.0, 16
    r1 = r1_penalty(d(x), x, gamma=gamma, every=every)
    s = x.detach().flatten(1) @ a.flatten()
    expected = gamma / 2 * every * (4 * s ** 2 * a.pow(2).sum()).mean()
    assert abs(float(r1.detach()) - float(expected)) < 1e-10 * float(expected)
    # its gradient w.r.t. D's parameters (what the lazy step applies): d/da of gamma/2 every mean 4 s^2 |a|^2
    (grad,) = torch.autograd.grad(r1, d.a)
    xs = x.detach().flatten(1)
    want = gamma / 2 * every * 4 * ((2 * s[:, None] * xs * a.pow(2).sum() + 2 * s[:, None] ** 2 * a.flatten())
                                    .mean(0)).reshape(a.shape)
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)


def test_path_length_penalty_matches_the_formula_on_a_linear_generator():
    """img_b = sum_s A_s^T w_{b,s}: J^T y = (A_s y)_s exactly, so the lengths, their running mean and the
    penalty have closed forms. The noise y ~ N(0, 1/(H*W)) is redrawn from the same seed."""
    torch.manual_seed(1)
    b, n, dim, h, w = 3, 4, 5, 2, 3
    A = torch.randn(n, dim, 3 * h * w, dtype=torch.float64)
    latents = torch.randn(b, n, dim, dtype=torch.float64, requires_grad=True)
    img = torch.einsum("bsd,sdp->bp", latents, A).reshape(b, 3, h, w)
    mean0, decay = torch.tensor(0.7, dtype=torch.float64), 0.25
    torch.manual_seed(11)
    pen, mean, path_len = path_length_penalty(img, latents, mean0, decay=decay)
    torch.manual_seed(11)
    y = torch.randn(b, 3, h, w, dtype=torch.float64) / (h * w) ** 0.5
    jt_y = torch.einsum("sdp,bp->bsd", A, y.flatten(1))
    lengths = jt_y.pow(2).sum(2).mean(1).sqrt()
    want_mean = mean0 + decay * (lengths.mean() - mean0)
    torch.testing.assert_close(path_len, lengths.mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(mean, want_mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(pen, (lengths - want_mean).pow(2).mean(), rtol=1e-12, atol=0)
    assert float(pen) > 0
    # a batch of one at its own running mean (decay 1) has no penalty
    one = latents[:1].detach().requires_grad_(True)
    img1 = torch.einsum("bsd,sdp->bp", one, A).reshape(1, 3, h, w)
    pen1, _, _ = path_length_penalty(img1, one, torch.tensor(0.0, dtype=torch.float64), decay=1.0)
    assert float(pen1) < 1e-24
