"""StyleGAN2 trainer: a CPU run writes a loadable rosinality checkpoint, resumes bit-identically, refuses
what it cannot do in one line, and its fast implementation computes what the reference computes."""
import json

import pytest
import torch

from e4e.checkpoints import load_generator
from e4e.errors import E4EError
from e4e.imageio import to_pil
from e4e.train.augment import diff_augment
from e4e.train.data import BatchPlan, DeviceImages, prefetch_batches
from e4e.train.stylegan import GANTrainConfig, GANTrainer, path_length_penalty, train_gan


def make_data(folder, n=8, size=16):
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i, im in enumerate(to_pil(torch.rand(n, 3, size, size, generator=g) * 2 - 1)):
        im.save(folder / f"{i}.png")


def cfg(tmp_path, **kw):
    base = dict(data=str(tmp_path / "data"), out=str(tmp_path / "run"), size=16, style_dim=16, n_mlp=2,
                channel_max=8, batch=4, workers=0, log_every=1, sample_every=1000, save_every=2, device="cpu",
                d_reg_every=2, g_reg_every=2, impl="reference")
    base.update(kw)
    return GANTrainConfig(**base)


def all_tensors(path):
    ck = torch.load(path, weights_only=True)
    out = {}
    for name in ("g", "d", "g_ema"):
        out.update({f"{name}.{k}": v for k, v in ck[name].items()})
    for name in ("g_optim", "d_optim"):
        for i, st in ck[name]["state"].items():
            out.update({f"{name}.{i}.{k}": v for k, v in st.items() if torch.is_tensor(v)})
    out["mean_path_length"] = ck["mean_path_length"]
    return out


def test_train_resume_and_load(tmp_path):
    make_data(tmp_path / "data")
    final = train_gan(cfg(tmp_path, steps=4))
    g, avg = load_generator(final)
    assert g.size == 16 and g.style_dim == 16 and avg.shape == (1, 16)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 4
    train_gan(cfg(tmp_path, steps=6, resume=True))
    rows = [json.loads(x) for x in open(tmp_path / "run" / "log.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(("r1" in r) == ((r["step"] - 1) % 2 == 0) for r in rows)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 6


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_resume_is_bit_identical(tmp_path, impl):
    """6 steps straight == 3 steps, a kill, and a resume for 3 more: every weight and optimiser moment."""
    make_data(tmp_path / "data")
    train_gan(cfg(tmp_path, out=str(tmp_path / "straight"), steps=6, save_every=100, impl=impl))
    train_gan(cfg(tmp_path, out=str(tmp_path / "split"), steps=3, save_every=100, impl=impl))
    # a kill after logging step 4 but before its checkpoint: the resumed run must not repeat the row
    with open(tmp_path / "split" / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "d_loss": 0.0}) + "\n")
    train_gan(cfg(tmp_path, out=str(tmp_path / "split"), steps=6, save_every=100, impl=impl, resume=True))
    a, b = all_tensors(tmp_path / "straight" / "checkpoint.pt"), all_tensors(tmp_path / "split" / "checkpoint.pt")
    assert a.keys() == b.keys() and len(a) > 40
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert differ == []
    rows = [json.loads(x)["step"] for x in open(tmp_path / "split" / "log.jsonl")]
    assert rows == [1, 2, 3, 4, 5, 6]


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    make_data(tmp_path / "data")
    train_gan(cfg(tmp_path, steps=2))
    with pytest.raises(E4EError, match="already holds a run.*--resume"):
        train_gan(cfg(tmp_path, steps=4))
    with pytest.raises(E4EError, match="nothing to resume"):
        train_gan(cfg(tmp_path, out=str(tmp_path / "new"), steps=4, resume=True))


def test_corrupt_or_foreign_checkpoint_is_one_line(tmp_path):
    make_data(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(E4EError, match="checkpoint.pt"):
        train_gan(cfg(tmp_path, steps=4, resume=True))
    torch.save({"g_ema": {}}, run / "checkpoint.pt")
    with pytest.raises(E4EError, match="not a train-generator checkpoint"):
        train_gan(cfg(tmp_path, steps=4, resume=True))


def test_fewer_images_than_the_batch_is_an_error_not_a_hang(tmp_path):
    make_data(tmp_path / "data", n=3)
    for impl in ("reference", "fast"):
        with pytest.raises(E4EError, match="3 readable images but a batch of 4"):
            train_gan(cfg(tmp_path, out=str(tmp_path / impl), steps=2, impl=impl))


@pytest.mark.parametrize("kw,msg", [({"batch": 0}, "batch=0 must be >= 1"), ({"save_every": 0}, "save_every"),
                                    ({"reg_impl": "taps"}, "reg_impl='taps' must be auto, ref, gradfix or fold"),
                                    ({"main_impl": "gradfix"}, "main_impl='gradfix' must be auto"),
                                    ({"lr": -1.0}, "lr=-1.0 must be a positive"), ({"impl": "cuda"}, "impl='cuda' must"),
                                    ({"augment": "colour"}, "unknown augment"),
                                    ({"compile_mode": "fast"}, "compile_mode='fast' must be one of default")])
def test_bad_options_are_one_line(tmp_path, kw, msg):
    with pytest.raises(E4EError, match=msg):
        cfg(tmp_path, **kw)


def test_device_images_equal_the_disk_batches(tmp_path):
    from e4e.data.folder import ImageFolderDataset
    make_data(tmp_path / "data", n=10)
    ds = ImageFolderDataset(tmp_path / "data", 16)
    plan = BatchPlan(len(ds), 4, seed=3)
    resident = DeviceImages(ds, "cpu", threads=2)
    for step, disk in prefetch_batches(ds, plan, 0, 5, workers=2):
        assert torch.equal(resident.batch(plan, step), disk)


def _draw_with_noise(tr, b, size):
    r = tr.draw(b, size, size)
    gen = torch.Generator().manual_seed(5)
    shapes = [n.shape[2:] for n in tr.g.get_noise()]
    r["noise"] = [torch.randn(b, 1, *s, generator=gen) for s in shapes]
    if "pl_z" in r:  # a path-length step (every g_reg_every steps)
        pb = r["pl_z"][0].shape[1]
        r["pl_noise"] = [torch.randn(pb, 1, *s, generator=gen) for s in shapes]
        r["pl_y"] = torch.randn(pb, 3, size, size, generator=gen)
    return r


@pytest.mark.slow
def test_fast_step_computes_the_reference_step(tmp_path):
    """torch.compile'd main steps + shared-weight modconv (fast) vs eager grouped convs (reference), fp32:
    the same losses and the same parameters after two full steps (the first with both lazy regularisers,
    the second without)."""
    torch.manual_seed(0)
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    runs = {}
    for impl, comp in (("reference", "off"), ("fast", "on")):
        tr = GANTrainer(cfg(tmp_path, impl=impl, compile=comp, mixing=1.0))
        assert tr.compiled == (comp == "on")
        stats = [tr.step(real, _draw_with_noise(tr, 4, 16)) for _ in range(2)]
        runs[impl] = (stats, {k: v.clone() for k, v in tr.g.state_dict().items()},
                      {k: v.clone() for k, v in tr.d.state_dict().items()})
    (sa, ga, da), (sb, gb, db) = runs["reference"], runs["fast"]
    assert set(sa[0]) == set(sb[0]) >= {"d_loss", "g_loss", "r1", "path"}
    assert set(sa[1]) == set(sb[1]) and not {"r1", "path"} & set(sa[1])
    for a, b in zip(sa, sb):
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), (k, a[k], b[k])
    for k in ga:
        assert torch.allclose(ga[k], gb[k], rtol=1e-5, atol=1e-6), k
    for k in da:
        assert torch.allclose(da[k], db[k], rtol=1e-5, atol=1e-6), k


def _to_cuda(x):
    if isinstance(x, dict):
        return {k: _to_cuda(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cuda(v) for v in x)
    return x.cuda() if torch.is_tensor(x) else x


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphed_main_steps_train_what_the_default_compile_trains(tmp_path):
    """compile_mode=reduce-overhead (the main steps as CUDA graphs) is a way to run the same steps: from
    the same draws, three steps (R1 and path length included) give the default compile's losses and
    parameters (fp32, TF32 off), and the stats kept from a step survive the next step's replays."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    real = (torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1).cuda()
    runs = {}
    for mode in ("default", "reduce-overhead"):
        torch.manual_seed(0)
        tr = GANTrainer(cfg(tmp_path, impl="fast", compile="on", compile_mode=mode, device="cuda", mixing=1.0))
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # the trainer sets them
        assert tr.graphed == (mode == "reduce-overhead")
        stats = []
        for _ in range(3):
            r = _draw_with_noise(tr, 4, 16)
            r = _to_cuda(r)
            stats.append(tr.step(real, r))
        runs[mode] = ([{k: v.item() for k, v in st.items()} for st in stats],
                      {k: v.clone() for k, v in tr.g.state_dict().items()})
    (sa, ga), (sb, gb) = runs["default"], runs["reduce-overhead"]
    for a, b in zip(sa, sb):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5) for k in a), (a, b)
    for k in ga:
        assert torch.allclose(ga[k], gb[k], rtol=1e-4, atol=1e-5), k


def test_ops_impls_resolve_per_device(tmp_path):
    """auto: the regularisers run the reference on CPU (fold is for CUDA, where it was measured faster) and
    the main steps the reference eager; explicit names are kept."""
    tr = GANTrainer(cfg(tmp_path, impl="fast", compile="off"))
    assert (tr.reg_impl, tr.main_impl) == ("ref", "ref")
    tr = GANTrainer(cfg(tmp_path, impl="fast", compile="off", reg_impl="fold", main_impl="taps"))
    assert (tr.reg_impl, tr.main_impl) == ("fold", "taps")


def _steps(tr, real, n):
    stats = [tr.step(real) for _ in range(n)]
    params = {**{f"g.{k}": v.clone() for k, v in tr.g.state_dict().items()},
              **{f"d.{k}": v.clone() for k, v in tr.d.state_dict().items()}}
    return stats, params


@pytest.mark.parametrize("setting", [{"channels_last": True}, {"reg_impl": "gradfix"}, {"reg_impl": "fold"},
                                     {"main_impl": "fold", "reg_impl": "fold"}, {"main_impl": "taps"}])
def test_layout_and_regulariser_ops_train_the_same_function(tmp_path, setting):
    """channels_last=True (NHWC activations in G and D) is a layout, reg_impl="gradfix" (R1 and path length
    through e4e.ops.conv), "fold" (the blurs folded into the convolutions beside them, e4e.ops.fir_conv) and
    main_impl (the main steps' ops) implementations, none a model: the same draws give the same losses and
    parameters (float64, so only the summation order could differ) over steps with both lazy
    regularisers; the path-length probe is drawn in (N, C, H, W) order whatever the layout."""
    torch.set_default_dtype(torch.float64)
    try:
        real = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
        runs = [_steps(GANTrainer(cfg(tmp_path, impl="fast", compile="off", **kw)), real, 3)
                for kw in ({}, setting)]
    finally:
        torch.set_default_dtype(torch.float32)
    (sa, pa), (sb, pb) = runs
    assert {"r1", "path"} <= set(sa[0])
    for a, b in zip(sa, sb):
        assert set(a) == set(b)
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=1e-9, atol=1e-12), (k, a[k], b[k])
    for k in pa:
        assert torch.allclose(pa[k], pb[k], rtol=1e-9, atol=1e-12), k


def test_bf16_regularisers_stay_close_to_fp32(tmp_path):
    """reg_bf16=True runs R1 and path length under bf16 autocast (CPU autocast here); their values stay
    within bf16 rounding of the fp32 ones, from the same draws; without bf16 the flag changes nothing."""
    real = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    out = {}
    for reg in (False, True):
        tr = GANTrainer(cfg(tmp_path, impl="fast", compile="off", bf16=True, reg_bf16=reg, mixing=1.0))
        assert tr.reg_bf16 == reg
        out[reg] = tr.step(real, _draw_with_noise(tr, 4, 16))
    for k in ("r1", "path", "path_length"):
        a, b = float(out[False][k]), float(out[True][k])
        assert abs(a - b) <= 0.05 * abs(a) + 1e-3, (k, a, b)
    assert not GANTrainer(cfg(tmp_path, reg_bf16=True)).reg_bf16  # bf16 off: fp32 regularisers


def test_phase_clock_splits_every_step_into_its_phases(tmp_path):
    """The trainer's phase marks (bench/train_profile.py): every phase of a step is timed, the lazy
    regularisers only on their steps, and the phases account for the step's time."""
    import time

    from e4e.train.phases import PhaseClock
    tr = GANTrainer(cfg(tmp_path, impl="fast", compile="off"))
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    tr.clock = clock = PhaseClock("cpu")
    t = time.perf_counter()
    for _ in range(2):
        tr.step(real)
    wall = time.perf_counter() - t
    totals = clock.totals()
    assert set(totals) == {"D main: forward", "D main: backward + Adam", "D R1 (eager)", "G main: forward",
                           "G main: backward + Adam", "G path length (eager)", "EMA"}
    assert all(v > 0 for v in totals.values())
    assert 0.8 * wall <= sum(totals.values()) <= wall


def test_mixing_cutoff_selects_layers():
    from e4e.nets.stylegan2 import Generator, GeneratorConfig
    from e4e.train.stylegan import MixingGenerator
    g = Generator(GeneratorConfig(size=16, style_dim=8, n_mlp=1, channel_max=8))
    z = torch.randn(2, 3, 8)
    _, lat = MixingGenerator(g)(z, torch.tensor(2))
    w0, w1 = g.mapping(z[0]), g.mapping(z[1])
    assert torch.allclose(lat[:, :2], w0[:, None].expand(-1, 2, -1))
    assert torch.allclose(lat[:, 2:], w1[:, None].expand(-1, g.n_latent - 2, -1))
    _, lat = MixingGenerator(g)(z, torch.tensor(g.n_latent))  # no mixing
    assert torch.allclose(lat, w0[:, None].expand(-1, g.n_latent, -1))


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


def test_compile_on_off_survive_yaml_overrides():
    from e4e.train.config import build_config
    assert build_config(GANTrainConfig, None, ["compile=off"]).compile == "off"
    assert build_config(GANTrainConfig, None, ["compile=on"]).compile == "on"


def test_yaml_booleans_become_on_off_for_any_string_option(tmp_path):
    """The general rule in train.config (no per-option special case): a YAML file's bare off is False."""
    from e4e.train.config import build_config
    (tmp_path / "c.yaml").write_text("compile: off\nimpl: fast\n")
    assert build_config(GANTrainConfig, str(tmp_path / "c.yaml")).compile == "off"
    from e4e.train.e4e import resolve_config
    assert resolve_config(None, ["dataset_type=avatar_encode", "lpips_type=on"]).lpips_type == "on"


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


def test_assembled_step_against_an_in_test_reference(tmp_path):
    """One GANTrainer.step (reference impl) against the D half of the step written out here: mixed W+ from
    the drawn cut-off, DiffAugment with the drawn parameters, the softplus logistic loss, then (after D's
    plain-Adam update) lazy R1 = gamma/2 * d_reg_every * E||dD/dx||^2."""
    import torch.nn.functional as F
    from e4e.train.augment import apply_augment
    torch.manual_seed(0)
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    c = cfg(tmp_path, mixing=1.0)
    tr = GANTrainer(c)
    r = _draw_with_noise(tr, 4, 16)
    g0 = {k: v.clone() for k, v in tr.g.state_dict().items()}
    d0 = {k: v.clone() for k, v in tr.d.state_dict().items()}
    stats = tr.step(real, r)

    from e4e.nets.stylegan2 import Generator
    from e4e.train.stylegan import build_discriminator
    g, d = Generator(c.generator_config()), build_discriminator(c)
    g.load_state_dict(g0), d.load_state_dict(d0)

    def latent(z, cut):
        w = torch.stack([g.mapping(z[0]), g.mapping(z[1])])
        layers = torch.arange(g.n_latent)
        return torch.stack([w[0] if i < int(cut) else w[1] for i in layers.tolist()], 1)

    z, cut = r["d_z"]
    fake = g.synthesis(latent(z, cut), noise=r["noise"])
    d_fake = d(apply_augment(fake, c.augment, r["aug_fake"]))
    d_real = d(apply_augment(real, c.augment, r["aug_real"]))
    d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    torch.testing.assert_close(stats["d_loss"], d_loss.detach(), rtol=1e-5, atol=1e-6)
    # R1 on the discriminator as it is after the main D update: replay that update with plain Adam
    opt = torch.optim.Adam(d.parameters(), lr=tr.d_opt.param_groups[0]["lr"], betas=tr.d_opt.param_groups[0]["betas"])
    opt.zero_grad()
    d_loss.backward()
    opt.step()
    x = real.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(d(apply_augment(x, c.augment, r["aug_r1"])).sum(), x)
    r1 = c.r1 / 2 * gx.pow(2).flatten(1).sum(1).mean() * c.d_reg_every
    torch.testing.assert_close(stats["r1"], r1.detach(), rtol=1e-5, atol=1e-7)
    assert int(r["d_z"][1]) < g.n_latent  # mixing=1.0: the cut-off always mixes


KILLED_GAN = """
import json, os, signal, sys
from e4e.train.stylegan import GANTrainConfig, GANTrainer, train_gan
cfg = GANTrainConfig(**json.loads(sys.argv[1]))
step = GANTrainer.step
def dying(self, *a, **k):  # kill -9 inside step 6: rows of step 5 logged, checkpoint.pt at step 4
    if self.step_count == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, *a, **k)
GANTrainer.step = dying
train_gan(cfg)
"""


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_resumes_bit_identically_after_kill_9(tmp_path, impl):
    """A process killed with SIGKILL between checkpoints, resumed with --resume: every weight, optimiser
    moment and log row (losses) equals a run that was never interrupted."""
    import dataclasses
    import os
    import signal
    import subprocess
    import sys
    make_data(tmp_path / "data")
    kw = dict(steps=7, save_every=2, impl=impl)
    train_gan(cfg(tmp_path, out=str(tmp_path / "straight"), **kw))
    killed = cfg(tmp_path, out=str(tmp_path / "killed"), **kw)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", KILLED_GAN, json.dumps(dataclasses.asdict(killed))], env=env,
                          capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["step"] == 4
    train_gan(dataclasses.replace(killed, resume=True))
    a, b = all_tensors(tmp_path / "straight" / "checkpoint.pt"), all_tensors(tmp_path / "killed" / "checkpoint.pt")
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    rows = lambda d: [{k: v for k, v in json.loads(x).items() if k not in ("time_s", "steps_per_s", "images_per_s")}
                      for x in open(tmp_path / d / "log.jsonl")]  # noqa: E731
    assert [r["step"] for r in rows("killed")] == list(range(1, 8))
    assert rows("killed") == rows("straight")


def test_compiled_run_loads_then_writes_the_portable_compile_cache(tmp_path, monkeypatch):
    """The hook only (compiling itself is tested in test_fast): a compiled run loads compile_cache first
    and writes OUT/compile_cache.bin once, after its first logged step."""
    import e4e.fast
    make_data(tmp_path / "data")
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # "compiled", without the CPU compile wait
    monkeypatch.setattr(e4e.fast, "load_portable_cache", lambda p: calls.append(("load", str(p))) or True)
    monkeypatch.setattr(e4e.fast, "save_portable_cache", lambda p: calls.append(("save", str(p))) or 123)
    train_gan(cfg(tmp_path, steps=3, impl="fast", compile="on", compile_cache=str(tmp_path / "c.bin")))
    assert calls == [("load", str(tmp_path / "c.bin")), ("save", str(tmp_path / "run" / "compile_cache.bin"))]
    calls.clear()
    train_gan(cfg(tmp_path, out=str(tmp_path / "eager"), steps=2, impl="fast", compile="off",
                  compile_cache=str(tmp_path / "c.bin")))
    assert calls == []  # nothing compiled: nothing to load or keep
