"""``run --plan``: the model units a run would train, the cells each feeds, and the work.

Work is counted in backbone frames: a finetune unit pushes ``steps x episodes_per_step x
way x (shot + queries) x T`` frames through the backbone forward and backward, plus its
validation passes and one extraction of the test split; a frozen unit trains on cached
features (its backbone cost is the one-off extraction of each split, shared by every unit).
GPU-hours divide training frames by an assumed throughput (frames/s forward + backward) and
extraction frames by three times that (forward only).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fsarbench.experiments.cells import Cell
from fsarbench.experiments.units import ModelUnit
from fsarbench.training.loop import stage_steps

__all__ = ["DEFAULT_THROUGHPUT", "UnitPlan", "plan_cells", "print_plan"]

#: ResNet-50, 224 px, AMP, forward + backward, one A100-class GPU (frames per second).
DEFAULT_THROUGHPUT = 800.0
FORWARD_SPEEDUP = 3.0


@dataclass
class UnitPlan:
    unit: ModelUnit
    cells: list[Cell] = field(default_factory=list)
    steps: int = 0
    train_frames: int = 0
    eval_frames: int = 0


def _frames(unit: ModelUnit, recipe: Any, data, method) -> tuple[int, int, int]:
    """``(steps, training frames, evaluation frames)`` through the backbone (the evaluator
    encodes each unique video of an evaluation once). Steps count every training stage
    (SGTM's stage 1 runs on top of the recipe's ``steps``)."""
    r = recipe if unit.track != "finetune" else recipe.recipe
    steps = sum(stage_steps(method.training_stages(), r.steps))
    if unit.track != "finetune":
        return steps, 0, 0
    o = recipe.options
    per_episode = r.way * (r.shot + r.queries) * o.frames
    val_passes = math.ceil(r.steps / max(1, r.val_every)) if r.val_episodes else 0
    val_videos = min(r.val_episodes * r.way * (r.val_shot + 1), data.val_videos)
    val_frames = val_passes * val_videos * o.frames
    test_frames = len(data.test_classes) * o.frames
    return steps, steps * r.episodes_per_step * per_episode, val_frames + test_frames


def plan_cells(runner, cells: Iterable[Cell]) -> list[UnitPlan]:
    """The units ``runner`` would train for ``cells`` (nothing is trained or extracted
    beyond what resolving a cell's data needs)."""
    from fsarbench.experiments.runner import unique_cells

    plans: dict[str, UnitPlan] = {}
    for cell in unique_cells(cells):
        p = runner.prepare(cell)
        if p.slug not in plans:
            steps, train, evals = _frames(p.unit, p.recipe, p.data, p.method)
            plans[p.slug] = UnitPlan(p.unit, [], steps, train, evals)
        plans[p.slug].cells.append(cell)
    return list(plans.values())


def _hours(plan: UnitPlan, throughput: float) -> float:
    return (plan.train_frames + plan.eval_frames / FORWARD_SPEEDUP) / throughput / 3600


def print_plan(plans: list[UnitPlan], throughput: float) -> None:
    """One line per unit, then the totals."""
    if throughput <= 0:
        raise ValueError(f"--throughput must be positive, not {throughput}")
    print(f"{len(plans)} model(s) to train for {sum(len(p.cells) for p in plans)} cell(s):")
    for p in plans:
        u = p.unit
        feeds = ", ".join(sorted({f"{c.way}w{c.shot}s" for c in p.cells}))
        print(
            f"  {u.name:<28} {u.dataset:<12} {u.track}/{u.protocol} trained {u.train_way}w"
            f"{u.train_shot}s seed {u.train_seed}: {p.steps} steps, "
            f"{p.train_frames / 1e6:.2f} M train frames, ~{_hours(p, throughput):.2f} GPU-h "
            f"-> {len(p.cells)} cell(s) [{feeds}]"
        )
    train = sum(p.train_frames for p in plans)
    evals = sum(p.eval_frames for p in plans)
    total = sum(_hours(p, throughput) for p in plans)
    print(
        f"total: {sum(p.steps for p in plans)} optimiser steps, {train / 1e6:.2f} M backbone "
        f"training frames, {evals / 1e6:.2f} M evaluation frames; ~{total:.1f} GPU-hours at "
        f"{throughput:.0f} training frames/s (set --throughput for your GPU)"
    )
    if not train:
        print("(frozen track: backbone cost is the one-off feature extraction of each split)")
