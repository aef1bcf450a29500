"""What both trainers do around their steps: the run folder, the jsonl log, the time limit.

- `claim_run_dir(out, checkpoint, resume)`: a run folder that already holds a checkpoint is continued
  only when asked (`resume=True`); otherwise one line says so, so a finished run is never overwritten
  by accident. `resume=True` on a folder without a checkpoint is an error too.
- `JsonlLog`: one JSON row per line, flushed as written; on resume the rows past the checkpoint's
  step are dropped first (`e4e.train.runs.truncate_log`: a run killed after logging but before saving
  would repeat them).
- `Deadline`: `--time-limit-min` as a host-side check (no GPU sync); under torchrun the ranks agree
  every `every` steps through one all-reduce.
"""
import json
import time
from pathlib import Path

import torch

from e4e.errors import E4EError


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
    if ck.is_file():
        raise E4EError(f"{out} already holds a run ({ck.name}): pass --resume to continue it, or choose another "
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
            from e4e.train.runs import truncate_log
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
        if info is None or info.world <= 1:
            return time.time() > self.end
        if step % self.every:
            return False
        from e4e.train import dist as D
        flag = torch.tensor(float(time.time() > self.end), device=info.device)
        return bool(D.all_reduce_mean(flag, info) > 0)
