"""Clip transforms: resize, crop, flip and normalise ``uint8 [T, H, W, 3]`` frames into
``float32 [T, 3, H', W']`` — the train and test pipelines of PROTOCOL.md as named presets.

Resizing runs on uint8 frames (torch's antialiased bilinear kernel, rounded to integers) and
only the crop is converted to float. One random crop and one flip decision apply to every
frame of a clip; randomness comes from
the ``numpy.random.Generator`` passed in, so clips are reproducible per (seed, video, epoch).

The two halves can run apart: :meth:`ClipTransform.pixels` gives the uint8 crop (what
DataLoader workers hand over: a quarter of float32's bytes through shared memory, pinning
and the host-to-GPU copy) and :class:`PixelNorm` finishes it on any device with a 256-entry
table per channel, whose values are the float path's own, so both give identical clips.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "NORMS",
    "PRESETS",
    "ClipTransform",
    "PixelNorm",
    "TransformConfig",
    "get_transform",
]

NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "none": None,  # TRX: 0-1 pixels
    "hyrsm": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # OpenAI CLIP's statistics: the CLIP image towers (fsarbench.features.vit_presets)
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


@dataclass(frozen=True)
class TransformConfig:
    """One pipeline.

    Attributes:
        resize: target of the resize step (pixels); 0 keeps the decoded size.
        resize_mode: ``short`` (short side to ``resize``, aspect kept) or ``square``.
        crop: output side; 0 means no crop.
        random_crop: random crop position (train) instead of the centre (test).
        flip: random horizontal flip with probability 0.5 (train; off for SSv2).
        norm: ``none``, ``hyrsm``, ``imagenet`` or ``clip``.
    """

    resize: int = 256
    resize_mode: Literal["short", "square"] = "short"
    crop: int = 224
    random_crop: bool = False
    flip: bool = False
    norm: Literal["none", "hyrsm", "imagenet", "clip"] = "none"


class ClipTransform:
    """Callable ``(frames uint8 [T,H,W,3], rng) -> float32 [T,3,crop,crop]``."""

    def __init__(self, config: TransformConfig):
        if config.norm not in NORMS:
            raise ValueError(f"unknown normalisation {config.norm!r}; choose from {list(NORMS)}")
        self.config = config
        stats = NORMS[config.norm]
        self._mean = None if stats is None else torch.tensor(stats[0]).view(1, 3, 1, 1)
        self._std = None if stats is None else torch.tensor(stats[1]).view(1, 3, 1, 1)
        self._stats_on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"ClipTransform({self.config})"

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        h, w = x.shape[-2:]
        if c.resize <= 0:
            return x
        if c.resize_mode == "square":
            size = (c.resize, c.resize)
        else:
            scale = c.resize / min(h, w)
            size = (max(c.resize, round(h * scale)), max(c.resize, round(w * scale)))
        if size == (h, w):
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)

    def _crop(self, x: torch.Tensor, rng: np.random.Generator | None) -> torch.Tensor:
        c = self.config
        h, w = x.shape[-2:]
        if c.crop <= 0:
            return x
        if c.crop > min(h, w):
            raise ValueError(f"crop {c.crop} is larger than the resized frame {h}x{w}")
        if c.random_crop:
            top, left = (
                int(_rng(rng).integers(0, h - c.crop + 1)),
                int(_rng(rng).integers(0, w - c.crop + 1)),
            )
        else:
            top, left = (h - c.crop) // 2, (w - c.crop) // 2
        return x[..., top : top + c.crop, left : left + c.crop]

    def pixels(self, frames: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        """``frames uint8 [T, H, W, 3]`` -> the resized, cropped (and flipped) clip as
        ``uint8 [T, 3, crop, crop]``, not yet normalised (see :meth:`pixel_norm`)."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [T, H, W, 3], got shape {tuple(frames.shape)}")
        # uint8 all the way to the crop: torch resizes uint8 channels-last frames natively
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        x = self._crop(self._resize(x), rng)
        if self.config.flip and _rng(rng).random() < 0.5:
            x = x.flip(-1)
        return x.contiguous()

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``uint8 [..., 3, H, W]`` -> ``float32`` pixels in ``[0, 1]``, standardised by the
        preset's statistics (the reference arithmetic, on ``x``'s device)."""
        return self.standardise(x.float() / 255.0)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """``float32 [..., 3, H, W]`` pixels in ``[0, 1]`` standardised by the preset's
        statistics (on ``x``'s device); the identity under ``norm: none``."""
        if self._mean is not None:
            mean, std = self._statistics(x.device)
            x = (x - mean) / std
        return x

    def _statistics(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std ``[1, 3, 1, 1]`` on ``device``, copied there once (a copy from pageable
        host memory waits for the device: once per jittered clip, it stalled training)."""
        if device not in self._stats_on:
            self._stats_on[device] = (self._mean.to(device), self._std.to(device))
        return self._stats_on[device]

    def pixel_norm(self) -> PixelNorm:
        """The normalisation as a table lookup for :meth:`pixels`' output."""
        levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256)
        return PixelNorm(self.normalise(levels).reshape(3, 256))

    def __call__(self, frames: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        return self.normalise(self.pixels(frames, rng)).contiguous()


class PixelNorm:
    """Normalises ``uint8 [..., 3, H, W]`` clips to ``float32`` on their own device by looking
    each value up in ``table [3, 256]`` (:meth:`ClipTransform.pixel_norm`): exactly the
    values :class:`ClipTransform` computes on the CPU, on every device."""

    def __init__(self, table: torch.Tensor) -> None:
        if table.shape != (3, 256) or table.dtype != torch.float32:
            raise ValueError(
                f"table must be float32 [3, 256], got {table.dtype} {list(table.shape)}"
            )
        self.table = table
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def of(cls, norm: str) -> PixelNorm:
        """The table of normalisation ``norm`` (a name of :data:`NORMS`)."""
        return ClipTransform(TransformConfig(norm=norm)).pixel_norm()  # type: ignore[arg-type]

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.dtype != torch.uint8:
            raise TypeError(
                f"PixelNorm takes uint8 clips (ClipOptions(pixels=True)), got {clips.dtype}"
            )
        if clips.dim() < 3 or clips.shape[-3] != 3:
            raise ValueError(f"clips must be [..., 3, H, W], got {list(clips.shape)}")
        table, channel = self._on_device(clips.device)
        # int32 positions (index_select takes them; torch.take needs int64): half the bytes
        # of the index temporary, and ~1.9x faster than take on the CPU
        index = clips.to(torch.int32, memory_format=torch.contiguous_format)
        index += channel
        return table.index_select(0, index.view(-1)).view(clips.shape)

    def _on_device(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The flat table and each channel's offset into it ``[3, 1, 1]`` (int32), made once
        per device."""
        if device not in self._on:
            offsets = torch.arange(0, 3 * 256, 256, dtype=torch.int32).view(3, 1, 1)
            self._on[device] = (self.table.flatten().to(device), offsets.to(device))
        return self._on[device]


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    if rng is None:
        raise ValueError("a random transform (random crop or flip) needs an rng")
    return rng


PRESETS: dict[str, TransformConfig] = {
    # TRX: short side 256 (its frames are pre-resized), crop 224, flip in train, 0-1 pixels.
    "trx-train": TransformConfig(256, "short", 224, random_crop=True, flip=True, norm="none"),
    "trx-test": TransformConfig(256, "short", 224, norm="none"),
    # HyRSM: short side 256, crop 224, flip in train, mean 0.45 / std 0.225.
    "hyrsm-train": TransformConfig(256, "short", 224, random_crop=True, flip=True, norm="hyrsm"),
    "hyrsm-test": TransformConfig(256, "short", 224, norm="hyrsm"),
    # Seed paper: 256x256 then crop 224; ImageNet statistics for torchvision weights.
    "seed-train": TransformConfig(256, "square", 224, random_crop=True, flip=True, norm="imagenet"),
    "seed-test": TransformConfig(256, "square", 224, norm="imagenet"),
}


def get_transform(name: str, **overrides: object) -> ClipTransform:
    """Preset ``name`` with fields replaced, e.g. ``get_transform("trx-train", flip=False)``."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise KeyError(
            f"unknown transform preset {name!r}; presets: {', '.join(PRESETS)}"
        ) from None
    return ClipTransform(dataclasses.replace(base, **overrides))
