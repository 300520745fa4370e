"""What a feature cache was extracted with: library versions and the compute environment.

A cache's key names the code of fsarbench's decoding and backbones, the weights and the data,
not the versions of torch, torchvision or the video decoder, which can change the decoded
frames and the backbone's float32 arithmetic. Those are kept beside the cache's index
(``made_with.json``), copied into the records of the numbers computed from it, and a cache reused
under other versions is named once per process (reused, not extracted again: a re-extraction
of a real dataset takes hours and a version bump rarely moves a feature).
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any

import torch

from fsarbench.environment import compute_environment
from fsarbench.features.cache import FeatureCache
from fsarbench.features.store import SubsetFeatureStore

__all__ = [
    "LIBRARIES",
    "library_versions",
    "extraction_environment",
    "version_changes",
    "reused",
    "store_made_with",
]

log = logging.getLogger(__name__)

#: Distributions whose code decodes videos or computes features (those installed are kept).
LIBRARIES = ("torch", "torchvision", "numpy", "decord", "av", "timm", "open_clip_torch")

_NAMED: set[str] = set()


def library_versions() -> dict[str, str]:
    """``{distribution: version}`` of the installed :data:`LIBRARIES`."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def extraction_environment(device: torch.device | str) -> dict[str, Any]:
    """:func:`~fsarbench.environment.compute_environment` of ``device`` and
    ``libraries``: :func:`library_versions`."""
    return {**compute_environment(device), "libraries": library_versions()}


def version_changes(made_with: list[dict[str, Any]]) -> list[str]:
    """``"torchvision 0.18.0 -> 0.29.1"`` for each library whose version differs from one
    a cache's features were extracted with (``"decord 0.6.0 -> not installed"`` for one
    gone); ``[]`` for a cache that recorded none (written before versions were kept)."""
    now = library_versions()
    changes = []
    for env in made_with:
        for name, version in sorted((env.get("libraries") or {}).items()):
            change = f"{name} {version} -> {now.get(name, 'not installed')}"
            if now.get(name) != version and change not in changes:
                changes.append(change)
    return changes


def reused(cache: FeatureCache) -> FeatureCache:
    """``cache``, a complete cache about to be reused; warns, once per cache folder and
    process, when its features were extracted under other library versions."""
    changes = version_changes(cache.made_with)
    folder = str(cache.path)
    if changes and folder not in _NAMED:
        _NAMED.add(folder)
        log.warning(
            "feature cache %s was extracted under other library versions (%s): its features "
            "are reused, and the records name the versions that made them; to extract them "
            "again under these versions, delete the folder and re-run",
            folder,
            ", ".join(changes),
        )
    return cache


def store_made_with(store: Any) -> list[dict[str, Any]]:
    """:attr:`FeatureCache.made_with` of a feature cache, or of the cache a subset store
    serves from; ``[]`` for other stores (a features file made elsewhere)."""
    while isinstance(store, SubsetFeatureStore):
        store = store.store
    return store.made_with if isinstance(store, FeatureCache) else []
