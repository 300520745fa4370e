"""The few collectives training and evaluation need; each is a no-op in a 1-process run.

Training synchronises gradients with ``DistributedDataParallel`` (``fsarbench.training.loop``
wraps each stage's loss, with ``no_sync`` during gradient accumulation);
:func:`allreduce_gradients` remains for code that sums gradients by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from fsarbench.distributed.env import rank, world_size

__all__ = [
    "broadcast_module",
    "allreduce_gradients",
    "gather_to_main",
    "allreduce_sum",
    "broadcast_object",
    "broadcast_buffers",
]

BUCKET_BYTES = 25 * 2**20


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy parameters and buffers of rank ``src`` to every rank (identical initial weights)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src)


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy the buffers of rank ``src`` to every rank. Training under DDP updates running
    statistics (BatchNorm with ``bn: train``) from each rank's own micro-batches; before a
    validation or a checkpoint every rank takes rank ``src``'s, so the model validated, saved
    and resumed is one model."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in module.buffers():
            dist.broadcast(t.data, src)


def _buckets(tensors: list[torch.Tensor]) -> Iterable[list[torch.Tensor]]:
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        if bucket and (
            size + t.numel() * t.element_size() > BUCKET_BYTES or t.dtype != bucket[0].dtype
        ):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel() * t.element_size()
    if bucket:
        yield bucket


def allreduce_gradients(params: Iterable[nn.Parameter], average: bool = True) -> None:
    """Sum (or average) ``.grad`` of ``params`` over ranks, in coalesced buckets.

    Parameters without a gradient on this rank contribute zeros, so every rank issues the
    same collectives even when a branch was unused on one of them.
    """
    world = world_size()
    if world == 1:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets([p.grad for p in params]):
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat)
        if average:
            flat /= world
        for g, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            g.copy_(synced)


def allreduce_sum(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum of each named float over ranks (for logged losses), the same on every rank."""
    if world_size() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (in rank order); ``None`` on the other ranks."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size() if rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]
