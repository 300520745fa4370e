"""The frozen track's data for the one training loop (:mod:`fsarbench.training.loop`):
episodes of cached features. Every training episode is derived from (seed, stage, episode
index) like test episodes, so a run resumed from its last checkpoint reaches bit-identical
weights on the CPU. Checkpoints are selected on the val split only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsarbench.distributed.env import rank, world_size
from fsarbench.episodes import (
    EpisodeDrawer,
    EpisodeSpec,
    ManifestError,
    check_feasible,
    class_pools,
    make_manifest,
)
from fsarbench.evaluate import evaluate
from fsarbench.features.store import FeatureStore
from fsarbench.guards import NonFiniteLogitsError, check_finite_features
from fsarbench.methods import EpisodeBatch, FewShotMethod, episode_class_names
from fsarbench.training.loop import (
    LoopConfig,
    MicroBatch,
    RunMismatchError,
    TrainResult,
    is_val_step,
    load_checkpoint,
    load_resume,
    lr_factor,
    make_optimizer,
    only_trainable,
    rank_share,
    run_training,
    save_checkpoint,
    stage_steps,
    step_seed,
)
from fsarbench.training.recipe import Recipe

__all__ = [
    "FeatureSource",
    "SplitFeatures",
    "TrainResult",
    "RunMismatchError",
    "train",
    "load_checkpoint",
    "stage_steps",
    "is_val_step",
    "load_resume",
    "lr_factor",
    "make_optimizer",
    "only_trainable",
    "save_checkpoint",
    "step_seed",
    "val_manifest_for",
]

log = logging.getLogger(__name__)


@dataclass
class SplitFeatures:
    """Features of one split and the class id of each video (``0..C-1`` within the split)."""

    store: FeatureStore
    classes: np.ndarray
    dataset: str = ""
    class_names: list[str] | None = None  # class id -> name (for uses_class_names methods)

    @property
    def num_classes(self) -> int:
        if len(self.classes) == 0:
            raise ManifestError(
                f"the {self.dataset or 'dataset'} split has no usable videos: check the data "
                "root (--root / $FSAR_DATA) and 'python -m fsarbench data check'"
            )
        return int(self.classes.max()) + 1


class EpisodeSampler:
    """Training episodes of one stage, each a pure function of its index."""

    def __init__(
        self, data: SplitFeatures, recipe: Recipe, seed: int, stage: str, names: bool = False
    ) -> None:
        if names and data.class_names is None:
            raise ValueError(
                "this method uses class names but the training split has none "
                "(SplitFeatures.class_names)"
            )
        self.data, self.names = data, names
        self.spec = EpisodeSpec(
            recipe.way, recipe.episode_shot, recipe.queries, seed, data.dataset, f"train/{stage}"
        )
        self.pools = class_pools(np.asarray(data.classes))
        # the recipe's way/shot/queries against this split, before any step: a named class
        # and its counts instead of numpy's "larger sample than population" mid-run
        check_feasible(self.pools, self.spec, data.class_names)
        self.class_ids = np.array(sorted(self.pools))
        self.draw = EpisodeDrawer(self.pools, self.class_ids, self.spec)
        self.views = int(getattr(data.store, "num_views", 1))
        self.view_key = EpisodeSpec(
            recipe.way, recipe.episode_shot, recipe.queries, seed, data.dataset, f"views/{stage}"
        ).key()

    def batch(self, first: int, count: int, device: torch.device) -> EpisodeBatch:
        eps = [self.draw(i) for i in range(first, first + count)]
        classes = np.stack([e[0] for e in eps])
        videos = np.stack([np.concatenate([e[1], e[2]]) for e in eps])  # [B, Ns+Nq]
        feats = self._features(videos, first).to(device)
        sp = self.spec
        ns = sp.way * sp.shot
        s_lab = np.repeat(np.arange(sp.way), sp.shot)
        q_lab = np.repeat(np.arange(sp.way), sp.queries)
        lab = torch.as_tensor(np.concatenate([s_lab, q_lab]), device=device).expand(count, -1)
        glob = torch.as_tensor(classes, device=device).gather(1, lab)
        return EpisodeBatch(
            feats[:, :ns],
            lab[:, :ns].clone(),
            feats[:, ns:],
            lab[:, ns:].clone(),
            glob[:, :ns],
            glob[:, ns:],
            sp.way,
            episode_class_names(classes, self.data.class_names) if self.names else None,
        )

    def _features(self, videos: np.ndarray, first: int) -> torch.Tensor:
        flat = videos.reshape(-1)
        if self.views > 1:
            rngs = [
                np.random.Generator(np.random.Philox(key=self.view_key, counter=(first + b) << 128))
                for b in range(videos.shape[0])
            ]
            views = np.concatenate([r.integers(self.views, size=videos.shape[1]) for r in rngs])
            feats = self.data.store.get(flat, views)
        else:
            feats = self.data.store.get(flat)
        check_finite_features(feats, flat, self.data.store)  # NaN would train on to a NaN loss
        return feats.reshape(*videos.shape, *feats.shape[1:])


class FeatureSource:
    """The frozen track's :class:`~fsarbench.training.loop.EpisodeSource`: episodes of
    cached features, this rank's share of each step in micro-batches."""

    def __init__(
        self, data: SplitFeatures, recipe: Recipe, seed: int, device, names: bool = False
    ) -> None:
        self.data, self.recipe, self.seed, self.device = data, recipe, seed, device
        self.names = names  # fill EpisodeBatch.class_names
        self.offset, self.per, self.micro = rank_share(recipe, rank(), world_size())

    def stage(self, name: str, first_step: int, steps: int) -> Iterator[list[MicroBatch]]:
        sampler = EpisodeSampler(self.data, self.recipe, self.seed, name, self.names)
        n = self.recipe.episodes_per_step
        for step in range(first_step, steps):
            yield self._micro(sampler, step * n + self.offset)

    def _micro(self, sampler: EpisodeSampler, first: int) -> Iterator[MicroBatch]:
        for j in range(0, self.per, self.micro):
            count = min(self.micro, self.per - j)
            yield MicroBatch(first + j, count, sampler.batch(first + j, count, self.device))


def train(
    method: FewShotMethod,
    train_data: SplitFeatures,
    val_data: SplitFeatures | None,
    recipe: Recipe,
    *,
    seed: int = 0,
    out_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    fingerprint: dict[str, Any] | None = None,
    step_timing: bool | None = None,
) -> TrainResult:
    """Train ``method`` stage by stage on episodes of ``train_data`` (the one loop of
    :mod:`fsarbench.training.loop` over a :class:`FeatureSource`).

    Args:
        method: the (possibly adapter-wrapped) method; it is left holding the best weights.
        val_data: validation split; the best checkpoint by val accuracy is kept.
        out_dir: where ``last.pt`` (resume point) and ``best.pt`` go; ``None`` keeps nothing.
        stop_after: stop (as if interrupted) after this many steps in total — for tests.
        fingerprint: what makes this run (hyper-parameters, recipe, seed, data, code),
            stored in the checkpoints; resuming from ``out_dir`` with another one raises
            :class:`RunMismatchError` naming the differing fields. ``None``:
            :func:`default_fingerprint` (a folder of another method's or recipe's run was
            resumed silently).
        step_timing: time each step's phases (``LoopConfig.step_timing``; ``None``: every
            step on the CPU, one in ten on CUDA, where timing synchronises); mean seconds
            per timed step in ``result.step_times``.
    """
    device = torch.device(device)
    if fingerprint is None:  # never resume another method's, recipe's or seed's run
        fingerprint = default_fingerprint(method, train_data, recipe, seed, val_data)
    manifest = val_manifest_for(val_data, recipe, seed)
    validate = None
    if manifest is not None:

        def validate(model: FewShotMethod) -> float:
            names = val_data.class_names if model.uses_class_names else None
            try:
                result = evaluate(
                    model, val_data.store, manifest, progress=False, class_names=names
                )
            except NonFiniteLogitsError as err:  # --nonfinite is for test episodes
                raise NonFiniteLogitsError(
                    f"while validating (val split episodes, which choose the checkpoint): "
                    f"{err.where}. --nonfinite applies to test episodes only: a checkpoint is "
                    "chosen by finite validation logits, so fix the method (it gives NaN/inf "
                    "in eval mode on these validation features; 'python -m fsarbench "
                    "check-method NAME' runs its contract checks)"
                ) from err
            return result.accuracy

    cfg = LoopConfig(
        recipe=recipe,
        seed=seed,
        device=device,
        out=Path(out_dir) if out_dir is not None else None,
        resume=resume,
        progress=progress,
        stop_after=stop_after,
        fingerprint=fingerprint,
        step_timing=step_timing,
    )
    source = FeatureSource(train_data, recipe, seed, device, names=method.uses_class_names)
    return run_training(method, source, validate, cfg)


def default_fingerprint(
    method: FewShotMethod,
    train_data: SplitFeatures,
    recipe: Recipe,
    seed: int,
    val_data: SplitFeatures | None = None,
) -> dict[str, Any]:
    """What makes a run of :func:`train` when its caller names nothing: the method, its
    hyper-parameters and code, the recipe, the seed, and the train and val features (their
    shape and :func:`features_digest`: another dataset's run of the same shape was resumed,
    keeping a step chosen on the other val split)."""
    from fsarbench.evaluate import method_label
    from fsarbench.provenance import training_fingerprint

    return training_fingerprint(
        method=method_label(method),
        model=method,
        hparams=method.hparams,
        recipe=recipe.identity(),
        seed=seed,
        dataset=train_data.dataset,
        track="frozen",
        data={
            "train_videos": len(train_data.classes),
            "feature_shape": list(train_data.store.feature_shape),
            "train_digest": features_digest(train_data),
            "val_digest": features_digest(val_data) if val_data is not None else None,
        },
    )


def features_digest(data: SplitFeatures, rows: int = 32) -> str:
    """A digest of ``data``'s classes and the features of up to ``rows`` evenly spaced
    videos (``[rows, T, D]`` read, not the whole store): what tells one split from another
    of the same shape without reading gigabytes."""
    n = len(data.classes)
    picked = np.unique(np.linspace(0, n - 1, num=min(rows, n)).round().astype(np.int64))
    digest = hashlib.sha256(np.ascontiguousarray(data.classes, dtype=np.int64).tobytes())
    if n:
        digest.update(data.store.get(picked).float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def val_way_shot(recipe: Recipe, num_classes: int) -> tuple[int, int]:
    """``(way, shot)`` of validation episodes over a val split of ``num_classes`` classes
    (one query per class): the recipe's way, capped at the split's classes, at ``val_shot``."""
    return min(recipe.way, num_classes), recipe.val_shot


#: What an infeasible validation setting tells the user to do (``train``/``run`` options).
VAL_REMEDIES = {
    "videos": "validation episodes are val_shot-shot (val_shot follows the training shot "
    "unless set): set --recipe val_shot=K with K + 1 up to {smallest}, the val split's "
    "smallest class, or val_episodes=0 to train without validation",
}


def val_manifest_for(val_data, recipe: Recipe, seed: int):
    """The validation episodes of ``recipe`` over ``val_data`` (``None``: no validation).

    Raises:
        MissingClassesError: a class of the val split's list has no usable video (its
            files exist but none decoded): selection would be over the other classes.
    """
    if val_data is None or recipe.val_episodes <= 0:
        return None
    if val_data.class_names is not None:
        from fsarbench.experiments.feasibility import check_split_classes

        check_split_classes(val_data.dataset, "val", val_data.classes, val_data.class_names)
    way, shot = val_way_shot(recipe, val_data.num_classes)
    if way < recipe.way:
        log.warning(
            "validation episodes are %d-way, not the recipe's %d-way: the val split has %d "
            "classes; the checkpoint is chosen on %d-way accuracy",
            way,
            recipe.way,
            val_data.num_classes,
            way,
        )
    return make_manifest(
        val_data.classes,
        way=way,
        shot=shot,
        queries=1,
        episodes=recipe.val_episodes,
        seed=seed,
        dataset=val_data.dataset,
        split="val",
        remedies=VAL_REMEDIES,
    )
