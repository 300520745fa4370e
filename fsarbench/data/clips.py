"""Clip tensors from video records, decoded in DataLoader workers.

:class:`ClipDataset` yields one clip per (video, view); :class:`EpisodeClipDataset` turns a
:class:`~fsarbench.episodes.Manifest` into support/query clip tensors. Every random choice
(frames, crop, flip) is drawn from ``frame_rng(seed, video_id, epoch, view)``, so the output
is identical for any number of workers and any iteration order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from fsarbench.data.color_jitter import NO_JITTER, draw_color_jitter
from fsarbench.data.datasets import VideoRecord
from fsarbench.data.decode import VideoDecodeError, read_clip
from fsarbench.data.sampling import TooShortError, frame_rng, sample_frames
from fsarbench.data.transforms import ClipTransform
from fsarbench.episodes import Manifest

__all__ = [
    "ClipOptions",
    "ClipDataset",
    "EpisodeClipDataset",
    "collate_clips",
    "make_loader",
    "failures",
]


@dataclass(frozen=True)
class ClipOptions:
    """How clips are drawn.

    Attributes:
        frames: T, frames per clip.
        sampler: a name of ``fsarbench.data.sampling.SAMPLERS``.
        train: train-mode sampling (random) or test-mode (deterministic for trx/tsn).
        views: clips per video (view ids ``0..views-1`` key their randomness).
        seed, epoch: key the random stream together with the video id and view.
        short: ``drop`` (error/skip) or ``repeat`` for videos shorter than T.
        on_error: ``skip`` (zero clip, ``ok=False``, error recorded) or ``raise``.
        backend: ``auto``, ``decord``, ``pyav`` (files) — folders are always JPEG.
        pixels: clips as ``uint8`` crops, to be normalised by the consumer on its device
            with ``transform.pixel_norm()`` (a quarter of the bytes between processes).
        color_jitter: also draw each clip's colour jitter (HyRSM's, for training query
            clips) after its frames, crop and flip: items gain ``"jitter"``, a ``float64
            [10]`` row of :mod:`fsarbench.data.color_jitter`, which the consumer applies on
            its device (only with ``pixels``).
    """

    frames: int = 8
    sampler: str = "trx"
    train: bool = False
    views: int = 1
    seed: int = 0
    epoch: int = 0
    short: Literal["drop", "repeat"] = "drop"
    on_error: Literal["skip", "raise"] = "skip"
    backend: str = "auto"
    pixels: bool = False
    color_jitter: bool = False

    def __post_init__(self) -> None:
        if self.color_jitter and not self.pixels:
            raise ValueError(
                "color_jitter needs pixels=True: the jitter is applied on the consumer's "
                "device, between the uint8 crop and the normalisation"
            )


def _load(
    record: VideoRecord,
    transform: ClipTransform,
    opts: ClipOptions,
    view: int,
    out_shape: tuple[int, ...],
) -> tuple[torch.Tensor, str | None, np.ndarray | None]:
    """(clip ``float [T,3,H,W]`` (``uint8`` under ``opts.pixels``), error or None, colour
    jitter row or None) for one video and view; a zero clip with the error, and a row that
    leaves it as it is, when it cannot be read under ``skip``."""
    rng = frame_rng(opts.seed, record.video_id, opts.epoch, view)
    choose = partial(
        sample_frames, opts.sampler, T=opts.frames, train=opts.train, rng=rng, short=opts.short
    )
    try:
        frames, _ = read_clip(record.path, choose, backend=opts.backend)
        clip = transform.pixels(frames, rng) if opts.pixels else transform(frames, rng)
        return clip, None, draw_color_jitter(rng) if opts.color_jitter else None
    except TooShortError as err:
        if opts.on_error == "raise":
            raise VideoDecodeError(record.path, str(err)) from None
        return _zeros(out_shape, opts), f"{record.path}: {err}", _no_jitter(opts)
    except VideoDecodeError as err:
        if opts.on_error == "raise":
            raise
        return _zeros(out_shape, opts), str(err), _no_jitter(opts)


def _no_jitter(opts: ClipOptions) -> np.ndarray | None:
    return NO_JITTER.copy() if opts.color_jitter else None


def _zeros(shape: tuple[int, ...], opts: ClipOptions) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.uint8 if opts.pixels else torch.float32)


def _out_shape(transform: ClipTransform, frames: int) -> tuple[int, int, int, int]:
    crop = transform.config.crop
    if crop <= 0:
        raise ValueError("ClipDataset needs a transform with a fixed crop size (crop > 0)")
    return (frames, 3, crop, crop)


class ClipDataset(TorchDataset):
    """Item ``i`` is view ``i % views`` of video ``i // views``.

    Returns dicts ``{"clip": float [T,3,H,W], "index": video position, "view": view id,
    "ok": bool, "error": str | None}``; failed videos give a zero clip under ``skip``.
    Under ``options.pixels`` clips are ``uint8``, for ``transform.pixel_norm()``; under
    ``options.color_jitter`` items carry their ``"jitter"`` row too.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        transform: ClipTransform,
        options: ClipOptions | None = None,
    ):
        self.records = list(records)
        self.transform = transform
        self.options = options or ClipOptions()
        if self.options.on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', not {self.options.on_error!r}")
        self.out_shape = _out_shape(transform, self.options.frames)

    def __len__(self) -> int:
        return len(self.records) * self.options.views

    def __getitem__(self, i: int) -> dict[str, Any]:
        video, view = divmod(int(i), self.options.views)
        clip, error, jitter = _load(
            self.records[video], self.transform, self.options, view, self.out_shape
        )
        item = {"clip": clip, "index": video, "view": view, "ok": error is None, "error": error}
        if jitter is not None:
            item["jitter"] = torch.from_numpy(jitter)
        return item


class EpisodeClipDataset(TorchDataset):
    """Item ``e`` is episode ``e`` of ``manifest`` as clip tensors.

    ``manifest`` indices point into ``records``. Returns ``{"support": [way*shot,T,3,H,W],
    "query": [way*queries,T,3,H,W], "support_labels": [way*shot], "query_labels":
    [way*queries], "episode": e, "ok": bool [way*(shot+queries)], "errors": list[str]}``.
    Augmentation of a video differs per episode (the episode index is the view id).
    """

    def __init__(
        self,
        manifest: Manifest,
        records: Sequence[VideoRecord],
        transform: ClipTransform,
        options: ClipOptions | None = None,
    ):
        if manifest.num_videos != len(records):
            raise ValueError(
                f"manifest indexes {manifest.num_videos} videos, got {len(records)} records"
            )
        self.manifest, self.records, self.transform = manifest, list(records), transform
        self.options = options or ClipOptions()
        if self.options.color_jitter:  # its items have no place for the rows
            raise ValueError(
                "EpisodeClipDataset does not carry colour jitter rows: use ClipOptions("
                "color_jitter=False), or the finetune track's TrainEpisodes"
            )
        self.out_shape = _out_shape(transform, self.options.frames)

    def __len__(self) -> int:
        return self.manifest.episodes

    def _clips(self, indices: np.ndarray, e: int) -> tuple[torch.Tensor, list[str | None]]:
        loaded = [
            _load(self.records[int(v)], self.transform, self.options, e, self.out_shape)
            for v in indices
        ]
        return torch.stack([c for c, _, _ in loaded]), [err for _, err, _ in loaded]

    def __getitem__(self, e: int) -> dict[str, Any]:
        m = self.manifest
        support, s_err = self._clips(m.support[e], e)
        query, q_err = self._clips(m.query[e], e)
        errors = s_err + q_err
        return {
            "support": support,
            "query": query,
            "episode": int(e),
            "support_labels": torch.tensor(m.support_labels[e], dtype=torch.long),
            "query_labels": torch.tensor(m.query_labels[e], dtype=torch.long),
            "ok": torch.tensor([x is None for x in errors]),
            "errors": [x for x in errors if x is not None],
        }


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors and ints; keep ``error``/``errors`` as lists (they may be None)."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if key in ("error", "errors"):
            out[key] = values
        elif isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        else:
            out[key] = torch.as_tensor(values)
    return out


def make_loader(
    dataset: TorchDataset,
    *,
    batch_size: int = 8,
    num_workers: int = 0,
    pin_memory: bool | None = None,
) -> DataLoader:
    """An in-order loader decoding in ``num_workers`` processes, pinned memory on CUDA."""
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin,
        collate_fn=collate_clips,
        persistent_workers=False,
        prefetch_factor=2 if num_workers else None,
    )


def failures(batch: dict[str, Any], records: Sequence[VideoRecord]) -> list[str]:
    """``"<video_id>: <error>"`` for each failed item of a ClipDataset batch (for results'
    ``skipped_videos``)."""
    return [
        f"{records[int(i)].video_id}: {err}"
        for i, err in zip(batch["index"], batch["error"])
        if err is not None
    ]
