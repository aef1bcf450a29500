"""The e4e trainer's impl="fast" against impl="reference" on CPU, compile off (the compiled objective
against the eager one is the opt-in test at the end: torch.compile takes minutes on a 2-core CPU):

- Encoder4Editing.masked_codes equals forward() at every progressive stage, and closed_parameters(stage)
  names exactly the parameters the reference backward leaves without a gradient;
- whole training steps (latent discriminator with lazy R1 and W pools, progressive stages opening every
  step, Ranger, the LPIPS-shaped perceptual loss) compute the same losses, the same gradients (None in the
  same places) and the same parameters in both implementations.
"""
import os

import pytest
import torch

from e4e.errors import E4EError
from e4e.nets.encoders import EncoderConfig, build_encoder
from e4e.train.e4e import E4ETrainConfig, E4ETrainer, progressive_stage

# a 32 px generator has 8 styles: style 7 reads the finest pyramid level, so both lateral layers are used
def assert_grads_close(grad, ref, scale, what, tol=1e-4):
    """max|g - g_ref| within tol of the larger of the tensor's own scale and 1% of the largest gradient:
    float32 rounding through train-mode BatchNorm (batch 2) makes gradients that are 0 in exact
    arithmetic (a bias before a BatchNorm) come out as noise at 1e-6 of the largest."""
    err = float((grad - ref).abs().max())
    assert err <= tol * max(float(ref.abs().max()), 0.01 * scale), (what, err, float(ref.abs().max()))


TINY = EncoderConfig(kind="e4e", mode="ir", stylegan_size=32, style_dim=16, widths=(8, 12, 16, 24),
                     units=(1, 1, 1, 1), input_size=64, head_width=8)


@pytest.mark.parametrize("stage", [0, 1, 2, 3, 5, 6, 7, "inference"])
def test_masked_codes_equal_the_reference_forward_and_closed_parameters_its_missing_grads(stage):
    torch.manual_seed(0)
    enc = build_encoder(TINY).train()
    x = torch.randn(2, 3, 64, 64)
    enc.set_stage(stage)
    ref = enc(x)
    ref.square().sum().backward()
    no_grad = {name for name, p in enc.named_parameters() if p.grad is None}
    ref_grads = {name: p.grad.clone() for name, p in enc.named_parameters() if p.grad is not None}
    enc.zero_grad(set_to_none=True)
    out = enc.masked_codes(x, enc.offset_mask(stage))
    assert torch.equal(out, ref)
    out.square().sum().backward()
    names = {id(p): n for n, p in enc.named_parameters()}
    closed = {names[id(p)] for p in enc.closed_parameters(stage)}
    assert closed == no_grad
    for name, p in enc.named_parameters():
        if name in closed:
            assert p.grad is None or float(p.grad.abs().max()) == 0, name
        else:
            assert_grads_close(p.grad, ref_grads[name], max(float(g.abs().max()) for g in ref_grads.values()), name)
    assert stage == "inference" or stage >= 7 or closed  # early stages do close something


@pytest.fixture(scope="module")
def world32(tmp_path_factory):
    """A 32 px generator (8 styles) with a non-zero latent_avg, 8 images, random LPIPS (alex) files."""
    from e4e.checkpoints import save_rosinality
    from e4e.imageio import to_pil
    from e4e.nets.perceptual import lpips_backbone
    from e4e.nets.stylegan2 import Generator, GeneratorConfig
    root = tmp_path_factory.mktemp("fast")
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(size=32, style_dim=16, n_mlp=2, channel_max=8)).eval()
    save_rosinality(root / "g.pt", g, latent_avg=g.mean_latent(500) + 0.3)
    (root / "data").mkdir()
    for i, im in enumerate(to_pil(torch.rand(8, 3, 64, 64) * 2 - 1)):
        im.save(root / "data" / f"{i}.png")
    backbone = lpips_backbone("alex")
    torch.save({f"features.{k}": v for k, v in backbone.features.state_dict().items()}, root / "alex.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(backbone.channels)},
               root / "lin.pth")
    return root


def make(world, tmp_path, impl, **kw):
    base = dict(dataset_type="emoji_encode", train_data=str(world / "data"), stylegan_weights=str(world / "g.pt"),
                exp_dir=str(tmp_path / impl), workers=0, batch_size=2, encoder_widths=list(TINY.widths),
                encoder_units=list(TINY.units), encoder_head_width=TINY.head_width, input_size=64, encoder_mode="ir",
                lpips_lambda=0.8, lpips_backbone=str(world / "alex.pth"), lpips_weights=str(world / "lin.pth"),
                id_lambda=0.0, w_discriminator_lambda=0.5, use_w_pool=True, w_pool_size=3, delta_norm_lambda=0.05,
                r1=10.0, d_reg_every=2, progressive_start=1, progressive_step_every=1, optim_name="ranger",
                learning_rate=1e-3, seed=5, impl=impl, compile="off")
    base.update(kw)
    return E4ETrainer(E4ETrainConfig(**base), log=lambda *_: None)


def run_steps(tr, steps):
    """-> per step: (logs as floats, {name: grad or None}), and the trainer. The trainers run one after
    the other: the D step draws z from the global generator, which each trainer seeds when it is built."""
    tr.inverter.encoder.train()
    tr.inverter.decoder.eval()
    rec = []
    for s, x in tr.batches(0, steps):
        logs = tr.train_step(s, x)
        grads = {n: None if p.grad is None else p.grad.clone() for n, p in tr.inverter.encoder.named_parameters()}
        rec.append(({k: float(v) for k, v in logs.items()}, grads, x.clone()))
    return rec


@pytest.mark.parametrize("progressive", [True, False])
def test_fast_steps_equal_reference_steps(world32, tmp_path, progressive):
    kw = {} if progressive else dict(progressive_start=None)
    steps = 9  # stages 0, 1, ..., 7 then all open; R1 at the even steps; the pools fill up at step 2
    ref = make(world32, tmp_path, "reference", **kw)
    rec_ref = run_steps(ref, steps)
    fast = make(world32, tmp_path, "fast", **kw)
    rec_fast = run_steps(fast, steps)
    assert fast.masked and not ref.masked and fast.opt.foreach and not ref.opt.foreach
    stages = {progressive_stage(s, ref.cfg, ref.n_styles) for s in range(steps)}
    assert len(stages) == (ref.n_styles if progressive else 1)
    for s, ((logs_ref, g_ref, x_ref), (logs_fast, g_fast, x_fast)) in enumerate(zip(rec_ref, rec_fast)):
        assert torch.equal(x_ref, x_fast)
        assert set(logs_ref) == set(logs_fast)
        for k, v in logs_ref.items():
            assert logs_fast[k] == pytest.approx(v, rel=2e-5, abs=1e-7), (s, k)
        scale = max(float(g.abs().max()) for g in g_ref.values() if g is not None)
        for name, g in g_ref.items():
            assert (g is None) == (g_fast[name] is None), (s, name)
            if g is not None:
                assert_grads_close(g_fast[name], g, scale, f"step {s}: grad {name}")
    for (name, p), q in zip(ref.inverter.encoder.named_parameters(), fast.inverter.encoder.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=name)
    for p, q in zip(ref.disc.parameters(), fast.disc.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6)
    # the pools hold the same codes
    torch.testing.assert_close(fast.fake_pool.state_dict()["ws"], ref.fake_pool.state_dict()["ws"], rtol=1e-5, atol=1e-6)
    assert fast.step == ref.step == steps


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("E4E_COMPILE_TESTS"), reason="torch.compile of the whole e4e objective "
                    "takes 4-8 min on 2 CPU cores; set E4E_COMPILE_TESTS=1 to run it")
def test_compiled_steps_equal_eager_steps(world32, tmp_path):
    """compile=on (the GPU default) on CPU: the compiled objective and no-grad encoder give the eager
    fast path's losses and parameters. Generator noise is drawn inside the compiled graph from another
    stream than eager's, so noise is off here (noise_strength 0 in every layer)."""
    recs = []
    for compile_ in ("off", "on"):
        tr = without_noise(make(world32, tmp_path / compile_, "fast", compile=compile_, lpips_lambda=0.0))
        assert tr.compiled == (compile_ == "on")
        recs.append((run_steps(tr, 3), tr))  # stages 0, 1, 2: one graph serves them all
    assert_same_training(*recs)


def without_noise(tr):
    """Generator noise off (every NoiseInjection weight 0): compiled graphs draw it from another stream."""
    for m in tr.inverter.decoder.modules():
        if m.__class__.__name__ == "NoiseInjection":
            m.weight.data.zero_()
    return tr


def assert_same_training(run_a, run_b):
    """Two (run_steps records, trainer) pairs logged the same losses and ended with the same encoder."""
    (rec_a, a), (rec_b, b) = run_a, run_b
    for s, ((la, _, _), (lb, _, _)) in enumerate(zip(rec_a, rec_b)):
        for k, v in la.items():
            assert lb[k] == pytest.approx(v, rel=1e-4, abs=1e-6), (s, k)
    for (name, p), q in zip(a.inverter.encoder.named_parameters(), b.inverter.encoder.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-5, msg=name)


def test_compile_mode_is_checked_in_one_line(world32, tmp_path):
    from e4e.errors import E4EError
    with pytest.raises(E4EError, match="compile_mode 'fastest': use one of default, reduce-overhead"):
        make(world32, tmp_path, "fast", compile_mode="fastest")
    assert not make(world32, tmp_path, "fast", compile_mode="reduce-overhead").graphed  # CPU, compile off


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphed_steps_equal_the_default_compile(world32, tmp_path):
    """compile_mode=reduce-overhead on CUDA: the same losses and parameters as the default compile over
    steps that open stages, run R1 and fill the pools (fp32, TF32 off, noise off as in the compiled test);
    the pools' codes and the logs outlive the graphs' next replays."""
    recs = []
    for mode in ("default", "reduce-overhead"):
        tr = without_noise(make(world32, tmp_path / mode, "fast", compile="on", compile_mode=mode, device="cuda"))
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        assert tr.graphed == (mode == "reduce-overhead")
        recs.append((run_steps(tr, 5), tr))
    assert_same_training(*recs)
    (_, a), (_, b) = recs
    torch.testing.assert_close(b.fake_pool.state_dict()["ws"], a.fake_pool.state_dict()["ws"], rtol=1e-4, atol=1e-5)


def test_w_norm_loss_is_psp_formula_and_both_impls_agree(world32, tmp_path):
    """w_norm_lambda (pSp's W-norm loss): the objective gains lambda * mean_b ||codes_b - latent_avg|| (all
    styles together), logged as loss_w_norm; the fast and reference steps still agree with it on."""
    tr = make(world32, tmp_path, "reference", w_norm_lambda=0.25)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    codes = torch.randn(2, tr.n_styles, 16) * 3
    y_hat = torch.rand(2, 3, 32, 32) * 2 - 1
    loss, logs = tr.encoder_loss(x, x, y_hat, codes, "inference")
    want = (codes - tr.inverter.latent_avg).flatten(1).norm(dim=1).mean()
    assert float(logs["loss_w_norm"]) == pytest.approx(float(want), rel=1e-6)
    tr.cfg.w_norm_lambda = 0.0
    loss0, logs0 = tr.encoder_loss(x, x, y_hat, codes, "inference")
    assert "loss_w_norm" not in logs0
    assert float((loss - loss0).detach()) == pytest.approx(0.25 * float(want), rel=1e-5)
    ref = run_steps(make(world32, tmp_path, "reference", w_norm_lambda=0.25), 3)
    fast = run_steps(make(world32, tmp_path, "fast", w_norm_lambda=0.25), 3)
    for (logs_ref, _, _), (logs_fast, _, _) in zip(ref, fast):
        assert logs_ref["loss_w_norm"] > 0
        assert logs_fast["loss_w_norm"] == pytest.approx(logs_ref["loss_w_norm"], rel=2e-5)


def test_w_norm_lambda_must_be_non_negative(world32, tmp_path):
    with pytest.raises(E4EError, match="w_norm_lambda"):
        E4ETrainConfig(dataset_type="emoji_encode", train_data="x", stylegan_weights="y", w_norm_lambda=-1).validate()


def test_a_runaway_style_is_reported_once(world32, tmp_path):
    """A style 1000x the median size is named in one log line, once; normal codes log nothing."""
    from e4e.metrics import runaway_styles, style_norms
    codes = torch.randn(3, 4, 8)
    torch.testing.assert_close(style_norms(codes, codes[0, 0]), (codes - codes[0, 0]).norm(dim=2).mean(0).double())
    assert runaway_styles(torch.tensor([1.0, 2.0, 1.5, 400.0])) == [3]
    assert runaway_styles(torch.tensor([1.0, 2.0, 1.5, 100.0])) == []
    tr = make(world32, tmp_path, "reference")
    lines = []
    tr.log = lines.append
    avg = tr.inverter.latent_avg
    codes = avg + torch.randn(2, tr.n_styles, avg.shape[-1])
    tr._warn_runaway(codes)
    assert lines == []
    codes[:, 5] *= 1e4
    tr._warn_runaway(codes)
    tr._warn_runaway(codes)
    assert len(lines) == 1 and "[5]" in lines[0] and "--w_norm_lambda" in lines[0]
