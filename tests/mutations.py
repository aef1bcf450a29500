"""Mutation check: does the suite catch deliberate numeric bugs? (Not part of the suite: it runs pytest
once per mutation; about a minute each on 2 CPU cores.)

Each mutation replaces one exact snippet in one file of a temporary copy of src/, then runs the tests that
should catch it (from a copy of tests/ taken at the start) against that copy (PYTHONPATH first, and
E4E_REQUIRE_FIXTURES=1 so a missing fixture cannot pass for a catch). A mutation is caught when those tests fail. A baseline run of the same tests on the unmutated
copy must pass first, so a failure is the mutation's doing.

    python tests/mutations.py          # all: a markdown table (fixtures and official data as for the suite)
    python tests/mutations.py --list   # names only
    python tests/mutations.py demod-eps-1000x r1-factor   # some
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # under src/e4e/
    old: str  # must occur exactly once
    new: str
    tests: tuple[str, ...]  # pytest node ids / files, with optional "-k EXPR" as separate items


MUTATIONS = [
    # -- the audit's bugs (issue #24) ----------------------------------------------------------------------
    Mutation("demod-eps-1000x", "ops/modconv.py", "eps: float = 1e-8", "eps: float = 1e-5",
             ("tests/test_ops.py", "tests/test_stylegan2.py", "-k", "modulated or official")),
    Mutation("flipped-blur-kernel", "ops/upfirdn2d.py",
             "weight = torch.flip(kernel, [0, 1]).to(x.dtype)", "weight = kernel.to(x.dtype)",
             ("tests/test_ops.py", "tests/test_stylegan2.py", "-k", "upfirdn2d_matches or official")),
    Mutation("flipped-blur-kernel-compiled", "ops/upfirdn2d.py",
             "k = torch.flip(kernel, [0, 1]).to(x.dtype)", "k = kernel.to(x.dtype)",
             ("tests/test_ops.py", "-k", "compiled")),
    Mutation("disc-codes-without-latent-avg", "train/e4e.py",
             "            fake_w = fake_w + self.inverter.latent_avg.unsqueeze(0)\n        if stage",
             "            pass\n        if stage",
             ("tests/test_train_e4e_step.py", "-k", "discriminator")),
    Mutation("progressive-stage-off-by-one (encoder)", "nets/encoders.py",
             "else min(int(stage), self.n_styles - 1)", "else min(int(stage) + 1, self.n_styles - 1)",
             ("tests/test_encoders.py", "-k", "official or progressive")),
    Mutation("progressive-stage-off-by-one (schedule)", "train/e4e.py",
             "return min(1 + (step - cfg.progressive_start)", "return min((step - cfg.progressive_start)",
             ("tests/test_train_e4e.py", "-k", "schedule")),
    Mutation("progressive-stage-off-by-one (adversarial styles)", "train/e4e.py",
             'dims = self.n_styles if stage == "inference" else stage + 1',
             'dims = self.n_styles if stage == "inference" else stage',
             ("tests/test_train_e4e_step.py", "-k", "encoder")),
    Mutation("delta-reg-squared", "losses.py",
             "torch.linalg.vector_norm(deltas, ord=norm, dim=2).mean(dim=0)",
             "torch.linalg.vector_norm(deltas, ord=norm, dim=2).pow(2).mean(dim=0)",
             ("tests/test_losses.py", "tests/test_train_e4e_step.py", "-k", "delta or encoder")),
    Mutation("r1-factor", "losses.py", "return gamma / 2 * penalty * every", "return gamma * penalty * every",
             ("tests/test_train_stylegan.py", "tests/test_train_e4e_step.py", "-k", "r1 or discriminator")),
    Mutation("lec-sign", "metrics.py", "w2 = encoder_fn(generator_fn(w + delta)) - delta",
             "w2 = encoder_fn(generator_fn(w + delta)) + delta", ("tests/test_metrics.py", "-k", "lec")),
    Mutation("leaky-slope (encoder heads)", "nets/encoders.py", "nn.LeakyReLU(0.01)]", "nn.LeakyReLU(0.2)]",
             ("tests/test_encoders.py", "-k", "official")),
    Mutation("leaky-slope (fused lrelu)", "ops/bias_act.py", "negative_slope: float = 0.2",
             "negative_slope: float = 0.1", ("tests/test_ops.py", "-k", "leaky")),
    Mutation("leaky-slope (latent discriminator)", "nets/discriminators.py", "nn.LeakyReLU(0.2)]",
             "nn.LeakyReLU(0.1)]", ("tests/test_discriminators.py", "-k", "latent")),
    Mutation("interfacegan-scaling", "editing/interfacegan.py", "    d = direction.to(latents)\n",
             "    d = direction.to(latents) / direction.norm()\n",
             ("tests/test_editing.py", "-k", "direction or apply_strength")),
    # -- the audit's two parity misses, against the parity tests alone (the op tests above catch them too)
    Mutation("demod-eps-1000x (parity tests only)", "ops/modconv.py", "eps: float = 1e-8", "eps: float = 1e-5",
             ("tests/test_stylegan2.py", "tests/test_checkpoints_nvidia.py", "-k", "official or ada")),
    Mutation("flipped-blur-kernel (parity tests only)", "ops/upfirdn2d.py",
             "weight = torch.flip(kernel, [0, 1]).to(x.dtype)", "weight = kernel.to(x.dtype)",
             ("tests/test_stylegan2.py", "-k", "official")),
    # -- more, same spirit -----------------------------------------------------------------------------------
    Mutation("nvidia-filter-flipped", "checkpoints/nvidia.py", "return f * 4  # NVIDIA applies",
             "return f.flip(0, 1) * 4  # NVIDIA applies",
             ("tests/test_checkpoints_nvidia.py", "-k", "asymmetric or ada")),
    Mutation("mapping-bias-without-lr-mul", "nets/layers.py", "bias = self.bias * self.lr_mul if",
             "bias = self.bias if", ("tests/test_stylegan2.py", "-k", "official_mapping")),
    Mutation("path-length-sum-over-styles", "train/stylegan.py", "lengths = grad.to(acc).pow(2).sum(2).mean(1).sqrt()",
             "lengths = grad.to(acc).pow(2).sum(2).sum(1).sqrt()", ("tests/test_train_stylegan.py", "-k", "path_length")),
    Mutation("d-logistic-fake-sign", "losses.py", "F.softplus(fake_logits).mean()",
             "F.softplus(-fake_logits).mean()",
             ("tests/test_train_stylegan.py", "tests/test_train_e4e_step.py", "-k", "logistic or discriminator")),
]


def apply(m: Mutation, src_root: Path) -> None:
    f = src_root / "e4e" / m.path
    text = f.read_text()
    n = text.count(m.old)
    if n != 1:
        raise SystemExit(f"{m.name}: {m.old!r} occurs {n} times in src/e4e/{m.path} (update tests/mutations.py)")
    f.write_text(text.replace(m.old, m.new))


def split(tests) -> tuple[list[str], str | None]:
    """(files / node ids, -k expression or None) of a mutation's test arguments."""
    tests = list(tests)
    if "-k" in tests:
        i = tests.index("-k")
        return tests[:i] + tests[i + 2:], tests[i + 1]
    return tests, None


def baseline_tests(mutations) -> list[str]:
    """One pytest selection covering every mutation's tests: the union of files, the -k expressions or'd."""
    files, exprs = [], []
    for m in mutations:
        f, k = split(m.tests)
        files += [x for x in f if x not in files]
        exprs.append(k)
    return files if None in exprs else files + ["-k", " or ".join(f"({k})" for k in exprs)]


def run_tests(tests, src_root: Path, timeout: int) -> tuple[int, str, float]:
    """pytest in the snapshot next to src_root (its tests/ and pyproject.toml), importing e4e from src_root."""
    env = dict(os.environ, PYTHONPATH=str(src_root), E4E_REQUIRE_FIXTURES="1")
    env.setdefault("E4E_FIXTURES", str(REPO.parent / "shared" / "fixtures" / "official"))
    env.setdefault("E4E_OFFICIAL_DATA", str(REPO.parent / "shared" / "official-data"))
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rf", *tests]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=src_root.parent, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timeout", time.time() - t0
    failed = re.findall(r"^FAILED (\S+)", r.stdout, re.M) or re.findall(r"^ERROR (\S+)", r.stdout, re.M)
    return r.returncode, (failed[0] if failed else r.stdout.strip().splitlines()[-1]), time.time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="mutations to run (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    ap.add_argument("--timeout", type=int, default=900)
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    if args.list:
        print("\n".join(m.name for m in chosen))
        return 0
    if args.names and len(chosen) != len(args.names):
        raise SystemExit(f"unknown mutation in {args.names}; --list shows them")
    with tempfile.TemporaryDirectory(prefix="e4e-mut-") as tmp:
        # a snapshot of the tests too, so editing them while this runs changes nothing
        shutil.copytree(REPO / "tests", Path(tmp) / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "pyproject.toml", tmp)
        src = Path(tmp) / "src"
        if not args.no_baseline:
            shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
            rc, what, secs = run_tests(baseline_tests(chosen), src, args.timeout)
            if rc != 0:
                raise SystemExit(f"baseline: the mutations' tests fail on the unmutated source: {what} (rc {rc})")
            shutil.rmtree(src)
            print(f"baseline: the tests of {len(chosen)} mutations pass on the unmutated source ({secs:.0f} s)\n",
                  flush=True)
        print("| mutation | file | caught | by (first failing test) | s |\n|---|---|---|---|---|", flush=True)
        missed = 0
        for m in chosen:
            shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
            apply(m, src)
            rc, what, secs = run_tests(m.tests, src, args.timeout)
            caught = rc not in (0, 5)  # 5: no tests collected is no catch either
            missed += not caught
            print(f"| {m.name} | src/e4e/{m.path} | {'yes' if caught else '**NO**'} | {what} | {secs:.0f} |",
                  flush=True)
            shutil.rmtree(src)
    print(f"{len(chosen) - missed}/{len(chosen)} mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
