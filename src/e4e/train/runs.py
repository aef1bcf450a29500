"""Run folders, shared by both trainers: is there a run in this folder already, and its log.jsonl
trimmed back to the step a resume starts from.

In: a run folder (checkpoints/last.pt or best_model.pt, log.jsonl of one JSON object per line with a
"step"). Out: why the folder holds a run (or None), and a log without the rows of the steps a resume
replays, so that after a kill -9 and a resume every step is logged exactly once.
"""
import json
from pathlib import Path

from e4e.outputs import atomic_write


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
