"""Whether every planned cell's episodes can be drawn, checked before any training or extraction.

A cell needs three kinds of episodes: its test episodes (the cell's way and shot, the run's
queries per class, over the test split), its model unit's training episodes (the unit
recipe's way, shot and training queries, over the train split) and the unit's validation
episodes (``val_shot``, one query, over the val split, when the recipe validates). A
setting a split could not serve used to surface mid-run, after other cells had trained for
minutes (a 20-way cell on a 14-class test split), while ``run --plan`` listed it as fine.

The pools are the videos the run would use (:meth:`FrozenTrack.pools`,
:meth:`FinetuneTrack.pools`): the finetune track's probed usable videos; the frozen track's
extracted features, or before extraction the listed videos whose files exist (the extraction
may leave out more: unreadable or too short ones, caught when that cell's episodes are drawn).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fsarbench.episodes import EpisodeSpec, Shortfall, class_pools, infeasibility
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.tracks import DatasetPools, SplitPool
from fsarbench.training.trainer import val_way_shot

__all__ = [
    "CellShortfall",
    "InfeasibleCellsError",
    "MissingClassesError",
    "check_split_classes",
    "empty_classes",
    "RUN_REMEDIES",
    "check_cells",
    "find_shortfalls",
    "infeasible_message",
]


class InfeasibleCellsError(ValueError):
    """Planned cells whose episodes their dataset's splits cannot serve (found before any
    training or extraction); the message names each setting, what its split has, the cells
    and what to do."""


class MissingClassesError(InfeasibleCellsError):
    """A class of a dataset's split list of which no video is usable (its folder renamed, in
    another case, or lost): episodes over the other classes can still be drawn, so the run
    went on and printed numbers over 9 of HMDB51's 10 test classes as HMDB51's."""


def empty_classes(runner: Any, cells: Iterable[Cell]) -> list[tuple[str, str]]:
    """``(dataset, what)`` per split the cells draw episodes from (val only where a recipe
    validates) with classes of which no listed video is usable (from the tracks' pools:
    before extraction, missing files; after, unreadable or too short ones too); nothing is
    trained or extracted."""
    from fsarbench.experiments.runner import unique_cells

    lines, seen = [], set()
    for cell in unique_cells(cells):
        track, _, recipe = runner.unit_recipe(cell)
        pools = track.pools(cell)
        for split, _ in _specs(cell, track.training_recipe(recipe), 1, pools):
            if (pools.dataset, pools.split_variant, split) in seen:
                continue
            seen.add((pools.dataset, pools.split_variant, split))
            what = _empty_classes_line(pools, split)
            lines += [(pools.dataset, what)] if what else []
    return lines


def _empty_classes_line(pools: DatasetPools, split: str) -> str | None:
    """What :func:`empty_classes` says of ``split`` of ``pools`` (``None``: every class has
    a usable video)."""
    pool = pools.splits[split]
    names = pool.class_names or []
    present = set(np.unique(pool.classes).tolist())
    empty = [name for c, name in enumerate(names) if c not in present]
    where = f"{pools.dataset} ({pools.split_variant}) {split} split"
    if not empty:
        return None
    if len(empty) == len(names):
        return (
            f"{where}: none of its listed videos is usable (left out as "
            f"{pools.left_out_causes}): is --root right?"
        )
    shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
    return (
        f"{where}: {len(empty)} of {len(names)} classes have no usable video ({shown}); its "
        f"listed videos are left out as {pools.left_out_causes}"
    )


def _data_check(dataset: str) -> str:
    """The ``data check`` command for ``dataset`` as a user types it (a real dataset needs
    its root, and the printed command failed without it)."""
    from fsarbench.data.datasets import is_synthetic

    root = "" if is_synthetic(dataset) else " --root DIR --splits-dir DIR"
    return f"'python -m fsarbench data check {dataset}{root}'"


def check_split_classes(dataset: str, split: str, classes: Any, names: list[str]) -> None:
    """Refuse a split whose class ids ``classes`` (one per usable video) leave a class of
    ``names`` without a video (``eval --dataset``: a number over the other classes).

    Raises:
        MissingClassesError: naming the classes and the ``data check`` command.
    """
    present = set(np.unique(np.asarray(classes)).tolist())
    empty = [name for c, name in enumerate(names) if c not in present]
    if empty:
        what = (
            f"{dataset} {split} split: {len(empty)} of {len(names)} classes have no usable "
            f"video ({', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''})"
        )
        raise MissingClassesError(missing_classes_message([(dataset, what)]))


def missing_classes_message(found: list[tuple[str, str]]) -> str:
    """What :class:`MissingClassesError` says for ``found`` (:func:`empty_classes`)."""
    datasets = dict.fromkeys(d for d, _ in found)
    checks = "; ".join(_data_check(d) for d in datasets)
    lines = [what for _, what in found]
    return (
        "a split list's class has no usable video, so the run would not be on the dataset's "
        "published split (its numbers would be over the other classes, under the dataset's "
        "name); nothing was run:\n  "
        + "\n  ".join(lines)
        + f"\nRestore the videos (a class folder named otherwise, e.g. in another case, is "
        f"not found), or leave the dataset out (--dataset). {checks} lists what is missing."
    )


def _shots_up_to(s: Shortfall, flag: str, extra: str = "") -> str:
    """``"<flag> up to <largest shot the smallest class serves><extra>"``, or that none does."""
    max_shot = s.smallest - s.queries
    if max_shot >= 1:
        return f"{flag} up to {max_shot}{extra}"
    return (
        f"no shot fits (its smallest class has {s.smallest} videos): leave this dataset out of "
        f"the run, or restore its videos{extra}"
    )


#: What a run user can do about a split that cannot serve a cell's episodes, per split and
#: kind of shortfall (:class:`~fsarbench.episodes.Shortfall`): options ``run`` offers.
RUN_REMEDIES: dict[str, dict[str, Callable[[Shortfall], str]]] = {
    "test": {
        "way": lambda s: f"choose --ways up to {s.classes}",
        "videos": lambda s: _shots_up_to(s, "choose --shots"),
        "setting": lambda s: "",
    },
    "train": {
        "way": lambda s: f"train at fewer ways: --recipe way=N, N up to {s.classes}",
        "videos": lambda s: _shots_up_to(
            s,
            "models train at their cells' shot (or the recipe's train_shot: --recipe "
            "train_shot=K): choose --shots",
            f", or train with fewer queries per class (--recipe queries=Q; now {s.queries})",
        ),
        "setting": lambda s: "",
    },
    "val": {
        "way": lambda s: "skip validation: --recipe val_episodes=0",
        "videos": lambda s: _shots_up_to(
            s,
            "validate at fewer shots: --recipe val_shot=K, K",
            ", or skip validation (--recipe val_episodes=0: the last step's weights are kept)",
        ),
        "setting": lambda s: "",
    },
}


@dataclass(frozen=True)
class CellShortfall:
    """Episodes ``cell`` needs from ``split`` of its dataset that the split cannot serve."""

    cell: Cell
    pools: DatasetPools
    split: str
    spec: EpisodeSpec
    shortfall: Shortfall

    @property
    def setting(self) -> str:
        """``"synth-v1-seed0 test split: 20-way 1-shot test episodes, 1 query per class"``."""
        q = self.spec.queries
        what = {"test": "test", "train": "training", "val": "validation"}[self.split]
        return (
            f"{self.pools.split_variant} {self.split} split: {self.spec.way}-way "
            f"{self.spec.shot}-shot {what} episodes, {q} quer{'y' if q == 1 else 'ies'} per class"
        )

    def problem(self) -> str:
        """What the split has, what to do (in ``run``'s options) and the videos it left out."""
        remedy = RUN_REMEDIES[self.split][self.shortfall.kind](self.shortfall)
        text = self.shortfall.problem + (f"; {remedy}" if remedy else "")
        pool = self.pools.splits[self.split]
        if pool.left_out:
            text += (
                f". {pool.left_out} listed {self.split} video(s) of {self.pools.dataset} are "
                f"left out as {self.pools.left_out_causes}: the run uses only the others "
                f"({_data_check(self.pools.dataset)} names them)"
            )
        return text


def _specs(cell: Cell, recipe: Any, queries: int, pools: DatasetPools) -> list[tuple[str, Any]]:
    """``(split, spec)`` of every kind of episodes ``cell`` needs (``recipe``: its unit's
    training :class:`~fsarbench.training.recipe.Recipe`), as the runner and the training
    loop draw them (validation: :func:`~fsarbench.training.trainer.val_manifest_for`)."""
    variant = pools.split_variant
    specs = [
        ("test", EpisodeSpec(cell.way, cell.shot, queries, cell.seed, variant, "test")),
        (
            "train",
            EpisodeSpec(
                recipe.way, recipe.episode_shot, recipe.queries, cell.train_seed, variant, "train"
            ),
        ),
    ]
    val = pools.splits.get("val")
    if val is not None and recipe.val_episodes > 0:
        classes = int(val.classes.max()) + 1 if len(val.classes) else recipe.way
        way, shot = val_way_shot(recipe, classes)
        specs.append(("val", EpisodeSpec(way, shot, 1, cell.train_seed, variant, "val")))
    return specs


def _shortfall(pool: SplitPool, spec: EpisodeSpec, cache: dict) -> Shortfall | None:
    """:func:`~fsarbench.episodes.infeasibility` of ``spec`` on ``pool``, once per pool and
    setting (the cache holds the pool, so its ``id`` is not reused meanwhile)."""
    key = (id(pool), spec.way, spec.shot, spec.queries)
    if key not in cache:
        cache[key] = (pool, infeasibility(class_pools(pool.classes), spec, pool.class_names))
    return cache[key][1]


def find_shortfalls(runner: Any, cells: Iterable[Cell]) -> list[CellShortfall]:
    """Every kind of episodes each of ``cells`` needs that its dataset cannot serve, found
    from the tracks' pools and the units' recipes (``runner``: a
    :class:`~fsarbench.experiments.runner.CellRunner`; nothing is trained or extracted)."""
    from fsarbench.experiments.runner import unique_cells

    found, cache = [], {}
    for cell in unique_cells(cells):
        track, _, recipe = runner.unit_recipe(cell)
        pools = track.pools(cell)
        for split, spec in _specs(cell, track.training_recipe(recipe), runner.opt.queries, pools):
            shortfall = _shortfall(pools.splits[split], spec, cache)
            if shortfall is not None:
                found.append(CellShortfall(cell, pools, split, spec, shortfall))
    return found


def _cell_label(cell: Cell) -> str:
    seed = f" training seed {cell.train_seed}" if cell.train_seed else ""
    return f"{cell.name} {cell.way}w{cell.shot}s{seed}"


def infeasible_message(shortfalls: list[CellShortfall], planned: int) -> str:
    """One message for all ``shortfalls``: each setting a split cannot serve once, with
    what it has, what to do and the cells that need it."""
    groups: dict[tuple, list[CellShortfall]] = {}
    for s in shortfalls:
        groups.setdefault((s.setting, s.problem()), []).append(s)
    cells = {s.cell for s in shortfalls}
    lines = [
        f"{len(cells)} of {planned} planned cell(s) need episodes their dataset's splits "
        "cannot serve (checked before any training or extraction; nothing was run):"
    ]
    for (setting, problem), members in groups.items():
        labels = ", ".join(dict.fromkeys(_cell_label(s.cell) for s in members))
        lines.append(f"  {setting}: {problem}\n    cells: {labels}")
    lines.append(
        "Leave those settings out (--ways / --shots; with --table or --all, pick the datasets "
        "with --dataset) or change the recipe as said, then run again; 'run --plan' marks them."
    )
    return "\n".join(lines)


def check_class_names_of(runner: Any, cells: list[Cell]) -> None:
    """Methods that use class names (CLIP-FSAR's prompts) refuse names they cannot use,
    from the listing, before anything is extracted or trained."""
    from fsarbench.registry import check_class_names, method_info

    for cell in cells:
        if method_info(cell.method).cls.uses_class_names:
            pools = runner.unit_recipe(cell)[0].pools(cell)
            names = [n for pool in pools.splits.values() for n in pool.class_names or []]
            check_class_names(cell.method, cell.dataset, cell.hparams_dict, names)


def check_cells(runner: Any, cells: Iterable[Cell]) -> None:
    """Refuse ``cells`` when any needs episodes its dataset cannot serve.

    Raises:
        MissingClassesError: a class of a split list has no usable video.
        InfeasibleCellsError: naming every such cell (:func:`infeasible_message`).
    """
    from fsarbench.experiments.runner import unique_cells

    cells = unique_cells(cells)
    check_class_names_of(runner, cells)
    missing = empty_classes(runner, cells)
    if missing:
        raise MissingClassesError(missing_classes_message(missing))
    shortfalls = find_shortfalls(runner, cells)
    if shortfalls:
        raise InfeasibleCellsError(infeasible_message(shortfalls, len(cells)))
