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


def tiny_finetune_track(synth, cache, *, recipe: dict[str, Any] | None = None, **track: Any):
    """A run's finetune track over the opened dataset ``synth`` with :func:`tiny_recipe`'s
    settings (``recipe``: its recipe overrides; the shot is the run's, so none is passed),
    caches under ``cache``; ``track`` overrides FinetuneTrack's other arguments."""
    from fsarbench.experiments.runner import FinetuneTrack

    tiny = tiny_recipe(recipe=recipe)
    settings = {
        "root": None,
        "cache_root": cache,
        "recipe_overrides": {k: v for k, v in tiny["recipe"].items() if k != "shot"},
        "option_overrides": tiny["options"],
        "device": "cpu",
        "progress": False,
        "open_dataset": lambda name: synth,
    }
    return FinetuneTrack(**{**settings, **track})
