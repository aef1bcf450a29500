"""scripts/ helpers that hold a decision of their own (the GPU run's choice of GAN ops)."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
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


rescale = load_module(ROOT / "scripts/rescale_style_heads.py", "_rescale_style_heads")


def test_rescaled_style_head_scales_its_output_exactly_and_leaves_the_rest(tmp_path):
    """scripts/rescale_style_heads.py: a pSp head is convs + LeakyReLU + EqualLinear, positively homogeneous,
    so scaling layer k's weight by a and bias by a^k scales its output by a^layers; a runaway head (made here
    by scaling one head up) comes back to the median head's size and the others are untouched."""
    import torch
    from e4e.api import load
    from e4e.imageio import to_pil
    from e4e.inverter import build_inverter
    from e4e.nets.encoders import EncoderConfig
    from e4e.nets.stylegan2 import GeneratorConfig
    torch.manual_seed(0)
    inv = build_inverter(EncoderConfig(kind="psp", mode="ir", stylegan_size=32, style_dim=16, widths=(8, 8, 8, 8),
                                       units=(1, 1, 1, 1), input_size=64, head_width=8),
                         GeneratorConfig(size=32, style_dim=16, n_mlp=2, channel_max=8),
                         latent_avg=torch.randn(16), output_size=None).eval()
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    plain = inv.encode(x) - inv.latent_avg
    sd = {k: v.clone() for k, v in inv.encoder.state_dict().items()}
    layers = rescale.scale_head(sd, 3, 1e5)
    assert layers == len([k for k in sd if k.startswith("styles.3.") and k.endswith("weight")])
    inv.encoder.load_state_dict(sd)
    big = inv.encode(x) - inv.latent_avg
    torch.testing.assert_close(big[:, 3], plain[:, 3] * 1e5, rtol=1e-4, atol=1e-3)
    keep = [i for i in range(plain.shape[1]) if i != 3]
    torch.testing.assert_close(big[:, keep], plain[:, keep])
    ck, data = tmp_path / "psp.safetensors", tmp_path / "images"
    inv.save(ck)
    data.mkdir()
    for i, im in enumerate(to_pil(x)):
        im.save(data / f"{i}.png")
    out = tmp_path / "fixed.safetensors"
    assert rescale.main([str(ck), str(data), "-o", str(out)]) == 0
    norms = rescale.head_norms(load(out), x)
    assert float(norms[3]) == pytest.approx(float(norms.median()), rel=0.3)
    assert rescale.main([str(out), str(data), "-o", str(tmp_path / "again.safetensors")]) == 0
    assert not (tmp_path / "again.safetensors").exists()  # nothing runaway left: nothing written


def test_rescale_refuses_an_e4e_checkpoint_in_one_line(tmp_path, capsys):
    """An e4e (not pSp) checkpoint or an empty folder: one error line and exit 1, nothing written."""
    out = tmp_path / "x.safetensors"
    assert rescale.main([str(ROOT / "src/e4e/assets/e4e_avatar128.safetensors"), str(tmp_path), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("rescale_style_heads: error:") and "GradualStyleEncoder" in err and "\n" not in err
    assert not out.exists()


def test_gpu_test_files_reports_failures_and_goes_on(tmp_path):
    """The device driver's test step (scripts/avatar_gpu.sh gpu-tests): each file in its own pytest process,
    its exit status logged; a failing test file must not end the driver (under set -e it once did, and the
    lease's remaining steps never ran)."""
    tests = tmp_path / "t"
    tests.mkdir()
    (tests / "test_a.py").write_text("import pytest\n\n@pytest.mark.gpu\ndef test_fails():\n    assert 1 == 2\n")
    (tests / "test_b.py").write_text("import pytest\n\n@pytest.mark.gpu\ndef test_passes():\n    assert 1 == 1\n")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "TRAIN_TESTS_S": "120", "HOME": str(tmp_path),
           "GPU_TESTS_LOG": "log.txt"}
    p = subprocess.run(["bash", str(ROOT / "scripts/avatar_gpu.sh"), "gpu-tests", "t/test_a.py", "t/test_b.py"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    log = (tmp_path / "log.txt").read_text().splitlines()
    marks = [ln for ln in log if ln.startswith(("== ", "exit "))]
    assert marks == ["== t/test_a.py", "exit 1", "== t/test_b.py", "exit 0"], log
    assert any("1 failed" in ln for ln in log) and any("1 passed" in ln for ln in log)


def test_step_limits_are_cut_to_the_leases_end(tmp_path):
    """scripts/avatar_gpu.sh cap: a step's limit as given, or what is left before runs/end_at (written by
    `start` from BUDGET_S) where that is less, and never under 30 s."""
    def cap(seconds):
        p = subprocess.run(["bash", str(ROOT / "scripts/avatar_gpu.sh"), "cap", str(seconds)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return int(p.stdout)

    assert cap(900) == 900  # no end_at: no lease budget given
    (tmp_path / "runs").mkdir(exist_ok=True)
    (tmp_path / "runs/end_at").write_text(f"{int(time.time()) + 200}\n")
    assert 190 <= cap(900) <= 200
    assert cap(120) == 120
    (tmp_path / "runs/end_at").write_text(f"{int(time.time()) - 50}\n")
    assert cap(900) == 30


def test_pairs_step_passes_the_carried_perceptual_weights_and_exports_the_run(tmp_path):
    """scripts/avatar_gpu.sh pairs: bench/avatar_pairs.sh gets the carried EfficientNet-Lite0 weights (the
    device's torch has no efficientnet-lite0 package: a lease of 2026-12-08 stopped at that error) and the
    given PAIRS_ARGS, and the run's folder comes back as one tgz (to commit, or to resume from)."""
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench/avatar_pairs.sh").write_text('mkdir -p "$6/pairs"; echo "$@" > "$6/pairs/args.txt"\n')
    weights = tmp_path / ".carry/effnet/efficientnet-lite0-57934424.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"stub")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PAIRS_ARGS": "--limit 3 --kinds component"}
    p = subprocess.run(["bash", str(ROOT / "scripts/avatar_gpu.sh"), "pairs"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    args = (tmp_path / "runs/pairs_bench/pairs/args.txt").read_text().split()
    assert args[:6] == ["data/avatars", "src/e4e/assets/e4e_avatar128.safetensors",
                        "models/avatar/psp_avatar128.safetensors", "models/avatar/eval_convnet_B.safetensors",
                        "models/avatar/sim_resnet_A.safetensors", "runs/pairs_bench"]
    assert args[6:] == ["--perceptual-weights", ".carry/effnet/efficientnet-lite0-57934424.pth",
                        "--limit", "3", "--kinds", "component"]
    listed = subprocess.run(["tar", "tzf", str(tmp_path / "runs/export/pairs_bench.tgz")], capture_output=True,
                            text=True, check=True).stdout.split()
    assert "pairs/args.txt" in listed
