"""Training recipes: typed, loaded from one data file, recorded with every result."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from fsarbench.config import (
    ConfigError,
    build_config,
    check_names,
    check_range,
    config_to_dict,
    load_yaml,
)
from fsarbench.episodes import MAX_EPISODES

__all__ = ["Recipe", "frozen_recipe", "RECIPES_FILE", "OMITTED_WHEN_UNSET"]

#: Fields added after records existed: left out of a recipe's dict (and so of every config
#: hash) while unset (0 or empty), so that no earlier record's identity changes.
OMITTED_WHEN_UNSET = (
    "queries_by_shot",
    "early_stage_lr",
    "milestone_factors",
    "warmup_start",
    "train_shot",
    "decay_exempt",
)

RECIPES_FILE = "frozen_recipes.yaml"


@dataclass(frozen=True)
class Recipe:
    """How a method is trained on frozen features.

    Attributes:
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        lr, weight_decay, momentum: optimiser settings.
        decay_exempt: parameters trained without weight decay: ``none``, or ``alibaba``
            (alibaba-mmai-research's optimiser, HyRSM's and CLIP-FSAR's: the parameters
            whose names hold ``bn`` or ``norm`` there; see
            :mod:`fsarbench.training.decay_groups`).
        schedule: ``constant``, ``cosine`` or ``multistep`` (``milestones`` as step fractions).
        milestone_factors: multistep only: the learning-rate factor from each milestone on
            (SlowFast's ``LRS`` after its first entry, e.g. HyRSM's Kinetics ``0.5, 0.1,
            0.05``); empty: ``0.1`` per milestone passed (``0.1, 0.01, ...``).
        warmup_steps: linear warm-up of the learning rate.
        warmup_start: the factor the warm-up starts from (SlowFast's ``WARMUP_START_LR /
            BASE_LR``): step ``s < warmup_steps`` trains at ``warmup_start + (1 -
            warmup_start) * (s + 1) / warmup_steps``; 0 = from ``1 / warmup_steps``.
        steps: optimiser steps of the method's last (or only) training stage; earlier
            stages run on top (``TrainingStage.fraction``, e.g. SGTM's stage 1).
        episodes_per_step: episodes averaged per optimiser step (gradient accumulation).
        micro_batch: episodes per forward pass (0 = all ``episodes_per_step`` at once).
        way, shot, queries: the training episodes (``shot``: the model's shot, its episodes'
            unless ``train_shot`` is set).
        train_shot: the shot of the training episodes whatever shot the model is for
            (validated at ``val_shot``): CLIP-FSAR's 5-shot configs train on 1-shot tasks
            (``SHOT: 1``, ``SHOT_TEST: 5``). 0 = ``shot``. See :attr:`episode_shot`.
        queries_by_shot: training queries per class at shot 1, 2, ... (HyRSM: 7 at 1-shot
            down to 3 at 5-shot); where it covers the training shot it gives ``queries``,
            beyond its length ``queries`` applies. Empty: ``queries`` at every shot. A recipe
            layer (file entry, ``--recipe``) that sets ``queries`` alone clears it.
        val_every, val_episodes, val_shot: validation on the val split (never the test split).
        adapter: ``linear_ln`` (trainable Linear + LayerNorm before the method) or ``none``.
        grad_clip: max gradient norm (0 = off).
        early_stage_lr: learning rate of the stages before the last (SGTM's stage 1,
            ``Φ_cls`` alone); 0 = ``lr``. A plain-SGD recipe's small rate left ``Φ_cls``
            untrained (0.4% weight change in 312 updates at 1e-4).
    """

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    decay_exempt: Literal["none", "alibaba"] = "none"
    momentum: float = 0.9
    schedule: Literal["constant", "cosine", "multistep"] = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    milestone_factors: tuple[float, ...] = ()
    warmup_steps: int = 0
    warmup_start: float = 0.0
    steps: int = 300
    episodes_per_step: int = 8
    micro_batch: int = 0
    way: int = 5
    shot: int = 1
    train_shot: int = 0
    queries: int = 3
    queries_by_shot: tuple[int, ...] = ()
    val_every: int = 50
    val_episodes: int = 300
    val_shot: int = 1
    adapter: Literal["linear_ln", "none"] = "linear_ln"
    grad_clip: float = 0.0
    early_stage_lr: float = 0.0

    def __post_init__(self) -> None:
        where = "recipe"
        for name, low in (("steps", 1), ("episodes_per_step", 1), ("way", 2), ("shot", 1)):
            check_range(where, name, getattr(self, name), low)
        for name in ("queries", "val_every", "val_shot"):
            check_range(where, name, getattr(self, name), 1)
        for name in ("micro_batch", "warmup_steps", "grad_clip", "train_shot"):
            check_range(where, name, getattr(self, name), 0)
        # a billion validation episodes hung the run while they were drawn (as --episodes did)
        check_range(where, "val_episodes", self.val_episodes, 0, MAX_EPISODES)
        check_range(where, "lr", self.lr, 0.0, 10.0)
        check_range(where, "early_stage_lr", self.early_stage_lr, 0.0, 10.0)
        if self.lr <= 0:
            raise ConfigError(f"recipe.lr = {self.lr} must be positive")
        check_range(where, "momentum", self.momentum, 0.0, 1.0)
        if self.momentum == 1.0:  # a velocity that never decays: SGD diverges
            raise ConfigError("recipe.momentum = 1.0 must be below 1 (0.9 is usual)")
        check_range(where, "weight_decay", self.weight_decay, 0.0, 1.0)  # 1e9 trained to 0
        for m in self.milestones:
            check_range(where, "milestones", m, 0.0, 1.0)
            if m in (0.0, 1.0):  # 0 cut the rate from the first step, 1 never fired
                raise ConfigError(
                    f"recipe.milestones has {m}: a milestone is a fraction of the run strictly "
                    "between 0 and 1 (0.5 = halfway); lower lr itself for a lower rate"
                )
        for q in self.queries_by_shot:
            check_range(where, "queries_by_shot", q, 1)
        self._check_schedule_shape()

    def _check_schedule_shape(self) -> None:
        """``milestone_factors`` pairs with ``milestones``; ``warmup_start`` needs a warm-up."""
        where = "recipe"
        for f in self.milestone_factors:
            check_range(where, "milestone_factors", f, 0.0, 1.0)
        if self.milestone_factors and len(self.milestone_factors) != len(self.milestones):
            raise ConfigError(
                f"recipe.milestone_factors has {len(self.milestone_factors)} value(s) for "
                f"{len(self.milestones)} milestone(s): give one factor per milestone"
            )
        if any(a >= b for a, b in zip(self.milestones, self.milestones[1:])):
            raise ConfigError(
                f"recipe.milestones {list(self.milestones)} must be strictly increasing "
                "(a repeated milestone applied two factors at one step)"
            )
        check_range(where, "warmup_start", self.warmup_start, 0.0, 1.0)
        if self.warmup_start >= 1.0:
            raise ConfigError(f"recipe.warmup_start = {self.warmup_start} must be below 1")
        if self.warmup_start and not self.warmup_steps:
            raise ConfigError(
                f"recipe.warmup_start = {self.warmup_start} applies only with warmup_steps > 0; "
                "without a warm-up set warmup_start=0 too (--recipe warmup_steps=0 "
                "warmup_start=0)"
            )

    @property
    def episode_shot(self) -> int:
        """The shot of the training episodes: ``train_shot``, else ``shot``."""
        return self.train_shot or self.shot

    def queries_at(self, shot: int) -> int:
        """Training queries per class at ``shot`` (``queries_by_shot``, else ``queries``)."""
        return self.queries_by_shot[shot - 1] if shot <= len(self.queries_by_shot) else self.queries

    def at_shot(self, shot: int, way: int | None = None) -> Recipe:
        """This recipe's model for ``shot`` (and ``way``): validated at that shot, trained on
        episodes of that shot (or ``train_shot``'s) with their shot's queries."""
        return dataclasses.replace(
            self,
            way=way or self.way,
            shot=shot,
            val_shot=shot,
            queries=self.queries_at(self.train_shot or shot),
        )

    def to_dict(self) -> dict[str, Any]:
        out = config_to_dict(self)
        # added later: unset, they leave config hashes as they were
        for name in OMITTED_WHEN_UNSET:
            if is_unset(name, getattr(self, name)):
                del out[name]
        return out

    def for_stage(self, last: bool) -> Recipe:
        """The recipe a stage's optimiser and schedule follow (``last``: the last stage)."""
        if last or not self.early_stage_lr:
            return self
        return dataclasses.replace(self, lr=self.early_stage_lr)

    def identity(self) -> dict[str, Any]:
        """What of this recipe makes its numbers (config hashes, unit names, fingerprints):
        every field."""
        return self.to_dict()


#: every Recipe field's default
RECIPE_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(Recipe) if f.default is not dataclasses.MISSING
}


def is_unset(name: str, value: Any) -> bool:
    """Whether ``value`` leaves field ``name`` (one of :data:`OMITTED_WHEN_UNSET`) unset:
    empty, zero, or its default (``decay_exempt: none``)."""
    return not value or value == RECIPE_DEFAULTS[name]


@functools.lru_cache(maxsize=1)
def _recipes_table() -> dict[str, Any]:
    text = resources.files("fsarbench.training").joinpath(RECIPES_FILE).read_text()
    return check_recipes_table(load_yaml(text) or {}, RECIPES_FILE)


def check_recipes_table(table: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a frozen recipes file: its sections, method and dataset names, and every
    recipe it composes (unknown keys and out-of-range values name the file and key)."""
    from fsarbench.data.datasets import list_datasets

    check_names(f"{where} (top level)", list(table), ["default", "methods", "datasets"])
    default = table.get("default") or {}
    build_config(Recipe, default, where=f"{where}: default")
    methods, datasets = table.get("methods") or {}, table.get("datasets") or {}
    check_names(f"{where}: methods", list(methods), method_names_and_families())
    check_names(f"{where}: datasets", list(datasets), list_datasets())
    for section, entries in (("methods", methods), ("datasets", datasets)):
        for name, values in entries.items():
            build_config(Recipe, {**default, **(values or {})}, where=f"{where}: {section}.{name}")
    return table


def method_names_and_families() -> list[str]:
    """Registered method names and their families (the part before the first ``-``)."""
    from fsarbench.registry import list_methods

    names = list_methods()
    return sorted({*names, *(n.split("-")[0] for n in names)})


def frozen_recipe(
    method: str, overrides: dict[str, Any] | None = None, *, dataset: str | None = None
) -> Recipe:
    """The frozen-track recipe of ``method`` on ``dataset``.

    Layers, later winning: the file's ``default``; the method's entry (exact name, else the
    name's prefix before the first ``-``); the dataset's entry under ``datasets``;
    ``overrides``.
    """
    table = _recipes_table()
    values = recipe_layer(table.get("default"))
    per_method = table.get("methods", {})
    family = method.split("-")[0]
    values.update(recipe_layer(per_method.get(method, per_method.get(family))))
    if dataset is not None:
        from fsarbench.data.datasets import settings_dataset

        per_dataset = table.get("datasets", {})
        layer = per_dataset.get(dataset, per_dataset.get(settings_dataset(dataset)))
        values.update(recipe_layer(layer))
    values.update(recipe_layer(overrides))
    recipe = build_config(Recipe, values, where=f"recipe of {method!r}")
    check_overrides_apply(recipe, overrides, f"recipe of {method!r}")
    return settle_shot(recipe, overrides)


#: Recipe fields that act only under one setting: (field, setting field, its values).
_CONDITIONAL_FIELDS = (
    ("momentum", "optimizer", ("sgd",)),
    ("milestones", "schedule", ("multistep",)),
    ("milestone_factors", "schedule", ("multistep",)),
)


def check_overrides_apply(recipe: Recipe, overrides: Mapping[str, Any] | None, where: str) -> None:
    """Refuse an override of a field the composed recipe does not use (``momentum`` under
    Adam, ``milestones`` without a multistep schedule): it changed no number but was noted
    as a recipe change and gave the cell a new record."""
    for name, setting, values in _CONDITIONAL_FIELDS:
        if name in (overrides or {}) and getattr(recipe, setting) not in values:
            raise ConfigError(
                f"{where}: {name} applies only with {setting} {' or '.join(values)}, and this "
                f"recipe's {setting} is {getattr(recipe, setting)!r}; set {setting} too, or "
                f"leave {name} out"
            )


def recipe_layer(layer: Mapping[str, Any] | None) -> dict[str, Any]:
    """A recipe layer (file entry or overrides) as it composes over earlier ones: one that
    sets ``queries`` without ``queries_by_shot`` means that count at every shot, so it
    clears an earlier layer's ``queries_by_shot`` (later layers win, field by field)."""
    out = dict(layer or {})
    if "queries" in out and "queries_by_shot" not in out:
        out["queries_by_shot"] = ()
    return out


def settle_shot(recipe: Recipe, overrides: Mapping[str, Any] | None) -> Recipe:
    """The fields that follow the training shot unless ``overrides`` set them: ``val_shot``
    follows an overridden ``shot`` (``train --recipe shot=1`` validated at the file's
    5-shot), and ``queries`` is ``queries_by_shot``'s for the shot."""
    overrides = overrides or {}
    changes: dict[str, Any] = {}
    if recipe.queries_by_shot:
        changes["queries"] = recipe.queries_at(recipe.episode_shot)
    if "shot" in overrides and "val_shot" not in overrides:
        changes["val_shot"] = recipe.shot
    return dataclasses.replace(recipe, **changes) if changes else recipe
