"""The finetune track: a backbone and a few-shot head trained end to end on decoded clips.

The model is :class:`~fsarbench.training.video_method.VideoMethod` (its per-video ``encode``
takes clips, so the evaluator, the sharded evaluator and the head's training stages work
unchanged), the data come from :mod:`fsarbench.training.clip_data`, the settings from
:mod:`fsarbench.training.finetune_recipe`; this module runs the training.

Training runs the head's stages in order. Episode ``i`` of a stage is a pure function of
(seed, stage, i); optimiser step ``s`` uses episodes ``s*n .. s*n+n-1`` (``n`` =
``episodes_per_step``), rank ``r`` of ``W`` takes the contiguous ``n/W`` of them and walks
them in micro-batches, each reseeded from its first episode index. Gradients are summed over
ranks once per step, so a W-process run takes the same steps as a 1-process run with
``micro_batch = n/W`` (to float rounding). Checkpoints are selected on the val split only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from fsarbench.data.clips import collate_clips
from fsarbench.data.forking import start_workers
from fsarbench.distributed.collectives import broadcast_module
from fsarbench.distributed.env import is_main, rank, world_size
from fsarbench.distributed.precision import select_precision
from fsarbench.distributed.sharded_eval import evaluate_sharded
from fsarbench.episodes import EpisodeSpec
from fsarbench.training.clip_data import (
    ClipSplit,
    ClipStore,
    TrainEpisodes,
    decode_workers,
    to_clip_episodes,
)
from fsarbench.training.finetune_recipe import (
    FINETUNE_RECIPES_FILE,
    FinetuneOptions,
    FinetuneRecipe,
    finetune_recipe,
)
from fsarbench.training.loop import LoopConfig, MicroBatch, TrainResult, rank_share, run_training
from fsarbench.training.prefetch import DevicePrefetcher
from fsarbench.training.recipe import Recipe
from fsarbench.training.trainer import val_manifest_for
from fsarbench.training.video_method import ClipEpisodes, VideoMethod

log = logging.getLogger(__name__)

__all__ = [
    "FinetuneOptions",
    "FinetuneRecipe",
    "finetune_recipe",
    "VideoMethod",
    "ClipSplit",
    "ClipStore",
    "ClipEpisodes",
    "build_video_method",
    "ClipSource",
    "finetune",
    "FINETUNE_RECIPES_FILE",
]


def _check_split(recipe: Recipe) -> int:
    """Micro-batch size of this rank; the global batch must split evenly (DataLoader
    batches have one size)."""
    _, per, micro = rank_share(recipe, rank(), world_size())
    if per % micro:
        raise ValueError(f"micro_batch={micro} must divide the {per} episodes of each rank")
    return micro


class ClipSource:
    """The finetune track's :class:`~fsarbench.training.loop.EpisodeSource`: episodes of
    decoded, augmented ``uint8`` clips from DataLoader workers (pinned on CUDA), this rank's
    share of each step in micro-batches of ``micro_batch`` episodes (which must divide the
    share), each copied to the device while the one before computes
    (:class:`~fsarbench.training.prefetch.DevicePrefetcher`); the model normalises them."""

    def __init__(self, split: ClipSplit, recipe: FinetuneRecipe, seed: int, device) -> None:
        self.split, self.full, self.seed, self.device = split, recipe, seed, device
        self.micro = _check_split(recipe.recipe)

    def recipe_dict(self) -> dict[str, Any]:
        return self.full.to_dict()

    def stage(self, name: str, first_step: int, steps: int) -> Iterator[list[MicroBatch]]:
        data = TrainEpisodes(self.split, self.full, self.seed, name, first_step, steps)
        loader = start_workers(
            DataLoader(
                data,
                batch_size=self.micro,
                num_workers=decode_workers(self.full.options, self.device),
                collate_fn=collate_clips,
                pin_memory=torch.device(self.device).type == "cuda",
            )
        )
        # lazily, the next micro-batch moved to the device while this one computes
        moved = DevicePrefetcher(
            (self._micro(item, data.spec) for item in loader), self._to_device, self.device
        )
        for _ in range(first_step, steps):
            yield (next(moved) for _ in range(data.per // self.micro))

    def _micro(self, item: dict[str, Any], spec: EpisodeSpec) -> MicroBatch:
        """The loader's (pinned) micro-batch, split into episodes only once on the device:
        support and query are slices that a multi-episode batch does not hold contiguously,
        and a non-contiguous host tensor is copied through pageable memory, blocking."""
        host = {k: v for k, v in item.items() if k != "episode"}
        return MicroBatch(int(item["episode"][0]), item["clips"].shape[0], (host, spec))

    def _to_device(self, micro: MicroBatch) -> MicroBatch:
        """Clips and classes to the device; colour jitter rows stay on the host (the model
        reads them there, one clip at a time, without waiting for the device)."""
        host, spec = micro.batch
        moved = {
            k: v if k.endswith("_jitter") else v.to(self.device, non_blocking=True)
            for k, v in host.items()
        }
        return MicroBatch(micro.first, micro.count, to_clip_episodes(moved, spec))


def _warn_if_chunking_saves_nothing(options: FinetuneOptions) -> None:
    """``frame_chunk`` alone bounds evaluation's memory, not training's: without
    checkpointing every chunk's activations are kept for the backward (measured on an H200:
    4% more saved bytes than no chunking, at 3.5x the step time)."""
    if options.frame_chunk and not options.checkpoint_backbone and is_main():
        log.warning(
            "frame_chunk=%d without checkpoint_backbone=true: training still keeps every "
            "frame's activations for the backward (chunking bounds evaluation's memory only); "
            "add --option checkpoint_backbone=true to bound training memory",
            options.frame_chunk,
        )


def build_video_method(
    method: str,
    options: FinetuneOptions,
    device: torch.device,
    *,
    seed: int = 0,
    num_train_classes: int | None = None,
    hparams: dict[str, Any] | None = None,
    dataset: str | None = None,
) -> VideoMethod:
    """``create_backbone(options.backbone)`` in front of registered head ``method``, both
    drawn from ``seed``, on ``device`` (with the head's presets for ``dataset``); every rank
    then holds rank 0's initial weights."""
    from fsarbench.features.backbones import create_backbone
    from fsarbench.registry import create_method, method_info

    backbone = create_backbone(
        options.backbone, weights=options.weights, seed=seed, tiny=options.tiny
    )
    features = {"backbone": options.backbone, "weights": options.weights, "tiny": options.tiny}
    derived = method_info(method).cls.backbone_hparams(features)
    torch.manual_seed(seed)
    head = create_method(
        method,
        feature_dim=backbone.feature_dim,
        seq_len=options.frames,
        num_train_classes=num_train_classes,
        dataset=dataset,
        **{**derived, **(hparams or {})},
    )
    precision = select_precision(device, amp=options.amp, channels_last=options.channels_last)
    model = VideoMethod(backbone, head, options, precision).to(device)
    broadcast_module(model)
    return model


def default_finetune_fingerprint(
    model: VideoMethod,
    train_split: ClipSplit,
    val_split: ClipSplit | None,
    recipe: FinetuneRecipe,
    seed: int,
) -> dict[str, Any]:
    """What makes a :func:`finetune` run when its caller names nothing: the model, its
    hyper-parameters and code, the recipe, the seed, and the train and val videos (ids,
    classes, sizes and modification times)."""
    from fsarbench.evaluate import method_label
    from fsarbench.features.extract import files_stamp
    from fsarbench.io import stable_hash
    from fsarbench.provenance import training_fingerprint

    def stamp(split: ClipSplit | None) -> dict[str, str] | None:
        if split is None:
            return None
        return {"files": files_stamp(split.records), "classes": stable_hash(split.classes.tolist())}

    data = {"train": stamp(train_split), "val": stamp(val_split)}
    return training_fingerprint(
        method=method_label(model),
        model=model,
        hparams=model.hparams,
        recipe=recipe.identity(),
        seed=seed,
        dataset=train_split.dataset,
        track="finetune",
        data=data,
    )


def finetune(
    model: VideoMethod,
    train_split: ClipSplit,
    val_split: ClipSplit | None,
    recipe: FinetuneRecipe,
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
    """Train ``model`` end to end, stage by stage, on every rank of the job (the one loop
    of :mod:`fsarbench.training.loop` over a :class:`ClipSource`).

    Args:
        model: a :class:`VideoMethod` (identical on every rank: see
            :func:`build_video_method`); it is left holding the best weights by val accuracy.
        out_dir: ``last.pt`` (resume point) and ``best.pt`` go there (rank 0 writes; the
            folder must be shared by the ranks of a multi-node job for resuming).
        stop_after: stop (as if interrupted) after this many steps in total — for tests.
        fingerprint: what makes this run; resuming another run's folder raises
            :class:`~fsarbench.training.loop.RunMismatchError`. ``None``:
            :func:`default_finetune_fingerprint` (any run found in ``out_dir`` was resumed).
        step_timing: time each step's phases (``LoopConfig.step_timing``; ``None``: every
            step on the CPU, one in ten on CUDA, where timing synchronises); mean seconds
            per timed step in ``result.step_times``.
    """
    device = torch.device(device)
    _warn_if_chunking_saves_nothing(recipe.options)
    if fingerprint is None and out_dir is not None:  # never resume another run's folder
        fingerprint = default_finetune_fingerprint(model, train_split, val_split, recipe, seed)
    if model.uses_class_names:
        model.train_names = train_split.class_names
    source = ClipSource(train_split, recipe, seed, device)
    manifest = val_manifest_for(val_split, recipe.recipe, seed)
    validate = None
    if manifest is not None:
        store = ClipStore(val_split, recipe.options, seed, pixels=True, device=device)

        def validate(m: VideoMethod) -> float | None:
            res = evaluate_sharded(
                m,
                store,
                manifest,
                device=device,
                encode_chunk=recipe.options.eval_chunk,
                progress=False,
                autocast=m.precision.dtype is not None,
                class_names=val_split.class_names,
            )
            return res.accuracy if res is not None else None

    cfg = LoopConfig(
        recipe=recipe.recipe,
        seed=seed,
        device=device,
        out=Path(out_dir) if out_dir is not None else None,
        resume=resume,
        progress=progress,
        stop_after=stop_after,
        fingerprint=fingerprint,
        precision=model.precision,
        desc="finetune",
        step_timing=step_timing,
    )
    return run_training(model, source, validate, cfg)
