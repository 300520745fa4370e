"""Moving training batches to the device one ahead of their use.

:class:`DevicePrefetcher` takes host batches (pinned by the DataLoader on CUDA) and moves
batch ``k+1`` while batch ``k`` is being used. On CUDA the copy is issued with
``non_blocking=True`` on a side stream, so it overlaps the compute of batch ``k``; the
compute stream waits for it only when batch ``k+1`` is handed out. On other devices it is
a plain ``.to(device)`` one batch ahead (same values, same order).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

__all__ = ["DevicePrefetcher", "tensors_of"]

T = TypeVar("T")


def tensors_of(obj: Any) -> list[Tensor]:
    """The tensors held by ``obj``: itself, or its dataclass fields / sequence items /
    mapping values, recursively."""
    if isinstance(obj, Tensor):
        return [obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [t for f in dataclasses.fields(obj) for t in tensors_of(getattr(obj, f.name))]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensors_of(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors_of(v)]
    return []


class DevicePrefetcher(Generic[T]):
    """Iterate ``move(item)`` for the items of ``items``, each moved one item ahead.

    Args:
        items: host batches.
        move: puts one batch on ``device`` (with ``non_blocking=True`` copies).
        device: where ``move`` puts them; CUDA gets a side copy stream.
    """

    def __init__(
        self, items: Iterable[T], move: Callable[[T], T], device: torch.device | str
    ) -> None:
        self.items, self.move = iter(items), move
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._ahead: tuple[T, Any] | None = None
        self._done = False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._ahead is None:
            self._ahead = self._launch()
        if self._ahead is None:
            raise StopIteration
        current, ready = self._ahead
        self._ahead = self._launch()  # batch k+1 copies while batch k computes
        if ready is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(ready)
            for t in tensors_of(current):
                if t.is_cuda:  # host tensors a batch keeps (colour jitter rows) have no stream
                    t.record_stream(stream)  # its memory is not reused before that use ends
        return current

    def _launch(self) -> tuple[T, Any] | None:
        if self._done:
            return None
        try:
            item = next(self.items)
        except StopIteration:
            self._done = True
            return None
        if self.stream is None:
            return self.move(item), None
        with torch.cuda.stream(self.stream):
            moved = self.move(item)
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return moved, ready
