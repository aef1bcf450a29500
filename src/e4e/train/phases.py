"""Where a training step's time goes: named phases, timed on the device without host syncs.

A trainer calls `clock.mark(name)` when the work of phase `name` has been issued (not finished): on CUDA
that records an event on the current stream, so the time between two marks is the stream's time for the
work issued between them (kernels, plus any gap while the host was still launching them); on the CPU,
where work runs as it is issued, it is the wall time. Nothing waits until `totals()` is read.

Every trainer holds `NO_PHASES` by default (a mark costs one attribute lookup); bench/train_profile.py
swaps in a `PhaseClock` to split steps into their phases (D main / R1 / G main / path length / EMA for
`e4e train-generator`; latent D / encoder objective / backward / optimizer for `e4e train`).
"""
import time
from collections import defaultdict

import torch


class NoPhases:
    def mark(self, name: str) -> None:
        pass

    def start(self) -> None:
        pass


NO_PHASES = NoPhases()


class PhaseClock:
    """start() opens a step; mark(name) closes phase `name` (the work issued since the previous mark)."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self._marks: list[tuple[str | None, object]] = []

    def _now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self) -> None:
        self._marks.append((None, self._now()))

    def mark(self, name: str) -> None:
        if not self._marks:
            self.start()
        self._marks.append((name, self._now()))

    def totals(self) -> dict[str, float]:
        """-> seconds per phase name, summed over every step since the clock was made (syncs once)."""
        if self.cuda:
            torch.cuda.synchronize()
        out: dict[str, float] = defaultdict(float)
        for (_, a), (name, b) in zip(self._marks, self._marks[1:]):
            if name is None:  # a start(): the gap between steps belongs to no phase
                continue
            out[name] += a.elapsed_time(b) / 1e3 if self.cuda else b - a
        return dict(out)
