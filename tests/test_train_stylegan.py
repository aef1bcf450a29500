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


def test_path_length_penalty_zero_for_isometry_at_its_mean():
    w = torch.randn(2, 3, 4, requires_grad=True)
    img = w.reshape(2, 1, 3, 4)  # identity map: Jacobian^T y has the norm of y
    pen, mean, _ = path_length_penalty(img, w, mean_path_length=torch.tensor(0.0), decay=1.0)
    assert pen >= 0 and float(mean) > 0
