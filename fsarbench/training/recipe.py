"""Training recipes: typed, loaded from one data file, recorded with every result."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import yaml

from fsarbench.config import build_config, config_to_dict

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
        steps: optimiser steps over all training stages (split by ``TrainingStage.fraction``).
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

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def _recipes_table() -> dict[str, Any]:
    text = resources.files("fsarbench.training").joinpath(RECIPES_FILE).read_text()
    return yaml.safe_load(text)


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
        values.update(table.get("datasets", {}).get(dataset, {}))
    values.update(overrides or {})
    return build_config(Recipe, values, where=f"recipe of {method!r}")
