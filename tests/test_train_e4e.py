"""e4e trainer: schedule, data order, a CPU smoke run, bit-exact resume, and 2-process DDP on gloo."""
import importlib.util
import json
import os
import socket

import pytest
import torch

from e4e.checkpoints import load_inverter
from e4e.train.e4e import BatchPlan, E4ETrainConfig, E4ETrainer, progressive_stage, progressive_steps

TINY_ENCODER = dict(encoder_widths=[8, 16, 24, 32], encoder_units=[1, 1, 1, 1], input_size=16, encoder_mode="ir")


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A tiny 16px generator and 24 training images it made (scaled to fill [-1, 1])."""
    from train_world import train_world
    return train_world(tmp_path_factory.mktemp("world"), 24, normalise=True)


def config(world, exp, **kw):
    base = dict(dataset_type="emoji_encode", train_data=str(world / "data"), stylegan_weights=str(world / "g.pt"),
                exp_dir=str(exp), lpips_lambda=0.0, id_lambda=0.0, batch_size=4, workers=0, board_interval=1,
                image_interval=10_000, val_interval=10_000, optim_name="adam", learning_rate=1e-3, seed=3,
                **TINY_ENCODER)
    base.update(kw)
    return E4ETrainConfig(**base)


def test_progressive_schedule_matches_official_list():
    cfg = E4ETrainConfig(progressive_start=20, progressive_step_every=5)
    steps = progressive_steps(cfg, n_styles=6)
    assert steps == [0, 20, 25, 30, 35, 40]
    # the official coach sets stage i at step steps[i]
    for s in range(0, 60):
        expected = max(i for i, t in enumerate(steps) if t <= s)
        assert progressive_stage(s, cfg, 6) == expected
    assert progressive_stage(10**6, cfg, 6) == 5
    assert progressive_stage(0, E4ETrainConfig(), 6) == "inference"


def test_batch_plan_is_deterministic_and_covers_each_epoch():
    plan = BatchPlan(10, 4, seed=1)
    assert plan.per_epoch == 2
    a = plan.indices(0) + plan.indices(1)
    assert len(set(a)) == 8
    assert BatchPlan(10, 4, seed=1).indices(3) == plan.indices(3)
    assert plan.indices(2) != plan.indices(0)  # a new permutation per epoch
    assert torch.equal(plan.flips(5), BatchPlan(10, 4, seed=1).flips(5))


def test_batch_plan_gives_the_same_batches_to_concurrent_readers():
    """The reference trainers' prefetcher asks one plan for several steps from its worker threads, across
    epoch boundaries. The plan keeps one epoch's permutation; a thread must never read another epoch's
    (it did: a flaky mismatch between disk and resident batches)."""
    import sys
    import threading
    want = {s: BatchPlan(10, 4, seed=3).indices(s) for s in range(40)}
    plan, wrong = BatchPlan(10, 4, seed=3), []

    def read(offset):
        for k in range(400):
            s = (offset + 3 * k) % 40  # steps of many epochs, interleaved with the other threads
            if plan.indices(s) != want[s]:
                wrong.append(s)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race shows within the test
    try:
        threads = [threading.Thread(target=read, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert wrong == []


def test_missing_lpips_weights_is_one_clear_line(tiny_world, tmp_path):
    from e4e.errors import E4EError
    with pytest.raises(E4EError, match="LPIPS needs .*--lpips-backbone.*lpips_lambda=0"):
        E4ETrainer(config(tiny_world, tmp_path, lpips_lambda=0.8))


@pytest.mark.slow
def test_smoke_run_reconstruction_falls(tiny_world, tmp_path):
    cfg = config(tiny_world, tmp_path, max_steps=50, progressive_start=10, progressive_step_every=5,
                 w_discriminator_lambda=0.1, use_w_pool=True, d_reg_every=4)
    E4ETrainer(cfg).train()
    rows = [json.loads(line) for line in open(tmp_path / "log.jsonl") if '"val"' not in line]
    l2 = [r["loss_l2"] for r in rows]
    assert len(l2) == 50
    first, last = sum(l2[:10]) / 10, sum(l2[-10:]) / 10
    assert last < 0.8 * first, (first, last)
    assert rows[0]["stage"] == 0 and rows[-1]["stage"] == 5  # 6 styles: offsets 1..5 opened on schedule
    assert "discriminator_accuracy" in rows[-1] and "discriminator_r1_loss" in rows[0]
    if importlib.util.find_spec("tensorboard"):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator(str(tmp_path / "tb"))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        for tag in ("train/loss_l2", "train/stage", "train/discriminator_accuracy", "train/offset_norm_mean",
                    "train/total_delta_loss"):
            assert tag in tags, tag
        assert len(acc.Scalars("train/loss_l2")) == 50
    inv = load_inverter(tmp_path / "inverter.safetensors")
    assert inv.decoder.size == 16
    inv2 = load_inverter(tmp_path / "checkpoints" / "last.pt")  # official layout
    for a, b in zip(inv.encoder.state_dict().values(), inv2.encoder.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_resume_is_bit_exact(tiny_world, tmp_path, impl):
    kw = dict(progressive_start=2, progressive_step_every=1, w_discriminator_lambda=0.1, use_w_pool=True,
              w_pool_size=3, d_reg_every=2, optim_name="ranger", save_interval=3, impl=impl)
    straight = E4ETrainer(config(tiny_world, tmp_path / "a", max_steps=6, **kw))
    straight.train()
    first = E4ETrainer(config(tiny_world, tmp_path / "b", max_steps=3, **kw))
    first.train()
    second = E4ETrainer(config(tiny_world, tmp_path / "b", max_steps=6, **kw))
    assert second.resume() and second.step == 3
    second.train()
    for (k, a), b in zip(straight.inverter.encoder.state_dict().items(), second.inverter.encoder.state_dict().values()):
        assert torch.equal(a, b), k
    for (k, a), b in zip(straight.disc.state_dict().items(), second.disc.state_dict().values()):
        assert torch.equal(a, b), k


def test_encoder_init_warm_starts_the_encoder_with_another_generator(tiny_world, tmp_path):
    """--encoder_init: a trained run's encoder, this run's generator (e.g. one trained further)."""
    from e4e.errors import E4EError
    donor = E4ETrainer(config(tiny_world, tmp_path / "a", max_steps=2))
    donor.train()
    g2 = tmp_path / "g2.pt"  # "the generator trained on": other weights, same architecture
    from e4e.checkpoints import load_generator, save_rosinality
    g, avg = load_generator(tiny_world / "g.pt")
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.01)
    save_rosinality(g2, g, latent_avg=avg + 1)
    warm = E4ETrainer(config(tiny_world, tmp_path / "b", stylegan_weights=str(g2),
                             encoder_init=str(tmp_path / "a" / "inverter.safetensors")))
    for (k, a), b in zip(donor.inverter.encoder.state_dict().items(), warm.inverter.encoder.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(g.state_dict().values(), warm.inverter.decoder.state_dict().values()):
        assert torch.equal(a, b)  # the generator is the new one, not the donor's
    assert torch.allclose(warm.inverter.latent_avg, avg + 1)  # its mean W too
    with pytest.raises(E4EError, match="--encoder_init .*another architecture"):
        E4ETrainer(config(tiny_world, tmp_path / "c", encoder_widths=[8, 16, 24, 40],
                          encoder_init=str(tmp_path / "a" / "inverter.safetensors")))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg_dict, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from e4e.train import dist
    info = dist.init("cpu")
    trainer = E4ETrainer(E4ETrainConfig(**cfg_dict), info, log=lambda *_: None)
    trainer.train()
    torch.save({k: v for k, v in trainer.inverter.encoder.named_parameters()}, os.path.join(out, f"rank{rank}.pt"))
    dist.cleanup(info)


@pytest.mark.slow
def test_two_process_gloo_ddp(tiny_world, tmp_path):
    import torch.multiprocessing as mp
    # validation on rank 0 alone, mid-run and at the end: it must not wait for the other rank
    cfg = config(tiny_world, tmp_path, max_steps=6, progressive_start=2, progressive_step_every=2,
                 w_discriminator_lambda=0.1, device="cpu", test_data=str(tiny_world / "data"), val_interval=3)
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg.__dict__, str(tmp_path)), nprocs=2, join=True)
    rows = [json.loads(line) for line in open(tmp_path / "log.jsonl") if '"val"' not in line]
    assert [r["step"] for r in rows] == list(range(1, 7))
    vals = [json.loads(line) for line in open(tmp_path / "log.jsonl") if '"val"' in line]
    assert [v["step"] for v in vals] == [3, 6] and all(v["val"]["loss"] > 0 for v in vals)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in r0:  # DDP kept the replicas in lock-step
        assert torch.equal(r0[k], r1[k]), k
    inv = load_inverter(tmp_path / "inverter.safetensors")
    assert all(torch.isfinite(p).all() for p in inv.encoder.parameters())
