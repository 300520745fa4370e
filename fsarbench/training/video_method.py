"""``VideoMethod``: a backbone plus a few-shot head as one :class:`FewShotMethod` whose
per-video ``encode`` takes clips ``[N, T, 3, H, W]`` (backbone in chunks, optionally under
activation checkpointing, then the head's own ``encode``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from fsarbench.data.transforms import PixelNorm
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

__all__ = ["ClipEpisodes", "VideoMethod", "backbone_trainable", "is_vit"]


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
    [B, Nq, T, 3, H, W]``, labels ``[B, Ns]``/``[B, Nq]`` and global classes alike."""

    support: Tensor
    support_labels: Tensor
    query: Tensor
    query_labels: Tensor
    support_classes: Tensor
    query_classes: Tensor
    way: int

    def to(self, device: torch.device) -> ClipEpisodes:
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=True)
            for f in dataclasses.fields(self)
            if f.name != "way"
        }
        return ClipEpisodes(**moved, way=self.way)


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

    def features(self, clips: Tensor) -> Tensor:
        """``clips [N, T, 3, H, W]`` (float, or uint8 pixels) -> float32 frame features
        ``[N, T, D]``."""
        if clips.dtype == torch.uint8:
            clips = self.pixel_norm(clips)
        n, t = clips.shape[:2]
        frames = clips.flatten(0, 1)
        if self.precision.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        chunk = self.options.frame_chunk or len(frames)
        outs = [self._backbone(frames[s : s + chunk]) for s in range(0, len(frames), chunk)]
        return torch.cat(outs).float().reshape(n, t, -1)

    def _backbone(self, frames: Tensor) -> Tensor:
        whole = self.options.checkpoint_backbone and not self._vit_checkpointing
        if whole and torch.is_grad_enabled():
            return activation_checkpoint(self.backbone, frames, use_reentrant=False)
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
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def episode_features(self, batch: ClipEpisodes) -> EpisodeBatch:
        """Clips through the backbone: the :class:`EpisodeBatch` the head's stages take."""
        b, ns = batch.support.shape[:2]
        feats = self.features(torch.cat([batch.support.flatten(0, 1), batch.query.flatten(0, 1)]))
        support, query = feats[: b * ns], feats[b * ns :]
        names = None
        if self.uses_class_names:
            if self.train_names is None:
                raise ValueError("this head uses class names: set VideoMethod.train_names")
            ids = label_classes(batch.support_labels, batch.support_classes, batch.way)
            names = episode_class_names(ids, self.train_names)
        return EpisodeBatch(
            support.reshape(b, ns, *feats.shape[1:]),
            batch.support_labels,
            query.reshape(b, -1, *feats.shape[1:]),
            batch.query_labels,
            batch.support_classes,
            batch.query_classes,
            batch.way,
            names,
        )

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
            return stage.loss(self.episode_features(batch))

        return TrainingStage(stage.name, parameters, loss, stage.fraction, stage.needs_classes)

    @property
    def hparams(self) -> dict[str, Any]:
        return self.inner.hparams
