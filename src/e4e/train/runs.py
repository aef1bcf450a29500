"""Run folders and what both trainers do around their steps.

- `existing_run(exp, checkpoints)`: why a folder already holds a training run (a checkpoint or log
  rows), else None; `claim_run_dir(out, checkpoint, resume)` turns that into the trainers' rule: an
  existing run is continued only when asked (`resume=True`), otherwise one line says so, so a run is never
  overwritten by accident; `resume=True` on a folder without a checkpoint is an error too.
- `truncate_log(path, step)` / `JsonlLog`: log.jsonl, one JSON object per line with a "step"; on resume
  the rows of the steps a resume replays (and a torn last line) are dropped first, so that after a kill -9
  and a resume every step is logged exactly once.
- `Deadline`: `--time-limit-min` as a host-side check (no GPU sync); under torchrun the ranks agree
  every `every` steps through one all-reduce.
- `COMPILE_MODES` / `graphed(mode)`: the torch.compile modes both trainers take for their compiled
  steps, and whether a mode replays CUDA graphs (then a step's outputs live in the graphs' memory, which the
  next step overwrites: a trainer copies out what it keeps).
"""
import json
import time
from pathlib import Path

import torch

from e4e.errors import E4EError
from e4e.outputs import atomic_write


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's names


def graphed(mode: str) -> bool:
    return mode in ("reduce-overhead", "max-autotune")


def truncate_log(path: Path, step: int) -> None:
    """Keep the log rows of steps <= step: after a resume (or a kill -9 between a log row and the next
    checkpoint) the rows of the replayed steps would otherwise appear twice. A torn last line goes too."""
    if not path.is_file():
        return
    keep, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and int(row.get("step", 0)) <= step
        except (ValueError, TypeError):
            ok = False
        if ok:
            keep.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write(path, lambda f: f.write("".join(f"{line}\n" for line in keep)), mode="w")


def existing_run(exp: Path, checkpoints=("checkpoints/last.pt", "checkpoints/best_model.pt")) -> str | None:
    """Why `exp` already holds a training run (one of its checkpoint files, or log rows), else None."""
    exp = Path(exp)
    for name in checkpoints:
        if (exp / name).is_file():
            return name
    log = exp / "log.jsonl"
    if log.is_file() and log.stat().st_size:
        return "log.jsonl (no checkpoint yet)"
    return None


def claim_run_dir(out, checkpoint: str, resume: bool, main: bool = True) -> Path | None:
    """-> the checkpoint to resume from, or None for a fresh run (the folder is created)."""
    out = Path(out)
    ck = out / checkpoint
    if out.exists() and not out.is_dir():
        raise E4EError(f"{out}: exists and is not a folder")
    if resume:
        if not ck.is_file():
            raise E4EError(f"--resume: {ck} not found (nothing to resume; drop --resume to start a run there)")
        return ck
    held = existing_run(out, (checkpoint,))
    if held:
        raise E4EError(f"{out} already holds a run ({held}): pass --resume to continue it, or choose another "
                       "output folder")
    if main:
        out.mkdir(parents=True, exist_ok=True)
    return None


class JsonlLog:
    def __init__(self, path, resume_step: int | None = None, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        self._f = None
        if not enabled:
            return
        if resume_step is not None:
            truncate_log(self.path, resume_step)  # also drops a line cut by a kill
        self._f = open(self.path, "a")

    def write(self, row: dict) -> None:
        if self._f is not None:
            self._f.write(json.dumps(row) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class Deadline:
    def __init__(self, minutes: float, every: int = 10):
        self.end = time.time() + minutes * 60 if minutes and minutes > 0 else float("inf")
        self.every = max(1, every)

    def passed(self, step: int, info=None) -> bool:
        if self.end == float("inf"):
            return False
        if info is None or info.world <= 1:
            return time.time() > self.end
        # ranks must agree on the step they stop at; the agreement costs a GPU sync, so ask every `every` steps
        if step % self.every:
            return False
        from e4e.train import dist as D
        flag = torch.tensor(float(time.time() > self.end), device=info.device)
        return bool(D.all_reduce_mean(flag, info) > 0)
