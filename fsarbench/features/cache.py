"""The on-disk feature cache: per video and view a ``[T, D]`` float16 frame-feature block.

Layout of one cache folder ``<root>/features/<dataset>/<split>/<key>/``::

    features.npy   float16 [N, V, T, D], preallocated, memory-mapped for reading and writing
    index.json     key, key fields, video ids, class names and indices, shape
    made_with.json what the features were extracted with (library versions, device), one
                   entry per set of versions that wrote some; absent in older caches
    progress.json  done mask (one character per video-view: 1 done, x failed, 0 to do) and the
                   error of every failed entry; rewritten atomically after the data is flushed

The key hashes everything that changes the numbers (:class:`CacheKey`), so a cache is reused
only for identical settings and an interrupted extraction resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fsarbench.io import atomic_write_json, stable_hash

__all__ = [
    "CacheKey",
    "FeatureCache",
    "CorruptCacheError",
    "CacheFormatError",
    "CacheSpaceError",
    "cache_folder",
    "default_cache_root",
]

FORMAT_VERSION = 1
#: Beside index.json: what extracted the features (FeatureCache.made_with).
MADE_WITH_FILE = "made_with.json"
#: ``made_with`` entry of features stored before fsarbench kept what extracted them.
UNKNOWN_MAKER = {"unknown": "extracted before fsarbench kept what extracted features"}
# Version of what turns a video into numbers (decoding, frame sampling, transforms and their
# random draws). Bump it with any change to those that changes the features, so caches made
# by older code are not reused under an unchanged key (version 1 caches are stale: their
# train views came from an earlier augmentation draw).
PIPELINE_VERSION = 2
_DONE, _FAILED, _TODO = "1", "x", "0"


@dataclass(frozen=True)
class CacheKey:
    """Everything that changes the cached numbers; its hash names the cache folder."""

    dataset: str  # dataset and split variant, e.g. "ssv2_full"
    split: str
    split_md5: str  # hash of the split's (video id, class) list
    frames: str  # frame-sampling protocol, e.g. "tsn" or "trx"
    transform: str  # transform preset, e.g. "test_256_224"
    backbone: str
    weights_id: str  # Backbone.weights_id
    num_frames: int
    resolution: int
    views: int
    seed: int
    code: str = ""  # provenance.pipeline_digest(): decoding, sampling, transforms, backbones
    # the data the listing names: "<variant>:<the dataset's own split md5>" (the split list
    # file's md5 for published datasets; the video files' md5s for the generated synth, whose
    # listing is the same for every seed and size)
    data: str = ""
    # what the backbone computed in: "fp32", or the autocast dtype ("fp16", "bf16"); left
    # out of the digest when "fp32", so the keys of float32 extractions stay as they were
    precision: str = "fp32"

    def digest(self) -> str:
        """16 hex digits of sha256 over the fields, the cache format and pipeline versions."""
        fields = dataclasses.asdict(self)
        if fields["precision"] == "fp32":
            del fields["precision"]
        return stable_hash({"format": FORMAT_VERSION, "pipeline": PIPELINE_VERSION, **fields})


class CacheSpaceError(OSError):
    """The disk has no room for a new feature cache's features."""


def _reserve_disk(file: Path) -> None:
    """Allocate the blocks of the (sparse) preallocated ``file``, so a disk that fills up
    refuses the cache here, by name, instead of ending the extraction with SIGBUS at the
    first write into an unbacked page of the memory map. Where the platform (macOS) or the
    file system cannot allocate, the memory map stays sparse, as before."""
    allocate = getattr(os, "posix_fallocate", None)  # absent on macOS
    if allocate is None:
        return
    size = file.stat().st_size
    fd = os.open(file, os.O_RDWR)
    try:
        allocate(fd, 0, size)
        full = False
    except OSError as err:
        full, code = err.errno in (errno.ENOSPC, errno.EDQUOT), err.errno
    finally:
        os.close(fd)
    if full:
        file.unlink(missing_ok=True)
        raise CacheSpaceError(
            code,
            f"no room for the feature cache {file.parent} ({_size(size)} of float16 "
            f"features; {_size(shutil.disk_usage(file.parent).free)} free): free "
            "space, or put the caches elsewhere (run or eval --cache DIR, or $FSAR_CACHE)",
        )


def _size(n: int) -> str:
    """``n`` bytes in GiB, or MiB below one GiB (small caches read "0.00 GiB")."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


class CorruptCacheError(ValueError):
    """A feature cache whose files cannot be read (truncated, empty, inconsistent)."""


class CacheFormatError(ValueError):
    """A feature cache written in another format version."""


def default_cache_root() -> Path:
    """``$FSAR_CACHE`` if set, else the platform's user cache folder for fsarbench."""
    env = os.environ.get("FSAR_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("fsarbench"))


def cache_folder(key: CacheKey, root: str | Path | None = None) -> Path:
    """``<root>/features/<dataset>/<split>/<key digest>``."""
    root = default_cache_root() if root is None else Path(root)
    return root / "features" / key.dataset / key.split / key.digest()


class FeatureCache:
    """A feature store over one cache folder (see the module docstring for the layout).

    Implements :class:`fsarbench.features.store.FeatureStore`: ``get(indices, views=None)``
    returns float32 ``[n, T, D]``; entries not yet extracted (or failed) raise ``KeyError``.
    """

    def __init__(
        self,
        path: Path,
        index: dict[str, Any],
        data: np.ndarray,
        status: np.ndarray,
        errors: dict[str, str],
        writable: bool,
    ) -> None:
        self.path = path
        self.index = index
        self._data = data  # memmap [N, V, T, D] float16
        self._status = status  # uint8 char codes [N, V]
        self.errors = errors  # "index/view" -> message
        self.writable = writable

    # ---- creation and opening -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        video_ids: list[str],
        num_views: int,
        num_frames: int,
        feature_dim: int,
        classes: list[str] | None = None,
        class_indices: list[int] | None = None,
        key: CacheKey | None = None,
        made_with: list[dict[str, Any]] | None = None,
    ) -> FeatureCache:
        """Preallocate an empty cache at ``path`` (a new or empty folder). ``made_with``:
        the environments of features it starts with (copied from an earlier cache)."""
        path = Path(path)
        if (path / "index.json").exists():
            raise FileExistsError(f"{path} already holds a feature cache; open it instead")
        n = len(video_ids)
        for name, values in (("classes", classes), ("class_indices", class_indices)):
            if values is not None and len(values) != n:
                raise ValueError(f"{len(values)} {name} for {n} video ids")
        path.mkdir(parents=True, exist_ok=True)
        shape = (n, num_views, num_frames, feature_dim)
        np.lib.format.open_memmap(
            path / "features.npy", mode="w+", dtype=np.float16, shape=shape
        ).flush()
        _reserve_disk(path / "features.npy")
        index = {
            "format": FORMAT_VERSION,
            "shape": list(shape),
            "video_ids": list(video_ids),
            "classes": classes,
            "class_indices": class_indices,
            "key": key.digest() if key else None,
            "key_fields": dataclasses.asdict(key) if key else None,
        }
        if made_with:  # not in index.json: a keyless cache is identified by its bytes
            atomic_write_json(path / MADE_WITH_FILE, list(made_with))
        atomic_write_json(path / "progress.json", {"status": _TODO * (n * num_views), "errors": {}})
        atomic_write_json(path / "index.json", index)
        return cls.open(path, writable=True)

    @classmethod
    def open(cls, path: str | Path, *, writable: bool = False) -> FeatureCache:
        """Open the cache at ``path`` (memory-mapped; ``writable`` to extract into it)."""
        path = Path(path)
        if not (path / "index.json").is_file():
            raise FileNotFoundError(
                f"{path} is not a feature cache (no index.json); "
                "create one with 'python -m fsarbench extract'"
            )
        try:
            return cls._open(path, writable)
        except (OSError, EOFError, ValueError, KeyError, TypeError) as err:
            if isinstance(err, CacheFormatError):
                raise
            raise CorruptCacheError(
                f"feature cache {path} is damaged ({type(err).__name__}: {err}); delete the "
                "folder and extract again (python -m fsarbench extract, or re-run)"
            ) from None

    @classmethod
    def _open(cls, path: Path, writable: bool) -> FeatureCache:
        index = json.loads((path / "index.json").read_text())
        if index.get("format") != FORMAT_VERSION:
            raise CacheFormatError(
                f"{path}: cache format {index.get('format')} is not {FORMAT_VERSION}; re-extract it"
            )
        data = np.load(path / "features.npy", mmap_mode="r+" if writable else "r")
        if list(data.shape) != index["shape"] or data.dtype != np.float16:
            raise ValueError(
                f"{path}/features.npy is {data.dtype} {data.shape}, index says "
                f"float16 {index['shape']}"
            )
        progress = json.loads((path / "progress.json").read_text())
        status = np.frombuffer(progress["status"].encode(), dtype=np.uint8).copy()
        if status.size != data.shape[0] * data.shape[1]:
            raise ValueError(f"{path}/progress.json does not match the cache shape")
        return cls(path, index, data, status.reshape(data.shape[:2]), progress["errors"], writable)

    # ---- FeatureStore ---------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._data.shape[0])

    @property
    def feature_shape(self) -> tuple[int, int]:
        return int(self._data.shape[2]), int(self._data.shape[3])

    @property
    def num_views(self) -> int:
        return int(self._data.shape[1])

    @property
    def video_ids(self) -> list[str]:
        return self.index["video_ids"]

    @property
    def classes(self) -> list[str] | None:
        return self.index["classes"]

    @property
    def class_indices(self) -> list[int] | None:
        """One class id per video (the ``video_classes`` of ``make_manifest``)."""
        return self.index["class_indices"]

    def class_name_table(self) -> list[str] | None:
        """Class id -> class name (``[max id + 1]``; an id no video has is named by its
        number), or ``None`` when the cache was written without class names or ids."""
        if not self.classes or not self.class_indices:
            return None
        by_id = dict(zip(self.class_indices, self.classes))
        return [str(by_id.get(c, c)) for c in range(max(self.class_indices) + 1)]

    @property
    def key(self) -> str | None:
        return self.index["key"]

    @property
    def made_with(self) -> list[dict[str, Any]]:
        """The environments its features were extracted in (device, CPU, threads, library
        versions; :func:`~fsarbench.features.made_with.extraction_environment`), one per
        set of library versions that wrote some of them, oldest first (:data:`UNKNOWN_MAKER`
        for features stored before they were kept); ``[]`` for a cache written before."""
        try:
            return list(json.loads((self.path / MADE_WITH_FILE).read_text()))
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError):  # unreadable: say so, never guess
            return [{"unknown": f"{MADE_WITH_FILE} cannot be read"}]

    def note_extraction(self, env: dict[str, Any]) -> bool:
        """Record that ``env`` writes features into this (writable) cache, once per set of
        library versions; whether it was added (:meth:`forget_extraction` takes it back)."""
        made_with = self._writable_made_with()
        if any(m.get("libraries") == env.get("libraries") for m in made_with):
            return False
        atomic_write_json(self.path / MADE_WITH_FILE, [*made_with, env])
        return True

    def forget_extraction(self, env: dict[str, Any]) -> None:
        """Take back :meth:`note_extraction`'s ``env`` (an extraction that wrote nothing)."""
        made_with = [m for m in self._writable_made_with() if m != env]
        if made_with:
            atomic_write_json(self.path / MADE_WITH_FILE, made_with)
        else:
            (self.path / MADE_WITH_FILE).unlink(missing_ok=True)

    def note_earlier_features(self) -> None:
        """Before an extraction writes into a cache that stores features but no record of
        what extracted them (a cache written before they were kept): an
        :data:`UNKNOWN_MAKER` entry, so those features are not credited to this one."""
        if not self._writable_made_with() and self.done_mask.any():
            atomic_write_json(self.path / MADE_WITH_FILE, [UNKNOWN_MAKER])

    def _writable_made_with(self) -> list[dict[str, Any]]:
        if not self.writable:
            raise ValueError(f"{self.path} is open read-only")
        return self.made_with

    def get(self, indices: np.ndarray | Tensor, views: np.ndarray | Tensor | None = None) -> Tensor:
        """Features of videos ``indices [n]`` (view ``views [n]``, default 0): float32
        ``[n, T, D]``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        view = np.zeros_like(idx) if views is None else np.asarray(views, np.int64).reshape(-1)
        if view.shape != idx.shape:
            raise ValueError(f"{view.size} views for {idx.size} indices")
        ok = self._status[idx, view] == ord(_DONE)
        if not ok.all():
            i, v = int(idx[~ok][0]), int(view[~ok][0])
            raise KeyError(
                f"{self.path}: video {i} ({self.video_ids[i]}) view {v} has no "
                f"features ({self._entry_state(i, v)}); "
                "run 'python -m fsarbench extract' to finish the cache"
            )
        return torch.from_numpy(self._data[idx, view].astype(np.float32))

    def _entry_state(self, index: int, view: int) -> str:
        if self._status[index, view] == ord(_FAILED):
            return f"failed: {self.errors.get(f'{index}/{view}', '?')}"
        return "not extracted yet"

    # ---- progress -------------------------------------------------------------------------
    @property
    def done_mask(self) -> np.ndarray:
        """bool ``[N, V]``: entries whose features are stored."""
        return self._status == ord(_DONE)

    @property
    def failed_mask(self) -> np.ndarray:
        """bool ``[N, V]``: entries whose video could not be read (see ``errors``)."""
        return self._status == ord(_FAILED)

    @property
    def is_complete(self) -> bool:
        """True when every entry is stored (no failures, nothing left to do)."""
        return bool(self.done_mask.all())

    @property
    def usable_videos(self) -> np.ndarray:
        """Indices of videos whose every view is stored (build manifests over these)."""
        return np.flatnonzero(self.done_mask.all(axis=1))

    def write(self, indices: np.ndarray, views: np.ndarray, features: np.ndarray) -> None:
        """Store ``features [n, T, D]`` for entries ``(indices [n], views [n])``; they count
        as done after the next :meth:`flush`."""
        self._require_writable()
        expected = (len(indices), *self.feature_shape)
        if features.shape != expected:
            raise ValueError(
                f"features of shape {features.shape} for a cache of [n, T, D] = "
                f"{expected}: clips must have T={expected[1]} frames"
            )
        self._data[indices, views] = features.astype(np.float16, copy=False)
        self._status[indices, views] = ord(_DONE)
        for i, v in zip(indices.tolist(), views.tolist()):
            self.errors.pop(f"{i}/{v}", None)

    def mark_failed(self, index: int, view: int, error: str) -> None:
        """Record that entry ``(index, view)`` could not be read, with the reason."""
        self._require_writable()
        self._status[index, view] = ord(_FAILED)
        self.errors[f"{index}/{view}"] = error

    def flush(self) -> None:
        """Flush the features to disk, then atomically rewrite the progress file."""
        self._require_writable()
        self._data.flush()
        atomic_write_json(
            self.path / "progress.json",
            {"status": self._status.tobytes().decode(), "errors": self.errors},
        )

    def _require_writable(self) -> None:
        if not self.writable:
            raise PermissionError(f"{self.path} was opened read-only; open(writable=True)")

    def __repr__(self) -> str:
        n, v, t, d = self._data.shape
        done = int(self.done_mask.sum())
        return (
            f"FeatureCache({str(self.path)!r}, videos={n}, views={v}, T={t}, D={d}, "
            f"done={done}/{n * v}, failed={int(self.failed_mask.sum())})"
        )
