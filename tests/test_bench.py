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
    out = tmp_path / "rows.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--device", "cpu", "--configs", "small",
                        "--tasks", "encode", "--batches", "2", "--precisions", "fp32", "--threads", "2",
                        "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["img_s"] > 0 and rows[0]["max_rel_err"] == 0.0
    assert 0 < rows[0]["floor_ratio"] < 1  # achieved rate below the measured matmul peak
    assert "| small | encode | 2 | fp32 | eager |" in r.stdout


def test_compare_runs_on_the_multigpu_logs(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import compare_runs
    runs = ROOT / "docs" / "runs" / "multigpu"
    for name in ("gpu1_seed0", "gpu2_seed0", "gpu1_seed1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "log.jsonl").write_text((runs / f"{name}.jsonl").read_text())
    compare_runs.main([str(tmp_path / "gpu1_seed0"), str(tmp_path / "gpu2_seed0"), str(tmp_path / "gpu1_seed1")])
    out = capsys.readouterr().out
    assert "speed-up 1.43x on 2 GPUs, scaling efficiency 71.3%" in out
    line = next(x for x in out.splitlines() if x.startswith("| loss (moving avg"))
    e_run, e_noise = (float(v) for v in line.split("|")[2:4])
    assert e_run < e_noise / 10  # the 2-GPU curve is far closer to the 1-GPU one than another seed is
