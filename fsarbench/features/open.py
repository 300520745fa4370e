"""Open a feature store from a path: a ``.pt`` tensor file or an on-disk feature cache."""

from __future__ import annotations

from pathlib import Path

import torch

from fsarbench.features.store import FeatureStore, InMemoryFeatureStore
from fsarbench.io import md5_file, stable_hash

__all__ = ["open_feature_store", "feature_identity", "FeatureFileError"]


class FeatureFileError(ValueError):
    """A features file that cannot be read as a ``[N, T, D]`` tensor (or ``{"features": ...}``)."""


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
        from fsarbench.features.made_with import reused

        return reused(FeatureCache.open(path))
    if (path.parent / "index.json").is_file() and path.suffix == ".npy":
        raise FeatureFileError(
            f"{path} is a feature cache's data file: give the cache's folder, --features "
            f"{path.parent} (its index names the videos, views and settings)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and EOF errors of a corrupt or foreign file
        raise FeatureFileError(
            f"{path} cannot be read as a features file saved with torch.save "
            f"({_load_failure(err)}); save a [N, T, D] tensor or {{'features': tensor, "
            "'video_ids': [...]} with torch.save (a numpy array: torch.save(torch.from_numpy("
            "np.load(F)), 'features.pt')), or give a feature-cache folder"
        ) from None
    features = obj.get("features") if isinstance(obj, dict) else obj
    if not isinstance(features, torch.Tensor):
        found = (
            f"a dict without a 'features' tensor (keys {sorted(obj)})"
            if isinstance(obj, dict)
            else f"a {type(obj).__name__}"
        )
        raise FeatureFileError(f"{path} holds {found}, not a [N, T, D] features tensor")
    if features.dim() == 4:  # a file says nothing of views: [N, T, P, D] tokens read as views
        n, a, b, d = features.shape
        raise FeatureFileError(
            f"{path} holds a 4-D tensor {[n, a, b, d]}; a features file is [N, T, D] (frames x "
            "dims per video). Un-pooled tokens or spatial maps ([videos, frames, patches, dims]) "
            "were read as views, and only the first scored (55.68 printed for 77.11): pool them "
            "(features.mean(2)). For several views per video, save the one to evaluate "
            "(features[:, 0]) or give the feature-cache folder, which records its views"
        )
    return InMemoryFeatureStore(features, obj.get("video_ids") if isinstance(obj, dict) else None)


def _load_failure(err: Exception) -> str:
    """What ``torch.load`` said, without its advice to load with ``weights_only=False``
    (which runs any code a file holds: fsarbench never does that for a features file)."""
    text = str(err)
    if "weights_only" in text or "Weights only load failed" in text:
        return "it holds objects other than tensors, numbers, lists and dicts"
    return f"{type(err).__name__}: {text.splitlines()[0] if text else 'no detail'}"


def feature_identity(path: str | Path, store: FeatureStore) -> dict[str, str]:
    """What a record says it was evaluated on, for ``eval --features``: a cache's key (its
    extraction settings) or the md5 of the file. Part of the record's config hash, so results
    on other features never overwrite each other."""
    from fsarbench.features.cache import FeatureCache

    if isinstance(store, FeatureCache) and store.key:
        return {"cache_key": str(store.key)}
    path = Path(path)
    # a cache made by hand has no key: its index and numbers identify it
    files = [path / "index.json", path / "features.npy"] if path.is_dir() else [path]
    return {"file_md5": stable_hash([md5_file(f) for f in files])}
