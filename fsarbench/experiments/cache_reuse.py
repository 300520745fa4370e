"""A new feature cache starts from an earlier one's features for every video left unchanged.

A split's cache key names its files (every video's size and modification time), so one
repaired, replaced or touched video gives the split a new key, and used to re-extract every
video of it: hours on a real test split, for one re-downloaded file. Before a new cache is
extracted, :func:`reuse_unchanged_videos` looks for an earlier cache of the same settings
(every key field equal but the files stamp) and copies the features of the videos whose file
is unchanged, by a per-video stamp kept beside each cache (``video_stamps.json``). The copied
features are the bytes the earlier extraction stored, which the same settings, code and file
would give again; the other videos are then extracted as in any unfinished cache. The earlier
cache is only read, so a process still using it keeps its features.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from fsarbench.data.datasets import is_synthetic
from fsarbench.features.cache import UNKNOWN_MAKER, FeatureCache, cache_folder
from fsarbench.features.extract import (
    ExtractStats,
    SplitExtractConfig,
    _resolve_split,
    complete_cache,
    exclusive,
    extract_split,
    video_rows,
)
from fsarbench.features.made_with import reused
from fsarbench.io import atomic_write_json, stable_hash

__all__ = ["REUSED_FILE", "STAMPS_FILE", "extract_reusing", "reuse_unchanged_videos"]

log = logging.getLogger(__name__)

#: Per-video file stamps (the rows its key's files stamp hashes) of the videos a cache was
#: extracted from, beside its index.
STAMPS_FILE = "video_stamps.json"
#: Written into a cache that started from an earlier one: which, and how many videos.
REUSED_FILE = "reused.json"
#: Present while a reuse copies (written before the new cache's index): a reuse cut short
#: (Ctrl-C, a kill, a full disk) is finished by the next run; it was never retried, and the
#: whole split was extracted again.
REUSING_FILE = "reusing.json"
_COPY_CHUNK = 512  # videos copied at a time: [chunk, T, D] float32 per view in memory


def extract_reusing(
    dataset_name: str,
    split: str,
    *,
    dataset: Any,
    config: SplitExtractConfig | None = None,
    cache_root: str | Path | None = None,
) -> tuple[FeatureCache, ExtractStats | None]:
    """:func:`~fsarbench.features.extract.extract_split`, a new cache starting from an
    earlier one's unchanged videos (:func:`reuse_unchanged_videos`). A complete cache whose
    stamps are kept is opened after one look at the files (the key's), as before reuse."""
    resolved = _resolve_split(dataset_name, split, dataset, config)
    folder = cache_folder(resolved[3], cache_root)
    if (folder / STAMPS_FILE).exists():
        cache = complete_cache(folder, resolved[3])
        if cache is not None:
            return reused(cache), None
    _reuse(dataset_name, split, resolved, folder)
    return extract_split(dataset_name, split, dataset=dataset, config=config, cache_root=cache_root)


def reuse_unchanged_videos(
    dataset_name: str,
    split: str,
    *,
    dataset: Any,
    config: SplitExtractConfig | None = None,
    cache_root: str | Path | None = None,
) -> int:
    """Before :func:`~fsarbench.features.extract.extract_split` with the same arguments:
    when its cache does not exist yet, create it holding the features of every video whose
    file is unchanged since an earlier cache of the same settings was made. Returns how
    many videos were copied (0: nothing to reuse, or the cache exists already)."""
    resolved = _resolve_split(dataset_name, split, dataset, config)
    return _reuse(dataset_name, split, resolved, cache_folder(resolved[3], cache_root))


def _reuse(dataset_name: str, split: str, resolved: tuple, folder: Path) -> int:
    """:func:`reuse_unchanged_videos` for ``_resolve_split``'s ``resolved`` (config, videos,
    backbone, key) and the key's cache ``folder``."""
    config, videos, backbone, key = resolved
    if _settled(folder):
        return 0  # complete or resumable as it is: nothing to stat, lock or write
    rows = video_rows(videos)
    if not _pins(key.data, rows):  # a file changed since the key's own look at the files
        log.info(
            "%s/%s: files changed while looking at them; no features reused", dataset_name, split
        )
        return 0
    try:
        with exclusive(folder):
            # the key pins these rows: they are the files its features are made from
            if not (folder / STAMPS_FILE).exists():
                atomic_write_json(folder / STAMPS_FILE, {"rows": rows})
            if _settled(folder):
                return 0
            # a real dataset's video features are its files' (another copy of the same list,
            # e.g. HyRSM's HMDB51 lists beside TRX's, re-extracted every video); a generated
            # dataset's list md5 is what tells its files apart
            any_list = not is_synthetic(dataset_name)
            earlier, same = _best_earlier(folder, dataclasses.asdict(key), rows, any_list)
            if earlier is None:
                (folder / REUSING_FILE).unlink(missing_ok=True)
                return 0
            if (folder / "index.json").exists():  # a reuse cut short: finish its copy
                cache = FeatureCache.open(folder, writable=True)
                same &= ~cache.done_mask.all(axis=1)
            else:
                atomic_write_json(folder / REUSING_FILE, {"from": str(earlier.path)})
                cache = FeatureCache.create(
                    folder,
                    video_ids=[v.video_id for v in videos],
                    num_views=config.views,
                    num_frames=config.num_frames,
                    feature_dim=backbone.feature_dim,
                    classes=[v.class_name for v in videos],
                    class_indices=[v.class_index for v in videos],
                    key=key,
                    made_with=earlier.made_with or [UNKNOWN_MAKER],
                )
            _copy(earlier, cache, np.flatnonzero(same))
            atomic_write_json(
                folder / REUSED_FILE, {"from": str(earlier.path), "videos": int(same.sum())}
            )
            (folder / REUSING_FILE).unlink()
    except OSError as err:  # e.g. a read-only shared cache root: extract_split decides
        log.info("%s/%s: no features reused (%s)", dataset_name, split, err)
        return 0
    log.info(
        "%s/%s: the features of %d of %d videos come from %s (their files are unchanged); "
        "the others are extracted",
        dataset_name,
        split,
        int(same.sum()),
        len(videos),
        earlier.path,
    )
    return int(same.sum())


def _settled(folder: Path) -> bool:
    """Whether the cache at ``folder`` needs no reuse: it exists with its stamps and no
    reuse into it was cut short."""
    return (
        all((folder / f).exists() for f in ("index.json", STAMPS_FILE))
        and not (folder / REUSING_FILE).exists()
    )


def _pins(data: str, rows: list[list[Any]]) -> bool:
    """Whether a cache key's ``data`` (its last ``:`` part the files stamp) names ``rows``."""
    return isinstance(data, str) and data.rsplit(":", 1)[-1] == stable_hash(rows, n=16)


def _best_earlier(
    folder: Path, fields: dict[str, Any], rows: list[list[Any]], any_list: bool = False
) -> tuple[FeatureCache | None, np.ndarray]:
    """The sibling cache of the same settings and videos but another files stamp (with
    ``any_list``, also another split-list md5) with the most stored videos whose row equals
    ``rows``' (same id, size and time, in the same order), and that mask."""
    best, best_mask = None, np.zeros(len(rows), dtype=bool)
    for other in sorted(folder.parent.iterdir()) if folder.parent.is_dir() else []:
        if other == folder or not _same_settings(other, fields, any_list):
            continue
        try:
            index = json.loads((other / "index.json").read_text())
            earlier = json.loads((other / STAMPS_FILE).read_text())["rows"]
            if not _pins(index["key_fields"]["data"], earlier):
                continue  # rows that are not the ones its key names: vouch for nothing
            cache = FeatureCache.open(other)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no stamps (or a damaged cache): nothing it holds can be vouched for
        if len(earlier) != len(rows) or cache.video_ids != [r[0] for r in rows]:
            continue
        unchanged = np.array([a == b for a, b in zip(earlier, rows)], dtype=bool)
        mask = unchanged & cache.done_mask.all(axis=1)
        if mask.sum() > best_mask.sum():
            best, best_mask = cache, mask
    return best, best_mask


def _same_settings(other: Path, fields: dict[str, Any], any_list: bool = False) -> bool:
    """Whether the cache at ``other`` has every key field of ``fields`` but the files stamp
    (the last ``:`` part of ``data``, :func:`~fsarbench.features.extract.data_identity`),
    and with ``any_list`` but the split-list md5 (its middle part) too."""
    try:
        theirs = json.loads((other / "index.json").read_text()).get("key_fields") or {}
    except (OSError, ValueError):
        return False
    if set(theirs) != set(fields) or not isinstance(theirs.get("data"), str):
        return False
    rest = [k for k in fields if k != "data"]
    kept = 1 if any_list else 2  # variant (and list md5) of "<variant>:<list md5>:<files>"
    mine, their = str(fields["data"]).split(":"), theirs["data"].split(":")
    return all(theirs[k] == fields[k] for k in rest) and mine[:kept] == their[:kept]


def _copy(earlier: FeatureCache, cache: FeatureCache, indices: np.ndarray) -> None:
    """Every view of videos ``indices`` from ``earlier`` into ``cache`` (same positions:
    equal settings mean an equal split listing), flushed chunk by chunk (a kill keeps what
    was copied)."""
    for start in range(0, len(indices), _COPY_CHUNK):
        chunk = indices[start : start + _COPY_CHUNK]
        for view in range(cache.num_views):
            views = np.full_like(chunk, view)
            cache.write(chunk, views, earlier.get(chunk, views).numpy())
        cache.flush()
