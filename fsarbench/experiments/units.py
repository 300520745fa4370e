"""Model units: the trained models a set of cells needs, each with the cells it feeds.

A unit is one training run: (method, hyper-parameters, dataset, track, protocol, train way,
train shot, training seed). By default a cell's model is trained at the cell's shot and at
5-way (the recipe's way), as TRX, HyRSM and MoLo train one model per shot; an N-way cell
(Table 6) evaluates the 5-way model of its shot. ``share_shots`` trains one model per
setting at the recipe's shot and lets it feed every shot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fsarbench.experiments.cells import Cell
from fsarbench.io import stable_hash

__all__ = ["ModelUnit", "ShotOverrideError", "unit_for", "unit_recipe", "group_units"]


class ShotOverrideError(ValueError):
    """``--recipe shot=K`` for a unit trained at another shot (the grid sets a unit's
    training shot): refused, as it would be dropped."""


@dataclass(frozen=True)
class ModelUnit:
    """One trained model; ``slug`` names its folder under ``OUT/models``."""

    method: str
    hparams: tuple[tuple[str, Any], ...]
    dataset: str
    track: str
    protocol: str
    train_way: int
    train_shot: int
    train_seed: int

    @property
    def name(self) -> str:
        """The method name results carry (with its overrides)."""
        if not self.hparams:
            return self.method
        return self.method + "[" + ",".join(f"{k}={v}" for k, v in self.hparams) + "]"

    def slug(self, config: Any = None) -> str:
        """Folder name: the unit's fields, plus a hash of ``config`` (the recipe and data the
        run was made with) so a changed recipe never resumes another run's folder."""
        return (
            f"{self.method}__{self.dataset}__{self.track}-{self.protocol}__"
            f"{self.train_way}w{self.train_shot}s__s{self.train_seed}__"
            + stable_hash([self.hparams, config], 10)
        )


def unit_for(cell: Cell, *, recipe_way: int, recipe_shot: int, share_shots: bool) -> ModelUnit:
    """The unit whose model ``cell`` evaluates: trained at the recipe's way and at the
    cell's shot (or the recipe's shot when ``share_shots``)."""
    return ModelUnit(
        method=cell.method,
        hparams=cell.hparams,
        dataset=cell.dataset,
        track=cell.track,
        protocol=cell.protocol,
        train_way=recipe_way,
        train_shot=recipe_shot if share_shots else cell.shot,
        train_seed=cell.train_seed,
    )


def unit_recipe(recipe: Any, unit: ModelUnit, overrides: Mapping[str, Any]) -> Any:
    """The frozen-style recipe (:class:`~fsarbench.training.recipe.Recipe`) ``unit`` trains
    with: ``recipe`` at the unit's way and shot, validated at that shot with that shot's
    training queries (``Recipe.at_shot``), except what ``overrides`` (``--recipe``) set.

    An overridden ``val_shot`` is kept (recorded in the recipe, so the config hash and the
    tables' recipe-change note name it). An overridden ``shot`` holds only for a unit
    trained at that shot (``share_shots``, or cells of that shot): elsewhere the run trains
    at the cell's shot, and the override would be dropped without a word.

    Raises:
        ShotOverrideError: ``overrides`` sets a ``shot`` this unit does not train at.
    """
    if "shot" in overrides and recipe.shot != unit.train_shot:
        raise ShotOverrideError(
            f"--recipe shot={recipe.shot} cannot apply to {unit.name} on {unit.dataset}: a run "
            f"trains one model per shot, at its cells' shot ({unit.train_shot} here), so the "
            "grid sets the training shot, not the recipe. To train one model at "
            f"{recipe.shot}-shot and evaluate every shot with it, add "
            "--share-model-across-shots; to evaluate other shots, choose them with --shots"
        )
    trained = recipe.at_shot(unit.train_shot, unit.train_way)
    if "val_shot" in overrides:
        trained = dataclasses.replace(trained, val_shot=recipe.val_shot)
    return trained


def group_units(cells: Iterable[Cell], units: Iterable[ModelUnit]) -> dict[ModelUnit, list[Cell]]:
    """``{unit: [cells it feeds]}`` in first-seen order, for parallel lists of cells and
    their units."""
    out: dict[ModelUnit, list[Cell]] = {}
    for cell, unit in zip(cells, units):
        out.setdefault(unit, []).append(cell)
    return out
