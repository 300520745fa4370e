"""Open a feature store from a path: a ``.pt`` tensor file or an on-disk feature cache."""

from __future__ import annotations

from pathlib import Path

import torch

from fsarbench.features.store import FeatureStore, InMemoryFeatureStore

__all__ = ["open_feature_store"]


def open_feature_store(path: str | Path) -> FeatureStore:
    """``path`` is a ``[N, T, D]`` tensor saved with ``torch.save`` or a feature-cache folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"feature file or cache {path} does not exist; "
            "create one with 'python -m fsarbench extract'"
        )
    if path.is_dir():
        from fsarbench.features.cache import FeatureCache

        return FeatureCache.open(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        return InMemoryFeatureStore(obj["features"], obj.get("video_ids"))
    return InMemoryFeatureStore(obj)
