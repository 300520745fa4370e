"""HyRSM's frame sampler (``_interval_based_sampling`` of its ``datasets/base/base_dataset.py``
at commit 82100b6), written out step by step from the reference's text for one video, with
its draws (``random.uniform``, ``random.randint``) passed in so a test can feed both sides
the same numbers. The few-shot configs reach two branches: ``SAMPLING_RATE > 40`` (SSv2,
HMDB, UCF: 50) and the interval clip (Kinetics: 35, ``TARGET_FPS`` 12)."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["hyrsm_interval_based_sampling"]


def hyrsm_interval_based_sampling(
    vid_length: int,
    num_frames: int,
    sampling_rate: int,
    *,
    train: bool,
    randint: Callable[[int, int], int],
    uniform: Callable[[float, float], float],
    vid_fps: float = 12.0,
    target_fps: float = 12.0,
) -> list[int]:
    """Indices HyRSM's loader reads: ``randint(a, b)`` inclusive of ``b`` as Python's; a test
    clip is its ``clip_idx = 0`` of ``NUM_ENSEMBLE_VIEWS = 1`` (the few-shot loader's index
    list holds only 0s), a training clip ``clip_idx = -1``."""
    interval = sampling_rate
    if sampling_rate > 40:
        interval = vid_length // num_frames
        return [randint(k * interval, k * interval + interval - 1) for k in range(num_frames)]
    clip_length = num_frames * interval * vid_fps / target_fps
    if clip_length > vid_length:
        clip_length = vid_length // num_frames * num_frames
    max_idx = max(vid_length - clip_length + 1, 0)
    start_idx = uniform(0, max_idx) if train else max_idx / 2  # test: num_clips == 1
    end_idx = start_idx + clip_length - interval
    index = torch.linspace(start_idx, end_idx, num_frames)
    index = torch.clamp(index, 0, vid_length - 1).long()
    return [int(i) for i in index]
