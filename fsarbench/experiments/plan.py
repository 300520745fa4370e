"""``run --plan``: the model units a run would train, the cells each feeds, and the work.

Cells whose records the output folder already holds (made as they would be made now) are
counted apart: a unit all of whose cells are recorded is not trained again, and a unit with a
checkpoint in ``models/`` resumes (or reloads) it.

Work is counted in backbone frames: a finetune unit pushes ``steps x episodes_per_step x
way x (shot + queries) x T`` frames through the backbone forward and backward, plus its
validation passes and one extraction of the test split; a frozen unit trains on cached
features (its backbone cost is the one-off extraction of each split, shared by every unit).
GPU-hours divide training frames by an assumed throughput (frames/s forward + backward) and
extraction frames by three times that (forward only).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
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
    #: cells of ``cells`` whose current records the output folder holds
    recorded: list[Cell] = field(default_factory=list)
    #: ``models/<slug>/`` holds a checkpoint: training resumes or reloads it
    checkpoint: bool = False
    #: cells of ``cells`` whose episodes their dataset cannot serve (a run refuses them)
    infeasible: list[Cell] = field(default_factory=list)
    #: frozen track: the dataset's features are not extracted yet (planned from an outline)
    unextracted: bool = False

    @property
    def done(self) -> bool:
        """Every cell recorded: a run evaluates nothing and trains nothing for this unit."""
        return len(self.recorded) == len(self.cells)


def _frames(unit: ModelUnit, recipe: Any, data, method) -> tuple[int, int, int]:
    """``(steps, training frames, evaluation frames)`` through the backbone (the evaluator
    encodes each unique video of an evaluation once). Steps count every training stage
    (SGTM's stage 1 runs on top of the recipe's ``steps``)."""
    r = recipe if unit.track != "finetune" else recipe.recipe
    steps = sum(stage_steps(method.training_stages(), r.steps))
    if unit.track != "finetune":
        return steps, 0, 0
    o = recipe.options
    per_episode = r.way * (r.episode_shot + r.queries) * o.frames
    val_passes = math.ceil(r.steps / max(1, r.val_every)) if r.val_episodes else 0
    val_videos = min(r.val_episodes * r.way * (r.val_shot + 1), data.val_videos)
    val_frames = val_passes * val_videos * o.frames
    test_frames = len(data.test_classes) * o.frames
    return steps, steps * r.episodes_per_step * per_episode, val_frames + test_frames


def plan_cells(
    runner, cells: Iterable[Cell], infeasible: Collection[Cell] = frozenset()
) -> list[UnitPlan]:
    """The units ``runner`` would train for ``cells``. Nothing is trained or extracted: a
    frozen-track unit whose features are not extracted yet is planned from its features'
    outline (``unextracted``), and its recorded cells and checkpoint are not looked up
    (they are named by features that do not exist yet). ``infeasible``: cells whose
    episodes their dataset cannot serve
    (:func:`~fsarbench.experiments.feasibility.find_shortfalls`), marked in the plan (no
    manifest is drawn for them)."""
    from fsarbench.experiments.runner import unique_cells

    plans: dict[Any, UnitPlan] = {}
    models = Path(runner.opt.out_dir) / "models"
    for cell in unique_cells(cells):
        track, unit, recipe = runner.unit_recipe(cell)
        if track.features_ready(cell):
            p = runner.prepare(cell)
            if p.slug not in plans:
                steps, train, evals = _frames(p.unit, p.recipe, p.data, p.method)
                saved = any((models / p.slug / n).exists() for n in ("last.pt", "best.pt"))
                plans[p.slug] = UnitPlan(p.unit, [], steps, train, evals, checkpoint=saved)
            plan = plans[p.slug]
            recorded = cell not in infeasible and runner.recorded(cell, p)
        else:
            key = "unextracted:" + unit.slug([recipe.identity()])
            if key not in plans:
                method = track.plan_method(cell, recipe)
                steps = sum(stage_steps(method.training_stages(), recipe.steps))
                plans[key] = UnitPlan(unit, [], steps, unextracted=True)
            plan, recorded = plans[key], False
        plan.cells.append(cell)
        if cell in infeasible:
            plan.infeasible.append(cell)
        elif recorded:
            plan.recorded.append(cell)
    return list(plans.values())


def _hours(plan: UnitPlan, throughput: float) -> float:
    return (plan.train_frames + plan.eval_frames / FORWARD_SPEEDUP) / throughput / 3600


def print_plan(plans: list[UnitPlan], throughput: float) -> None:
    """One line per unit still to train, a count of finished ones, then the totals of the
    work left."""
    if throughput <= 0:
        raise ValueError(f"--throughput must be positive, not {throughput}")
    todo = [p for p in plans if not p.done]
    recorded = sum(len(p.recorded) for p in plans)
    left = sum(len(p.cells) - len(p.recorded) for p in todo)
    print(f"{len(todo)} model(s) to train for {left} cell(s):")
    for p in todo:
        print(_unit_line(p, throughput))
    if recorded:
        print(
            f"already recorded in the output folder: {recorded} cell(s); "
            f"{len(plans) - len(todo)} model(s) need no training"
        )
    train = sum(p.train_frames for p in todo)
    evals = sum(p.eval_frames for p in todo)
    total = sum(_hours(p, throughput) for p in todo)
    print(
        f"total: {sum(p.steps for p in todo)} optimiser steps, {train / 1e6:.2f} M backbone "
        f"training frames, {evals / 1e6:.2f} M evaluation frames; ~{total:.1f} GPU-hours at "
        f"{throughput:.0f} training frames/s (set --throughput for your GPU)"
    )
    if any(p.checkpoint for p in todo):
        print(
            "(a unit with a checkpoint in models/ resumes it, or reloads it when its training "
            "finished: the totals count its whole training)"
        )
    if todo and not train:
        print("(frozen track: backbone cost is the one-off feature extraction of each split)")
    unextracted = sorted({p.unit.dataset for p in plans if p.unextracted})
    if unextracted:
        print(
            f"features not extracted yet: {', '.join(unextracted)} (marked *): run extracts "
            "them first (of a split whose files changed, only the changed videos, where a "
            "cache of the earlier files exists); cells already recorded in the output folder "
            "and checkpoints in models/ are looked up once the features exist, so they count "
            "as work left here"
        )
    infeasible = sum(len(p.infeasible) for p in plans)
    if infeasible:
        print(
            f"INFEASIBLE: {infeasible} cell(s) (marked) need episodes their dataset's splits "
            "cannot serve; a run refuses them before any work (the error below says why)"
        )


def _unit_line(p: UnitPlan, throughput: float) -> str:
    u = p.unit
    bad = {(c.way, c.shot) for c in p.infeasible}
    feeds = ", ".join(
        sorted(
            {
                f"{c.way}w{c.shot}s" + (" INFEASIBLE" if (c.way, c.shot) in bad else "")
                for c in p.cells
            }
        )
    )
    cells = f"{len(p.cells)} cell(s) [{feeds}]"
    if p.recorded:
        cells += f", {len(p.recorded)} recorded"
    mark = "*" if p.unextracted else " "
    return (
        f" {mark}{u.name:<28} {u.dataset:<12} {u.track}/{u.protocol} trained {u.train_way}w"
        f"{u.train_shot}s seed {u.train_seed}: {p.steps} steps, "
        f"{p.train_frames / 1e6:.2f} M train frames, ~{_hours(p, throughput):.2f} GPU-h "
        f"-> {cells}" + (" (checkpoint in models/)" if p.checkpoint else "")
    )
