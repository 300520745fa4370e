"""Feature stores: video index -> ``[T, D]`` frame features.

The evaluator and trainer read features only through this interface; the in-memory store
serves tensors (tests, small pools) and the on-disk cache serves extracted features.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

__all__ = ["FeatureStore", "InMemoryFeatureStore", "SubsetFeatureStore", "as_feature_store"]


@runtime_checkable
class FeatureStore(Protocol):
    """Read access to per-video frame features."""

    def __len__(self) -> int: ...

    @property
    def feature_shape(self) -> tuple[int, int]:
        """``(T, D)`` of every video."""
        ...

    def get(self, indices: np.ndarray | Tensor) -> Tensor:
        """Features of videos ``indices [n]`` as float32 ``[n, T, D]`` on the CPU."""
        ...


class InMemoryFeatureStore:
    """A feature store over one ``[N, T, D]`` tensor (or ``[N, V, T, D]`` with V views)."""

    def __init__(self, features: Tensor, video_ids: list[str] | None = None) -> None:
        if features.dim() not in (3, 4):
            raise ValueError(
                f"features must be [N, T, D] or [N, V, T, D], got {tuple(features.shape)}"
            )
        if video_ids is not None and len(video_ids) != features.shape[0]:
            raise ValueError(f"{len(video_ids)} video ids for {features.shape[0]} videos")
        self.features = features
        self.video_ids = video_ids

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def feature_shape(self) -> tuple[int, int]:
        return tuple(self.features.shape[-2:])  # type: ignore[return-value]

    @property
    def num_views(self) -> int:
        return int(self.features.shape[1]) if self.features.dim() == 4 else 1

    def get(self, indices: np.ndarray | Tensor, views: np.ndarray | Tensor | None = None) -> Tensor:
        """Features of ``indices``. A run of consecutive float32 videos (a whole test pool
        being encoded) comes back as a view sharing the store's memory: callers must not
        write into what they get."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        run = _consecutive_run(idx)
        viewable = self.features.dim() == 3 and self.features.dtype == torch.float32
        if run is not None and viewable and run[1] <= len(self):
            return self.features[run[0] : run[1]]
        idx = idx.to(self.features.device)  # features may already be on the GPU
        if self.features.dim() == 3:
            out = self.features.index_select(0, idx)
        else:
            v = torch.zeros_like(idx) if views is None else torch.as_tensor(np.asarray(views))
            out = self.features[idx, v.long().to(idx.device)]
        return out.float()


def _consecutive_run(idx: Tensor) -> tuple[int, int] | None:
    """``(first, stop)`` when ``idx`` is ``first, first+1, ..., stop-1``, else ``None``."""
    if idx.dim() != 1 or idx.numel() == 0:
        return None
    first, last = int(idx[0]), int(idx[-1])
    if last - first + 1 != idx.numel() or first < 0:
        return None
    if not bool((idx == torch.arange(first, last + 1)).all()):
        return None
    return first, last + 1


def as_feature_store(features: Tensor | FeatureStore) -> FeatureStore:
    """Wrap a tensor in an :class:`InMemoryFeatureStore`; pass stores through."""
    if isinstance(features, Tensor):
        return InMemoryFeatureStore(features)
    if isinstance(features, FeatureStore):
        return features
    raise TypeError(f"expected a [N, T, D] tensor or a FeatureStore, got {type(features).__name__}")


class SubsetFeatureStore:
    """The videos ``keep`` of another store, re-indexed ``0..len(keep)-1`` (e.g. without the
    videos that failed to decode)."""

    def __init__(self, store: FeatureStore, keep: np.ndarray) -> None:
        self.store = store
        self.keep = np.asarray(keep, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.keep)

    @property
    def feature_shape(self) -> tuple[int, int]:
        return self.store.feature_shape

    @property
    def num_views(self) -> int:
        return int(getattr(self.store, "num_views", 1))

    def get(self, indices: np.ndarray | Tensor, views: np.ndarray | Tensor | None = None) -> Tensor:
        original = self.keep[np.asarray(indices, dtype=np.int64)]
        if views is None:
            return self.store.get(original)
        return self.store.get(original, views)
