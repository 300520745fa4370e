"""``VideoMethod``: a backbone plus a few-shot head as one :class:`FewShotMethod` whose
per-video ``encode`` takes clips ``[N, T, 3, H, W]`` (backbone in chunks, optionally under
activation checkpointing, then the head's own ``encode``)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from fsarbench.data.color_jitter import NO_JITTER, apply_color_jitter
from fsarbench.data.transforms import ClipTransform, PixelNorm, TransformConfig
from fsarbench.distributed.precision import Precision
from fsarbench.methods import (
    EpisodeBatch,
    FewShotMethod,
    MethodOutput,
    TrainingStage,
    episode_class_names,
    label_classes,
    match_keywords,
)
from fsarbench.state import State
from fsarbench.training.finetune_recipe import FinetuneOptions

__all__ = ["BatchNormOptionError", "ClipEpisodes", "VideoMethod", "backbone_trainable", "is_vit"]


class BatchNormOptionError(ValueError):
    """``bn: train`` with ``frame_chunk``: a BatchNorm would normalise chunks of a support
    set apart instead of the whole set."""


def batch_norms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def running_statistics_kept(module: nn.Module) -> Iterator[None]:
    """Restore ``module``'s BatchNorm running statistics after the block: activation
    checkpointing re-runs the forward in backward, which would update them a second time."""
    saved = [
        (m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in batch_norms(module)
        if m.training and m.track_running_stats
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mean, var, count in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


@contextlib.contextmanager
def batch_norms_in_eval(module: nn.Module) -> Iterator[None]:
    """``module``'s BatchNorm layers in eval mode for the block (running statistics used and
    left alone), then back in the modes they had."""
    layers = [(m, m.training) for m in batch_norms(module)]
    for m, _ in layers:
        m.eval()
    try:
        yield
    finally:
        for m, mode in layers:
            m.train(mode)


def is_vit(backbone: nn.Module) -> bool:
    """Whether ``backbone`` (a :class:`~fsarbench.features.backbones.Backbone`) is a timm ViT."""
    from timm.models.vision_transformer import VisionTransformer

    from fsarbench.features.backbones import Backbone

    return isinstance(backbone, Backbone) and isinstance(backbone.trunk, VisionTransformer)


def backbone_trainable(backbone: nn.Module, options: FinetuneOptions) -> list[nn.Parameter]:
    """The backbone parameters the finetune track trains: all of them, or with
    ``options.train_blocks=N`` those of the last N ViT blocks and the layers after them; the
    others get ``requires_grad=False`` (no gradients, no optimiser state, less memory)."""
    from fsarbench.features.vit_presets import tail_parameters

    if options.train_blocks == 0:
        return list(backbone.parameters())
    keep = tail_parameters(backbone.trunk, options.train_blocks)
    ids = {id(p) for p in keep}
    for p in backbone.parameters():
        p.requires_grad_(id(p) in ids)
    return keep


# -- the model -------------------------------------------------------------------------------
@dataclass
class ClipEpisodes:
    """A batch of ``B`` episodes of clips: ``support [B, Ns, T, 3, H, W]``, ``query
    [B, Nq, T, 3, H, W]``, labels ``[B, Ns]``/``[B, Nq]`` and global classes alike; for
    colour-jittered roles, their jitter rows ``float64 [B, Ns|Nq, 10]``
    (:mod:`fsarbench.data.color_jitter`), which stay on the host."""

    support: Tensor
    support_labels: Tensor
    query: Tensor
    query_labels: Tensor
    support_classes: Tensor
    query_classes: Tensor
    way: int
    support_jitter: Tensor | None = None
    query_jitter: Tensor | None = None

    def to(self, device: torch.device) -> ClipEpisodes:
        kept = ("way", "support_jitter", "query_jitter")
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=True)
            for f in dataclasses.fields(self)
            if f.name not in kept
        }
        return ClipEpisodes(**moved, **{name: getattr(self, name) for name in kept})


class VideoMethod(FewShotMethod):
    """``backbone`` on every frame, then ``method``: ``encode(clips [N, T, 3, H, W])``.

    Clips are normalised float32, or ``uint8`` pixels (what the decode workers hand over),
    which it normalises with ``options.norm``'s statistics on their device."""

    def __init__(
        self,
        backbone: nn.Module,
        method: FewShotMethod,
        options: FinetuneOptions,
        precision: Precision | None = None,
    ) -> None:
        super().__init__(
            feature_dim=int(backbone.feature_dim),
            seq_len=method.seq_len,
            num_train_classes=method.num_train_classes,
            config=method.config,
        )
        self.backbone, self.inner, self.options = backbone, method, options
        self.precision = precision or Precision()
        self.pixel_norm = PixelNorm.of(options.norm)
        self.standardise = ClipTransform(TransformConfig(norm=options.norm)).standardise
        self.method_name = getattr(method, "method_name", type(method).__name__)
        self.uses_class_names = method.uses_class_names
        #: training split's class id -> name, set by the finetune loop for such heads
        self.train_names: list[str] | None = None
        if self.precision.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self._trained = backbone_trainable(backbone, options)
        self._vit_checkpointing = options.checkpoint_backbone and is_vit(backbone)
        if self._vit_checkpointing:
            backbone.trunk.set_grad_checkpointing(True)  # block by block
        self._check_batch_norm_options(backbone, options)

    @staticmethod
    def _check_batch_norm_options(backbone: nn.Module, options: FinetuneOptions) -> None:
        if options.bn == "train" and options.frame_chunk and batch_norms(backbone):
            raise BatchNormOptionError(
                f"bn=train with frame_chunk={options.frame_chunk}: the backbone's BatchNorm "
                "layers would normalise chunks of each support and query set apart instead of "
                "the whole set; drop frame_chunk (checkpoint_backbone=true alone bounds "
                "activation memory), or use --option bn=frozen"
            )

    def features(self, clips: Tensor, jitter: Tensor | None = None) -> Tensor:
        """``clips [N, T, 3, H, W]`` (float, or uint8 pixels jittered by their rows ``jitter
        [N, 10]`` where given) -> float32 frame features ``[N, T, D]``."""
        if clips.dtype == torch.uint8:
            clips = self.normalise(clips, jitter)
        elif jitter is not None:
            raise TypeError("colour jitter rows come with uint8 clips (the decode workers')")
        n, t = clips.shape[:2]
        frames = clips.flatten(0, 1)
        if self.precision.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        chunk = self.options.frame_chunk or len(frames)
        outs = [self._backbone(frames[s : s + chunk]) for s in range(0, len(frames), chunk)]
        return torch.cat(outs).float().reshape(n, t, -1)

    def normalise(self, clips: Tensor, jitter: Tensor | None = None) -> Tensor:
        """``uint8 [N, T, 3, H, W]`` -> normalised ``float32``; a clip with a jitter row that
        is on goes from ``[0, 1]`` pixels through its jitter first (in float32, as HyRSM's
        loader jitters them), the others through the lookup table."""
        if jitter is None:
            return self.pixel_norm(clips)
        if jitter.device.type != "cpu" or len(jitter) != len(clips):
            raise ValueError(
                f"colour jitter rows: one per clip, on the host (ClipEpisodes.to keeps them "
                f"there); got {len(jitter)} on {jitter.device} for {len(clips)} clips"
            )
        rows = jitter.numpy()
        on = np.flatnonzero(rows[:, 0])
        if len(on) == len(clips):  # every clip jittered: no table lookup to overwrite
            out = torch.empty(clips.shape, dtype=torch.float32, device=clips.device)
        else:
            out = self.pixel_norm(clips)
        for n in on:
            pixels = clips[n].float() / 255.0
            out[n] = self.standardise(apply_color_jitter(pixels, rows[n]))
        return out

    def _backbone(self, frames: Tensor) -> Tensor:
        whole = self.options.checkpoint_backbone and not self._vit_checkpointing
        if whole and torch.is_grad_enabled():
            return activation_checkpoint(self._once, frames, [], use_reentrant=False)
        return self.backbone(frames)

    def _once(self, frames: Tensor, calls: list[int]) -> Tensor:
        """The backbone under checkpointing: its recomputation in backward (the second call)
        gives the same outputs (train-mode BatchNorm uses the batch's statistics) and leaves
        the running statistics as the first call left them."""
        calls.append(1)
        kept = (
            running_statistics_kept(self.backbone) if len(calls) > 1 else contextlib.nullcontext()
        )
        with kept:
            return self.backbone(frames)

    def encode(self, features: Tensor) -> State:
        return self.inner.encode(self.features(features))

    def match(self, support, support_labels, query, way, **kw) -> MethodOutput:
        accepted = match_keywords(type(self.inner))
        kw = {k: v for k, v in kw.items() if k in accepted}
        return self.inner.match(support, support_labels, query, way, **kw)

    def train(self, mode: bool = True) -> VideoMethod:
        super().train(mode)
        if self.options.bn == "frozen":
            for m in batch_norms(self.backbone):
                m.eval()
        return self

    def episode_features(
        self, batch: ClipEpisodes, *, backbone_trains: bool = True
    ) -> EpisodeBatch:
        """Clips through the backbone: the :class:`EpisodeBatch` the head's stages take.

        With ``bn: train`` in training, while the backbone trains, each episode's support clips
        and then its query clips go through the backbone in calls of their own, as every
        reference calls its backbone (TRX, HyRSM, CLIP-FSAR: support, then query, one task
        per call): BatchNorm normalises with that set's statistics. In a stage that does not
        train the backbone (``backbone_trains=False``) its BatchNorm layers run in eval mode."""
        b, ns = batch.support.shape[:2]
        support, query = self._clip_features(batch, backbone_trains)
        names = None
        if self.uses_class_names:
            if self.train_names is None:
                raise ValueError("this head uses class names: set VideoMethod.train_names")
            ids = label_classes(batch.support_labels, batch.support_classes, batch.way)
            names = episode_class_names(ids, self.train_names)
        return EpisodeBatch(
            support.reshape(b, ns, *support.shape[1:]),
            batch.support_labels,
            query.reshape(b, -1, *query.shape[1:]),
            batch.query_labels,
            batch.support_classes,
            batch.query_classes,
            batch.way,
            names,
        )

    def _clip_features(self, batch: ClipEpisodes, backbone_trains: bool) -> tuple[Tensor, Tensor]:
        """``[B*Ns, T, D]`` support and ``[B*Nq, T, D]`` query frame features."""
        batch_statistics = self.training and self.options.bn == "train"
        b, ns = batch.support.shape[:2]
        if batch_statistics and backbone_trains:
            # episode by episode, its support set then its query set (as the references, and
            # micro_batch=1, call them): the running statistics are a moving average, and all
            # supports before all queries left them depending on micro_batch
            sets = [
                (self.features(s, sj), self.features(q, qj))
                for s, q, sj, qj in zip(
                    batch.support,
                    batch.query,
                    _per_episode(batch, "support"),
                    _per_episode(batch, "query"),
                )
            ]
            return torch.cat([s for s, _ in sets]), torch.cat([q for _, q in sets])
        frozen = (
            batch_norms_in_eval(self.backbone) if batch_statistics else contextlib.nullcontext()
        )
        with frozen:
            feats = self.features(
                torch.cat([batch.support.flatten(0, 1), batch.query.flatten(0, 1)]),
                _all_rows(batch),
            )
        return feats[: b * ns], feats[b * ns :]

    def training_stages(self) -> list[TrainingStage]:
        stages = self.inner.training_stages()
        return [
            self._wrap(s, self.options.train_backbone == "all" or i == len(stages) - 1)
            for i, s in enumerate(stages)
        ]

    def _wrap(self, stage: TrainingStage, with_backbone: bool) -> TrainingStage:
        def parameters():
            own = list(self._trained) if with_backbone else []
            return [*own, *stage.parameters()]

        def loss(batch: ClipEpisodes) -> dict[str, Tensor]:
            return stage.loss(self.episode_features(batch, backbone_trains=with_backbone))

        return TrainingStage(stage.name, parameters, loss, stage.fraction, stage.needs_classes)

    @property
    def hparams(self) -> dict[str, Any]:
        return self.inner.hparams


def _per_episode(batch: ClipEpisodes, role: str) -> list[Tensor | None]:
    """The colour jitter rows ``[n, 10]`` of each episode's ``role`` clips, or ``None``s."""
    rows = getattr(batch, f"{role}_jitter")
    return [None] * len(getattr(batch, role)) if rows is None else list(rows)


def _all_rows(batch: ClipEpisodes) -> Tensor | None:
    """The jitter rows of ``cat([support.flatten(0, 1), query.flatten(0, 1)])``: ``None``
    where no role is jittered, rows that leave a clip as it is for a role that is not."""
    if batch.support_jitter is None and batch.query_jitter is None:
        return None
    parts = []
    for role in ("support", "query"):
        rows = getattr(batch, f"{role}_jitter")
        if rows is None:
            rows = torch.from_numpy(NO_JITTER).expand(*getattr(batch, role).shape[:2], -1)
        parts.append(rows.flatten(0, 1))
    return torch.cat(parts)
