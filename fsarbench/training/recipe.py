"""Training recipes: typed, loaded from one data file, recorded with every result."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import yaml

from fsarbench.config import ConfigError, build_config, check_names, check_range, config_to_dict

__all__ = ["Recipe", "frozen_recipe", "RECIPES_FILE"]

RECIPES_FILE = "frozen_recipes.yaml"


@dataclass(frozen=True)
class Recipe:
    """How a method is trained on frozen features.

    Attributes:
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        lr, weight_decay, momentum: optimiser settings.
        schedule: ``constant``, ``cosine`` or ``multistep`` (``milestones`` as step fractions).
        warmup_steps: linear warm-up of the learning rate.
        steps: optimiser steps of the method's last (or only) training stage; earlier
            stages run on top (``TrainingStage.fraction``, e.g. SGTM's stage 1).
        episodes_per_step: episodes averaged per optimiser step (gradient accumulation).
        micro_batch: episodes per forward pass (0 = all ``episodes_per_step`` at once).
        way, shot, queries: the training episodes.
        val_every, val_episodes, val_shot: validation on the val split (never the test split).
        adapter: ``linear_ln`` (trainable Linear + LayerNorm before the method) or ``none``.
        grad_clip: max gradient norm (0 = off).
    """

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: Literal["constant", "cosine", "multistep"] = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    warmup_steps: int = 0
    steps: int = 300
    episodes_per_step: int = 8
    micro_batch: int = 0
    way: int = 5
    shot: int = 1
    queries: int = 3
    val_every: int = 50
    val_episodes: int = 300
    val_shot: int = 1
    adapter: Literal["linear_ln", "none"] = "linear_ln"
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        where = "recipe"
        for name, low in (("steps", 1), ("episodes_per_step", 1), ("way", 2), ("shot", 1)):
            check_range(where, name, getattr(self, name), low)
        for name in ("queries", "val_every", "val_shot"):
            check_range(where, name, getattr(self, name), 1)
        for name in ("micro_batch", "val_episodes", "warmup_steps", "weight_decay", "grad_clip"):
            check_range(where, name, getattr(self, name), 0)
        check_range(where, "lr", self.lr, 0.0, 10.0)
        if self.lr <= 0:
            raise ConfigError(f"recipe.lr = {self.lr} must be positive")
        check_range(where, "momentum", self.momentum, 0.0, 1.0)
        for m in self.milestones:
            check_range(where, "milestones", m, 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def identity(self) -> dict[str, Any]:
        """What of this recipe makes its numbers (config hashes, unit names, fingerprints):
        every field."""
        return self.to_dict()


@functools.lru_cache(maxsize=1)
def _recipes_table() -> dict[str, Any]:
    text = resources.files("fsarbench.training").joinpath(RECIPES_FILE).read_text()
    return check_recipes_table(yaml.safe_load(text) or {}, RECIPES_FILE)


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
    values = dict(table.get("default", {}))
    per_method = table.get("methods", {})
    family = method.split("-")[0]
    values.update(per_method.get(method, per_method.get(family, {})))
    if dataset is not None:
        from fsarbench.data.datasets import settings_dataset

        per_dataset = table.get("datasets", {})
        values.update(per_dataset.get(dataset, per_dataset.get(settings_dataset(dataset), {})))
    values.update(overrides or {})
    return build_config(Recipe, values, where=f"recipe of {method!r}")
