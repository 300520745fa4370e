"""Planted-window features: a known answer for actionness (Sec. 3.2, eq. 1-2).

Every video is ``T`` frames of a *shared* background (one of a pool of background vectors that
all classes draw from, so background frames carry no class information) with a short window
of consecutive **action** frames in which the class direction is added on top of the
background. A Φ_cls that "finds the action" must rank the window's frames above the others.

Used by the known-answer tests (``tests/test_sgtm_actionness.py``) and docs/methods.md's
measurements; cheap (pure tensor ops), deterministic from its seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PlantedWindows", "planted_window_videos", "window_auroc", "topk_in_window"]


@dataclass(frozen=True)
class PlantedWindows:
    """Planted-window videos and where their action is.

    Attributes:
        videos: ``[N, T, D]`` frame features.
        labels: ``[N]`` class ids ``0..C-1``.
        window: ``[N, T]`` bool, True on the action frames.
    """

    videos: Tensor
    labels: Tensor
    window: Tensor


def planted_window_videos(
    labels: Tensor,
    *,
    num_classes: int,
    seq_len: int = 8,
    dim: int = 64,
    window: int = 3,
    num_backgrounds: int = 4,
    action_scale: float = 3.0,
    background_scale: float = 3.0,
    noise: float = 0.3,
    world_seed: int = 0,
    seed: int = 0,
) -> PlantedWindows:
    """Planted-window features for the class ids ``labels [N]``.

    Frame ``t`` of video ``n`` is ``b_{j(n)} + 1[t in window(n)]·u_{y(n)} + noise``, where the
    class directions ``u_c [D]`` (norm ``action_scale``) and the background pool ``b_j [D]``
    (norm ``background_scale``, shared by every class) come from ``world_seed``; the background
    index ``j(n)``, the window start (uniform over the ``T - window + 1`` positions) and the
    Gaussian noise (std ``noise`` per value) come from ``seed``.

    Returns:
        :class:`PlantedWindows` with videos ``[N, T, D]`` and window ``[N, T]``.
    """
    if not 1 <= window < seq_len:
        raise ValueError(f"window must lie in [1, T) = [1, {seq_len}), got {window}")
    world = torch.Generator().manual_seed(world_seed)
    dirs = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=world), dim=-1)
    backs = torch.nn.functional.normalize(
        torch.randn(num_backgrounds, dim, generator=world), dim=-1
    )
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    start = torch.randint(0, seq_len - window + 1, (n, 1), generator=g)
    t = torch.arange(seq_len)[None]
    in_window = (t >= start) & (t < start + window)  # [N, T]
    bg = backs[torch.randint(0, num_backgrounds, (n,), generator=g)] * background_scale
    act = dirs[labels] * action_scale  # [N, D]
    videos = bg[:, None] + in_window[..., None] * act[:, None]
    videos = videos + noise * torch.randn(n, seq_len, dim, generator=g)
    return PlantedWindows(videos, labels.clone(), in_window)


def window_auroc(scores: Tensor, window: Tensor) -> float:
    """Within-video AUROC of ``scores [N, T]`` for the action frames ``window [N, T]``.

    The share of (action frame, background frame) pairs *of the same video* in which the action
    frame scores higher, ties counting one half (the Mann-Whitney statistic), pooled over
    videos. 1 = every action frame above every background frame; 0.5 = chance.
    """
    diff = scores[:, :, None] - scores[:, None, :]  # [N, T, T]: s_i - s_j
    pairs = window[:, :, None] & ~window[:, None, :]  # i in window, j not
    wins = (diff > 0).float() + 0.5 * (diff == 0).float()
    return float(wins[pairs].mean())


def topk_in_window(scores: Tensor, window: Tensor, k: int) -> float:
    """Precision at k: the share of every video's ``k`` highest-scoring frames that lie in the
    window, over all videos (chance: window length / T).

    ``scores``, ``window``: ``[N, T]``; ties among equal scores go to the earlier frame.
    """
    top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]  # [N, k]
    return float(window.gather(1, top).float().mean())
