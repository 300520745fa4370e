"""Where a training step's time goes: waiting for the next micro-batch ("data"), the loss
("forward"), ``backward`` and the optimiser step ("optimizer"), accumulated over steps.

On CUDA, kernels run asynchronously, so a phase's wall time means something only if the
device is synchronised at its ends: :class:`StepTimer` does that on the steps it times, and
``every=N`` times one step in ``N`` (the 2nd, the (N+2)th, ...: the first step also holds the
loader's start-up), so a long GPU run gets its breakdown for a few synchronisations; on the
CPU timing costs two clock reads per phase.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

__all__ = ["PHASES", "StepTimer", "format_step_times"]

PHASES = ("data", "forward", "backward", "optimizer")
T = TypeVar("T")


class StepTimer:
    """Accumulates seconds per phase over the steps it times (``steps`` of the ``seen``);
    a disabled timer does nothing.

    Args:
        enabled: time steps at all.
        device: synchronised at phase ends when it is a CUDA device.
        every: time one step in ``every`` (``1``: each step).
    """

    def __init__(
        self, enabled: bool, device: torch.device | str = "cpu", *, every: int = 1
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.enabled, self.every = enabled, every
        self.sync = enabled and torch.device(device).type == "cuda"
        self.device = torch.device(device)
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.total = 0.0
        self.steps = 0  # steps timed
        self.seen = 0  # steps started
        self._on = False  # timing the current step
        self._step_start: float | None = None

    def _now(self) -> float:
        if self.sync:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` (one of :data:`PHASES`)."""
        if not self._on:
            yield
            return
        t0 = self._now()
        try:
            yield
        finally:
            self.seconds[name] += self._now() - t0

    def wrap(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, each ``next`` timed as phase ``"data"`` (waiting for the batch)."""
        it = iter(items)
        while True:
            with self.phase("data"):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item

    def start_step(self) -> None:
        self._on = self.enabled and self.seen % self.every == min(1, self.every - 1)
        self.seen += 1
        if self._on:
            self._step_start = self._now()

    def end_step(self) -> None:
        if self._on and self._step_start is not None:
            self.total += self._now() - self._step_start
            self.steps += 1
            self._step_start = None
        self._on = False

    def per_step(self) -> dict[str, float]:
        """Mean seconds per step of each phase, ``"other"`` (the rest: validation,
        checkpoints, loss bookkeeping) and ``"total"``; empty before the first step."""
        if not self.steps:
            return {}
        out = {k: v / self.steps for k, v in self.seconds.items()}
        out["other"] = max(0.0, self.total / self.steps - sum(out.values()))
        out["total"] = self.total / self.steps
        return out


def format_step_times(per_step: dict[str, float], steps: int | None = None) -> str:
    """One log line: ``step time 812 ms = data 40 (5%) + forward 310 (38%) + ...``."""
    if not per_step:
        return "step time: not measured"
    total = per_step["total"]
    parts = [
        f"{k} {1e3 * per_step[k]:.0f} ({100 * per_step[k] / total if total else 0:.0f}%)"
        for k in (*PHASES, "other")
    ]
    over = "" if steps is None else f" over {steps} steps"
    return f"step time{over}: {1e3 * total:.0f} ms = " + " + ".join(parts) + " (ms per step)"
