"""The benchmark scripts keep working: a CPU smoke run of bench.py, and compare_runs.py on the committed
2-GPU logs (docs/runs/multigpu)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_cpu_smoke(tmp_path):
    """The row reports what was asked for and numbers that agree with each other and with a FLOP count made
    here; the printed table carries the JSON row's values. (Its max_rel_err is fp32 eager against itself
    on this run, 0 by construction, so it is not checked here; test_fast checks the fast paths' error.)"""
    out = tmp_path / "rows.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--device", "cpu", "--configs", "small",
                        "--tasks", "encode", "--batches", "2", "--precisions", "fp32", "--threads", "2",
                        "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["config"], row["task"], row["batch"], row["precision"], row["mode"]) == (
        "small", "encode", 2, "fp32", "eager")
    assert row["img_s"] > 0 and row["ms_img"] == pytest.approx(1000 / row["img_s"], rel=1e-9)
    assert row["tflop_s"] == pytest.approx(row["gflop_img"] * row["img_s"] / 1000, rel=1e-9)
    assert 0 < row["floor_ratio"] < 1  # achieved rate below the measured matmul peak

    import torch
    from torch.utils.flop_counter import FlopCounterMode
    sys.path.insert(0, str(ROOT / "bench"))
    import bench
    from e4e.inverter import build_inverter
    ecfg, gcfg, size = bench.CONFIGS["small"]
    inv = build_inverter(ecfg, gcfg, latent_avg=torch.zeros(1, gcfg.style_dim)).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        inv.encode(torch.rand(2, 3, size, size))
    assert row["gflop_img"] == pytest.approx(fc.get_total_flops() / 2 / 1e9, rel=1e-9)

    table = [line for line in r.stdout.splitlines() if line.startswith("| small | encode |")]
    assert len(table) == 1
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    assert cells[:6] == ["small", "encode", "2", "fp32", "eager", "grouped"]
    assert float(cells[6]) == pytest.approx(row["img_s"], abs=0.051)
    assert float(cells[9]) == pytest.approx(row["gflop_img"], abs=0.051)


def test_compare_runs_on_the_multigpu_logs(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import compare_runs
    runs = ROOT / "docs" / "runs" / "multigpu"
    for name in ("gpu1_seed0", "gpu2_seed0", "gpu1_seed1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "log.jsonl").write_text((runs / f"{name}.jsonl").read_text())
    compare_runs.main([str(tmp_path / "gpu1_seed0"), str(tmp_path / "gpu2_seed0"), str(tmp_path / "gpu1_seed1")])
    out = capsys.readouterr().out
    # the steady-state rate, computed here from the logs: steps/time between the first logged step >= 50
    # (the script's --skip default) and the last
    def rate(name):
        rows = [json.loads(x) for x in (runs / f"{name}.jsonl").read_text().splitlines()]
        rows = sorted((r["step"], r["time_s"]) for r in rows if "val" not in r and r["step"] >= 50)
        return (rows[-1][0] - rows[0][0]) / (rows[-1][1] - rows[0][1])
    speed_up = rate("gpu2_seed0") / rate("gpu1_seed0")
    assert 1 < speed_up < 2
    assert f"speed-up {speed_up:.2f}x on 2 GPUs, scaling efficiency {speed_up / 2:.1%}" in out
    line = next(x for x in out.splitlines() if x.startswith("| loss (moving avg"))
    e_run, e_noise = (float(v) for v in line.split("|")[2:4])
    assert e_run < e_noise / 10  # the 2-GPU curve is far closer to the 1-GPU one than another seed is


@pytest.mark.slow
def test_official_bench_control_flow_on_cpu(tmp_path, monkeypatch, capsys):
    """official_bench.main end to end without a GPU: our small model stands in for the official code,
    CUDA timing/memory calls are stubbed, child processes answer a fixed row. Checks every row is made
    (or skipped by the budget), the reference error of the strict-fp32 row is 0, and the table prints."""
    import torch
    sys.path.insert(0, str(ROOT / "bench"))
    import official_bench as ob
    from bench import CONFIGS
    from e4e.inverter import build_inverter
    ecfg, gcfg, size = CONFIGS["small"]

    def build_models(root, dev):
        torch.manual_seed(0)
        ours = build_inverter(ecfg, gcfg, latent_avg=torch.randn(1, gcfg.style_dim)).eval()
        return (lambda x: ours(x, resize=False)[0]), ours

    monkeypatch.setattr(ob, "build_models", build_models)
    monkeypatch.setattr(ob, "batch_input", lambda b, dev: torch.rand(b, 3, size, size) * 2 - 1)
    monkeypatch.setattr(ob, "matmul_peak", lambda dev, p: 1e12)
    monkeypatch.setattr(ob, "time_fn", lambda fn, dev, **kw: (fn(), 0.01)[1])
    monkeypatch.setattr(ob, "run_child", lambda args, spec, **kw: dict(s_img=0.01) if spec["kind"] == "cpu" else dict(
        img_s=1.0, ms_img=1.0, peak_gib=0.0, first_call_s=1.0, err=0.0, tflop_s=0.0, bf16_floor=0.0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, lambda *a: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "stub")
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["official_bench.py", "--official", str(tmp_path), "--batches", "2", "8",
                                      "--official-max-batch", "2", "--json", str(out), "--device", "cpu"])
    ob.main()
    rows = json.loads(out.read_text())["rows"]
    cases = [r["case"] for r in rows]
    assert cases.count("official, its default (TF32 convs)") == 1  # batch 2 only
    assert cases.count("ours, no flags (default)") == 2 and cases.count("ours, bf16 + triton") == 2
    assert sum("own process" in c for c in cases) == 2 and cases[-1].startswith("ours, CPU")
    assert all(r["err"] == 0.0 for r in rows if r["case"] == "ours, fp32 strict")
    assert all("failed" not in r for r in rows)
    assert "| ours, no flags (default) | 8 |" in capsys.readouterr().out


@pytest.mark.slow
def test_train_bench_cpu_smoke(tmp_path):
    """bench/train_bench.py runs both impls of the GAN trainer on the tiny config: one JSON row each, with
    rates that agree with each other and a FLOP count shared by both (it counts the same arithmetic)."""
    out = tmp_path / "rows.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "train_bench.py"), "--device", "cpu", "--configs", "tiny",
                        "--impls", "reference", "fast", "--warmup", "1", "--steps", "2", "--images", "16",
                        "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(x["config"], x["impl"], x["batch"]) for x in rows] == [("tiny", "reference", 4), ("tiny", "fast", 4)]
    for x in rows:
        assert x["images_per_s"] == pytest.approx(x["steps_per_s"] * 4, rel=1e-9)
        assert x["ms_per_step"] == pytest.approx(1000 / x["steps_per_s"], rel=1e-9)
        assert x["flops_per_step"] > 0
        assert x["tflops"] == pytest.approx(x["flops_per_step"] * x["steps_per_s"] / 1e12, rel=1e-9)
        assert 0 < x["floor_share"] < 1  # below the matmul peak measured in the same run
    assert rows[0]["flops_per_step"] == rows[1]["flops_per_step"]
    assert "| gan | tiny | fast | 4 |" in r.stdout


@pytest.mark.slow
def test_train_bench_e4e_rows_on_cpu(tmp_path):
    """bench/train_bench.py's e4e rows on the tiny config, in-process: the e4e trainer's train_step fed by
    its batches(), every row (reference fp32, reference bf16, fast bf16; compile off) with a positive
    finite rate that agrees with itself, whole R1 cycles timed, one FLOP count shared by every row."""
    import math

    sys.path.insert(0, str(ROOT / "bench"))
    import train_bench
    rows = train_bench.e4e_rows("cpu", ["tiny"], warmup=1, steps=2, peak=1e12, root=tmp_path, compile="off")
    assert [(r["trainer"], r["config"], r["impl"], r["bf16"]) for r in rows] == [
        ("e4e", "tiny", "reference", False), ("e4e", "tiny", "reference", True), ("e4e", "tiny", "fast", True)]
    for r in rows:
        assert math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0
        assert r["images_per_s"] == pytest.approx(r["steps_per_s"] * r["batch"], rel=1e-9)
        assert r["ms_per_step"] == pytest.approx(1000 / r["steps_per_s"], rel=1e-9)
        assert r["steps"] % train_bench.E4E_CONFIGS["tiny"]["train"]["d_reg_every"] == 0
        assert r["flops_per_step"] > 0
        assert r["tflops"] == pytest.approx(r["flops_per_step"] * r["steps_per_s"] / 1e12, rel=1e-9)
        assert r["first_step_s"] > 0 and r["compile"] == "off"
        assert r["last_loss"] is not None and math.isfinite(r["last_loss"])
    assert len({r["flops_per_step"] for r in rows}) == 1


def test_train_profile_helpers():
    """Kernel classes (inductor names its kernels after the ops it fuses, so Triton wins over
    'convolution'), the busy time as a union of overlapping intervals, and typed --gan-set settings."""
    sys.path.insert(0, str(ROOT / "bench"))
    import train_profile as tp
    assert tp.kernel_class("triton_poi_fused_add_convolution_mul_0") == "Triton (inductor-fused)"
    assert tp.kernel_class("sm90_xmma_fprop_implicit_gemm_bf16bf16") == "convolution (cuDNN, depthwise)"
    assert tp.kernel_class("void at::native::conv_depthwise2d_forward_kernel") == "convolution (cuDNN, depthwise)"
    assert tp.kernel_class("nvjet_hsh_256x128_64x4_2x1_v_bz_coopA_NTN") == "matmul (cuBLAS/CUTLASS)"
    assert tp.kernel_class("void at::native::multi_tensor_apply_kernel<FusedAdam>") == "optimizer (fused/foreach)"
    assert tp.kernel_class("void at::native::vectorized_elementwise_kernel<4>") == "elementwise (eager ATen)"
    assert tp.kernel_class("Memset (Device)") == "memcpy / memset"
    assert tp.kernel_class("something_else") == "other"
    assert tp.busy_time([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == 4
    assert tp.busy_time([]) == 0
    assert tp.parse_settings("channels_last=true reg_bf16=0 batch=32") == {
        "channels_last": True, "reg_bf16": False, "batch": 32}
    from e4e.train.e4e import E4ETrainConfig
    assert tp.parse_settings("compile_mode=reduce-overhead batch_size=4", E4ETrainConfig) == {
        "compile_mode": "reduce-overhead", "batch_size": 4}


@pytest.mark.slow
def test_train_profile_cpu_smoke(tmp_path):
    """Both trainers' steps split into their marked phases on the CPU; the phases account for the step."""
    out = tmp_path / "rows.jsonl"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "train_profile.py"), "--device", "cpu",
                        "--gan-configs", "tiny", "--e4e-configs", "tiny", "--modes", "eager", "--cycles", "1",
                        "--warmup", "1", "--root", str(tmp_path / "w"), "--json", str(out),
                        "--e4e-set", "compile_mode=reduce-overhead"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["trainer"], x["config"], x["mode"]) for x in rows] == [("gan", "tiny", "eager"), ("e4e", "tiny", "eager")]
    gan, e4e = rows
    assert e4e["settings"] == "compile_mode=reduce-overhead"  # eager on CPU: the setting is carried, not used
    assert {"D R1 (eager)", "G path length (eager)", "G main: forward"} <= set(gan["phases"])
    assert set(e4e["phases"]) == {"latent D: codes (mapping, encoder, pools)", "latent D: loss + Adam",
                                  "latent D: R1", "encoder objective: forward", "encoder objective: backward",
                                  "Ranger"}
    for x in rows:
        assert x["phase_ms_sum"] <= x["ms_per_step"] * 1.001
        assert x["phase_ms_sum"] >= 0.7 * x["ms_per_step"]
        assert sum(p["share"] for p in x["phases"].values()) == pytest.approx(1)
        assert "| phase | ms/step | share |" in r.stdout
