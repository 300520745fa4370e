"""Frame-sampling protocols, each a small named function, and the short-video policy.

A sampler maps ``(num_frames, T, train, rng)`` to ``T`` frame indices. Randomness comes only
from ``rng``; :func:`frame_rng` derives it from ``(seed, video, epoch, view)``, so every
process and DataLoader worker draws the same frames for the same video.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import numpy as np

__all__ = [
    "SAMPLERS",
    "SHORT_POLICIES",
    "TooShortError",
    "frame_rng",
    "hyrsm_interval35",
    "hyrsm_interval50",
    "hyrsm_segment",
    "get_sampler",
    "sample_frames",
    "register_sampler",
    "trx",
    "tsn",
    "tsn_random",
    "uniform",
]

Sampler = Callable[..., list[int]]
SAMPLERS: dict[str, Sampler] = {}
SHORT_POLICIES = ("drop", "repeat")


class TooShortError(ValueError):
    """A video with fewer frames than the clip needs under the ``drop`` policy."""

    def __init__(self, num_frames: int, length: int):
        self.num_frames, self.length = num_frames, length
        super().__init__(f"too short: {num_frames} frames, clips need {length}")

    def __reduce__(self):
        return (type(self), (self.num_frames, self.length))


def register_sampler(name: str) -> Callable[[Sampler], Sampler]:
    def deco(fn: Sampler) -> Sampler:
        SAMPLERS[name] = fn
        return fn

    return deco


def frame_rng(seed: int, video: int | str, epoch: int = 0, view: int = 0) -> np.random.Generator:
    """Generator keyed on ``(seed, video, epoch, view)`` (Philox, independent of call order)."""
    text = json.dumps([int(seed), video, int(epoch), int(view)]).encode()
    key = np.frombuffer(hashlib.sha256(text).digest()[:16], dtype="<u8").copy()
    return np.random.Generator(np.random.Philox(key=key))


@register_sampler("trx")
def trx(n: int, T: int, *, train: bool, rng: np.random.Generator) -> list[int]:
    """TRX: test ``linspace(1, n-2, T)``; train jitters both ends by up to ``min(5, excess/2)``.

    Indices are truncated with ``int`` as in TRX's video reader; when the span is shorter
    than ``T`` the whole video ``0..n-1`` is used.
    """
    if train:
        pad = int(min(5, (n - T) / 2))
        if pad < 1:
            start, end = 0, n - 1
        else:
            start = int(rng.integers(0, pad + 1))
            end = int(rng.integers(n - 1 - pad, n))
    else:
        start, end = 1, n - 2
    if end - start < T:
        start, end = 0, n - 1
    return [int(f) for f in np.linspace(start, end, T)]


def _segments(n: int, T: int) -> list[tuple[int, int]]:
    """Segment bounds ``[start, end]`` (inclusive) of ``T`` segments of ``n-1`` frames, as
    SlowFast's SSv2 loader (``get_seq_frames``) rounds them: neighbouring segments share
    their boundary frame (docs/protocol.md, "The seed protocol's segments")."""
    size = (n - 1) / T
    return [(int(round(size * i)), int(round(size * (i + 1)))) for i in range(T)]


@register_sampler("tsn")
def tsn(n: int, T: int, *, train: bool, rng: np.random.Generator) -> list[int]:
    """TSN style: one frame per segment of :func:`_segments`, random in train, the segment's
    centre ``(start + end) // 2`` at test (at ``n = T = 8``: frames 0-4, 4, 5, 6)."""
    segs = _segments(n, T)
    if train:
        return [int(rng.integers(s, e + 1)) for s, e in segs]
    return [(s + e) // 2 for s, e in segs]


@register_sampler("tsn-random")
def tsn_random(n: int, T: int, *, train: bool, rng: np.random.Generator) -> list[int]:
    """TSN with a random frame per segment at test too (the HyRSM option)."""
    return tsn(n, T, train=True, rng=rng)


@register_sampler("hyrsm-segment")
def hyrsm_segment(n: int, T: int, *, train: bool, rng: np.random.Generator) -> list[int]:
    """HyRSM's ``_segment_based_sampling`` (train and test alike): segment bounds
    ``linspace(0, n, T + 1)``, a uniform real position in each, rounded (half to even, as
    ``torch.round``) and clamped to the video. HyRSM's own few-shot configs never reach it
    (they sample with :func:`hyrsm_interval50` / :func:`hyrsm_interval35`); an option."""
    del train  # random at test as well
    bounds = np.linspace(0, n, T + 1)
    index = np.array([rng.uniform(bounds[i], bounds[i + 1]) for i in range(T)])
    return [int(i) for i in np.round(np.clip(index, 0, n - 1))]


@register_sampler("hyrsm-interval50")
def hyrsm_interval50(n: int, T: int, *, train: bool, rng: np.random.Generator) -> list[int]:
    """HyRSM's ``_interval_based_sampling`` at its SSv2/HMDB/UCF configs' ``SAMPLING_RATE:
    50`` (any rate above 40 takes this branch), train and test alike: ``T`` segments of
    ``n // T`` frames each, one frame drawn uniformly from each; the last ``n mod T`` frames
    are never drawn."""
    del train  # HyRSM draws at random at test as well
    size = n // T
    return [int(rng.integers(i * size, i * size + size)) for i in range(T)]


#: HyRSM's Kinetics configs: ``SAMPLING_RATE: 35`` with ``TARGET_FPS: 12``.
HYRSM_INTERVAL = 35


@register_sampler("hyrsm-interval35")
def hyrsm_interval35(n: int, T: int, *, train: bool, rng: np.random.Generator) -> list[int]:
    """HyRSM's ``_interval_based_sampling`` at its Kinetics configs' ``SAMPLING_RATE: 35``:
    a clip of ``T * 35`` frames, shrunk to ``n // T * T`` when the video is shorter; its
    start uniform in ``[0, n - clip + 1]`` in training and ``(n - clip + 1) / 2`` at test;
    ``linspace(start, start + clip - 35, T)`` in float32, clamped to the video and truncated
    (``.long()``), as the reference computes it (a video under 35 frames gets a decreasing
    clip, as there). The clip is counted in frames of the decoded video: HyRSM scales it by
    the container's frame rate over 12 fps, so videos stored at 12 fps give its clips
    (docs/protocol.md)."""
    import torch

    clip = T * HYRSM_INTERVAL
    if clip > n:
        clip = n // T * T
    max_start = max(n - clip + 1, 0)
    start = float(rng.uniform(0, max_start)) if train else max_start / 2
    index = torch.linspace(start, start + clip - HYRSM_INTERVAL, T)
    return [int(i) for i in torch.clamp(index, 0, n - 1).long()]


@register_sampler("uniform")
def uniform(n: int, T: int, *, train: bool, rng: np.random.Generator) -> list[int]:
    """``T`` evenly spaced frames over the whole video; train shifts them by one random
    offset below the stride."""
    stride = n / T
    offset = rng.uniform(0, stride) if train else stride / 2
    return [min(n - 1, int(offset + stride * i)) for i in range(T)]


def get_sampler(name: str) -> Sampler:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise KeyError(f"unknown sampler {name!r}; samplers: {', '.join(SAMPLERS)}") from None


def _repeat(n: int, T: int) -> list[int]:
    """Every frame in order, repeated to reach ``T`` (``round(linspace(0, n-1, T))``)."""
    return [int(i) for i in np.round(np.linspace(0, n - 1, T))]


def sample_frames(
    name: str,
    n: int,
    T: int,
    *,
    train: bool,
    rng: np.random.Generator,
    short: str = "drop",
) -> list[int]:
    """``T`` indices into a video of ``n`` frames with sampler ``name``.

    Videos with ``n < T`` raise :class:`TooShortError` under ``short="drop"`` (TRX drops them)
    and are stretched by repeating frames under ``short="repeat"``.
    """
    if short not in SHORT_POLICIES:
        raise ValueError(f"short-video policy must be one of {SHORT_POLICIES}, not {short!r}")
    sampler = get_sampler(name)
    if n < T:
        if short == "drop" or n < 1:
            raise TooShortError(n, T)
        return _repeat(n, T)
    return sampler(n, T, train=train, rng=rng)
