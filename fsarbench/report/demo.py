"""Small synthetic result folders for trying (and testing) the reporting commands.

:func:`write_demo_records` evaluates registered methods on random class-structured features
with :func:`fsarbench.evaluate` and saves real records, so every reporting path (paired tests,
tables, leaderboard, figures) runs on exactly what the experiment runner writes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsarbench.episodes import make_manifest
from fsarbench.evaluate import evaluate
from fsarbench.registry import create_method
from fsarbench.results import ResultRecord, make_record, save_result

__all__ = ["DemoSystem", "demo_features", "write_demo_records"]


@dataclass(frozen=True)
class DemoSystem:
    """A record name, the registered method behind it, its hyper-parameters, and how much
    extra feature noise it sees (more noise, lower accuracy)."""

    name: str
    method: str = "protonet"
    hparams: dict[str, Any] = field(default_factory=dict)
    noise: float = 0.0
    train_seeds: tuple[int | None, ...] = (None,)
    tags: dict[str, Any] = field(default_factory=dict)
    record_hparams: dict[str, Any] = field(default_factory=dict)  # recorded, not passed on


def demo_features(
    classes: int = 12,
    per_class: int = 8,
    seq_len: int = 4,
    dim: int = 16,
    seed: int = 0,
    spread: float = 2.5,
) -> tuple[torch.Tensor, np.ndarray]:
    """``[classes*per_class, seq_len, dim]`` features (unit-normal class mean + ``spread`` times
    unit noise per frame) and their class ids."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, 1, dim, generator=g)
    labels = np.repeat(np.arange(classes), per_class)
    feats = means[labels] + spread * torch.randn(len(labels), seq_len, dim, generator=g)
    return feats, labels


def _noisy(feats: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    if noise == 0:
        return feats
    g = torch.Generator().manual_seed(10_000 + seed)
    return feats + noise * torch.randn(feats.shape, generator=g)


def write_demo_records(
    run_dir: str | Path,
    systems: list[DemoSystem],
    settings: list[tuple[int, int]] = ((5, 1), (5, 5)),
    *,
    dataset: str = "synth",
    episodes: int = 200,
    seed: int = 0,
    track: str = "frozen",
    protocol: str = "seed",
    train_shot: int | None = None,
) -> list[ResultRecord]:
    """Evaluate every system in every ``(way, shot)`` setting and save the records (as runs
    of ``track`` and frame ``protocol``, by models trained at each setting's shot, or at
    ``train_shot`` for every setting: one model shared across shots)."""
    feats, labels = demo_features(seed=seed)
    out = []
    for way, shot in settings:
        manifest = make_manifest(
            labels,
            way=way,
            shot=shot,
            queries=1,
            episodes=episodes,
            seed=seed,
            dataset=dataset,
            split="test",
        )
        for sys in systems:
            for i, train_seed in enumerate(sys.train_seeds):
                method = create_method(
                    sys.method, feature_dim=feats.shape[-1], seq_len=feats.shape[1], **sys.hparams
                )
                noise_seed = (train_seed or 0) * 7919 + i + zlib.crc32(sys.name.encode()) % 1000
                result = evaluate(
                    method, _noisy(feats, sys.noise, noise_seed), manifest, progress=False
                )
                record = make_record(
                    result,
                    method=sys.name,
                    dataset=dataset,
                    split_variant=dataset,
                    manifest=manifest,
                    hparams={**sys.hparams, **sys.record_hparams, "demo_noise": sys.noise},
                    train_seed=train_seed,
                    track=track,
                    protocol=protocol,
                    features={"protocol": protocol},
                    recipe={"way": 5, "shot": train_shot or shot},
                    train_way=5,
                    train_shot=train_shot or shot,
                    tags={"synthetic": True, **sys.tags},
                )
                save_result(run_dir, record, result)
                out.append(record)
    return out
