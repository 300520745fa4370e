"""Per-step time breakdown of the training loop and the one-ahead device prefetcher."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import torch

from fsarbench.training.prefetch import DevicePrefetcher, tensors_of
from fsarbench.training.timing import PHASES, StepTimer, format_step_times


def test_timer_accumulates_phases_and_waiting_for_items() -> None:
    timer = StepTimer(True)

    def slow_items():
        for i in range(2):
            time.sleep(0.02)
            yield i

    for _ in range(2):
        timer.start_step()
        assert list(timer.wrap(slow_items())) == [0, 1]
        with timer.phase("backward"):
            time.sleep(0.01)
        timer.end_step()
    per = timer.per_step()
    assert timer.steps == 2
    assert 0.04 <= per["data"] < 0.5 and 0.01 <= per["backward"] < 0.5
    assert per["forward"] == per["optimizer"] == 0.0
    assert per["total"] == pytest.approx(sum(per[k] for k in (*PHASES, "other")))
    line = format_step_times(per)
    assert line.startswith("step time: ") and "data " in line and "optimizer 0 (0%)" in line


def test_disabled_timer_measures_nothing() -> None:
    timer = StepTimer(False, "cuda")  # never touches CUDA when disabled
    timer.start_step()
    with timer.phase("forward"):
        pass
    timer.end_step()
    assert timer.per_step() == {} and format_step_times({}) == "step time: not measured"


@dataclass
class _Batch:
    x: torch.Tensor
    parts: dict


def test_prefetcher_moves_one_item_ahead_in_order() -> None:
    moved: list[int] = []

    def move(b: _Batch) -> _Batch:
        moved.append(int(b.x))
        return _Batch(b.x + 100, b.parts)

    batches = (_Batch(torch.tensor(i), {"y": [torch.zeros(1)]}) for i in range(3))
    it = DevicePrefetcher(batches, move, "cpu")
    first = next(it)
    assert int(first.x) == 100 and moved == [0, 1]  # item 1 moved before item 0 is used
    assert [int(b.x) for b in it] == [101, 102] and moved == [0, 1, 2]
    assert len(tensors_of(first)) == 2
    assert list(DevicePrefetcher(iter([]), move, "cpu")) == []


def test_sampled_timer_times_one_step_in_n_from_the_second() -> None:
    """``every=3`` times steps 2, 5, 8, ... (the first also holds the loader's start-up);
    phases of the other steps are not measured."""
    timer = StepTimer(True, every=3)
    timed = []
    for _ in range(7):
        timer.start_step()
        before = timer.seconds["forward"]
        with timer.phase("forward"):
            time.sleep(0.005)
        timer.end_step()
        timed.append(timer.seconds["forward"] > before)
    assert timed == [False, True, False, False, True, False, False]
    assert (timer.steps, timer.seen) == (2, 7)
    assert 0.005 <= timer.per_step()["forward"] < 0.5
    with pytest.raises(ValueError, match="every must be >= 1"):
        StepTimer(True, every=0)


def test_loop_times_every_step_on_cpu_and_one_in_ten_on_cuda() -> None:
    from fsarbench.training.loop import CUDA_TIMING_EVERY, LoopConfig
    from fsarbench.training.recipe import Recipe

    def timer(device: str, step_timing):
        return LoopConfig(Recipe(), device=torch.device(device), step_timing=step_timing).timer()

    assert (timer("cpu", None).enabled, timer("cpu", None).every) == (True, 1)
    assert (timer("cuda", None).every, timer("cuda", True).every) == (CUDA_TIMING_EVERY, 1)
    assert not timer("cuda", False).enabled and not timer("cpu", False).enabled
