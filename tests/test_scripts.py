"""scripts/ helpers that hold a decision of their own (the GPU run's choice of GAN ops)."""
import json
import subprocess
import sys
from pathlib import Path

from conftest import load_module

ROOT = Path(__file__).resolve().parents[1]
choose = load_module(ROOT / "scripts/choose_gan_settings.py", "_choose_gan_settings")


def _row(settings, ms, r1, pl, mode="eager"):
    return {"trainer": "gan", "mode": mode, "settings": settings, "ms_per_step": ms,
            "phases": {"D R1 (eager)": {"ms_per_step": r1}, "G path length (eager)": {"ms_per_step": pl}}}


ROWS = [_row("", 260.2, 50.0, 44.7), _row("reg_impl=gradfix", 192.5, 13.0, 13.0),
        _row("reg_impl=fold", 192.3, 12.7, 13.0), _row("reg_impl=fold main_impl=fold", 150.0, 12.7, 13.0)]


def test_long_runs_compile_with_the_fastest_regularisers():
    """Compiled main steps pay off once the run is long enough to earn back the compile wait; the
    regularisers then come from the row with the cheapest R1 + path length (main_impl rows excluded:
    compiled main steps run taps)."""
    settings, why = choose.choose(ROWS, minutes=11)
    assert settings == "reg_impl=fold"
    assert "compiled" in why[-1]


def test_measured_compiled_rows_replace_the_estimate():
    """With compiled rows in the profile (the default compile against CUDA graphs), the fastest measured
    one is what a long run trains with."""
    rows = ROWS + [_row("reg_impl=fold", 85.0, 7.0, 18.7, "compiled"),
                   _row("reg_impl=fold compile_mode=reduce-overhead", 70.0, 7.0, 18.7, "compiled")]
    settings, why = choose.choose(rows, minutes=11)
    assert settings == "reg_impl=fold compile_mode=reduce-overhead" and "measured 70 ms/step" in why[-1]
    assert choose.choose(rows, minutes=3)[0] == "reg_impl=fold main_impl=fold compile=off"  # the wait decides


def test_short_runs_stay_eager_with_the_fastest_whole_step():
    settings, _ = choose.choose(ROWS, minutes=3)
    assert settings == "reg_impl=fold main_impl=fold compile=off"


def test_no_rows_means_defaults_and_a_bad_file_is_one_line(tmp_path):
    assert choose.choose([], minutes=5)[0] == ""
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    out = subprocess.run([sys.executable, str(ROOT / "scripts/choose_gan_settings.py"), str(tmp_path / "p.jsonl"),
                          "--minutes", "11"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "reg_impl=fold"
    bad = subprocess.run([sys.executable, str(ROOT / "scripts/choose_gan_settings.py"), str(tmp_path / "none"),
                          "--minutes", "1"], capture_output=True, text=True)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "cannot read" in bad.stderr
