"""Episodic training on cached features: recipes, the trainable adapter, the trainer."""

from fsarbench.training.adapter import AdaptedMethod, FrameAdapter
from fsarbench.training.recipe import Recipe, frozen_recipe
from fsarbench.training.trainer import SplitFeatures, TrainResult, load_checkpoint, train

__all__ = [
    "AdaptedMethod",
    "FrameAdapter",
    "Recipe",
    "frozen_recipe",
    "SplitFeatures",
    "TrainResult",
    "load_checkpoint",
    "train",
]
