"""How many DataLoader processes decode clips when the user names no number."""

from __future__ import annotations

import os

import torch

__all__ = ["default_workers"]


def default_workers(device: str | torch.device, ranks: int = 1) -> int:
    """Decode workers of one process computing on ``device``, one of ``ranks`` processes on
    this node.

    On CUDA the backbone waits for clips: the CPU cores this process may use, shared among
    the node's ranks, less 2 for each rank's own threads (the main and pin-memory threads),
    between 2 and 12. On an H200 with 16 cores, 12 workers decoded 4,407 frames/s and 15
    workers 3,627, against ResNet-50's 13,500. Elsewhere 2: the forward uses every core.
    """
    if torch.device(device).type != "cuda":
        return 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, min(12, (cores or 2) // max(1, ranks) - 2))
