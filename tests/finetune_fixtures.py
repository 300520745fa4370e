"""Settings shared by the finetune tests: a tiny synth and a tiny recipe (2 steps, 16 px)."""

from __future__ import annotations

from typing import Any

from fsarbench.data.synth import SynthConfig

TINY_SYNTH = SynthConfig(videos_per_class=4, size=32, min_frames=10, max_frames=12)


def tiny_recipe(*, recipe: dict[str, Any] | None = None, options: dict[str, Any] | None = None):
    """Finetune overrides (``{"recipe": ..., "options": ...}``) small enough for a unit test:
    SGD, 2 steps of 2 three-way 1-shot episodes, ResNet-18 (random init) on 2 frames of 16 px."""
    return {
        "recipe": {
            "optimizer": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "schedule": "constant",
            "steps": 2,
            "episodes_per_step": 2,
            "micro_batch": 1,
            "way": 3,
            "shot": 1,
            "queries": 1,
            **(recipe or {}),
        },
        "options": {
            "backbone": "resnet18",
            "weights": "none",
            "frames": 2,
            "resize": 32,
            "crop": 16,
            "workers": 0,
            **(options or {}),
        },
    }
