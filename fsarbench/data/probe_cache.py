"""What probing a video found, kept across runs: the probe decodes a video's first and last
frames (a truncated file can keep its header), which on a large dataset takes minutes, and
every ``run`` of the finetune track probes every video of every split.

An entry is reused only while the file keeps its size and modification time, and only under
the probe code and decoder versions that made it; everything else is probed again.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from fsarbench.io import atomic_write_json, file_lock

log = logging.getLogger(__name__)

__all__ = ["PROBE_VERSION", "ProbeCache", "probe_cache_path"]

#: Bump with any change to what a probe decodes or returns.
PROBE_VERSION = 4  # 1: first frame; 2: first and last frames; 3: cut-off webm, size changes;
# 4: mp4 cut at a packet boundary, AVI cut near its end, WebM with audio cut, AVIs decord
# cannot seek in


def _versions() -> dict[str, Any]:
    """The probe code's and the decoders' versions (decord is absent off x86-64 Linux)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    return {"probe": PROBE_VERSION, "decord": installed("decord"), "av": installed("av")}


def probe_cache_path(cache_root: str | Path, dataset: str) -> Path:
    """``<cache_root>/probes/<dataset>.json``: one file per dataset variant, so a run reads
    only its datasets' entries (SSv2-full alone has 200k videos)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", dataset)
    return Path(cache_root) / "probes" / f"{name}.json"


class ProbeCache:
    """Probe results by absolute path: ``lookup(path)`` gives the frame count (int) or the
    cause (str) found before, or ``None``; ``store`` records one; ``save`` merges them into
    the file (under a lock, so concurrent runs keep each other's entries). ``path=None``
    keeps nothing."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._versions = _versions()
        self._entries = self._load()
        self._new: dict[str, list[Any]] = {}

    def _load(self) -> dict[str, list[Any]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            entries = data["entries"] if data.get("versions") == self._versions else {}
            return {k: v for k, v in entries.items() if isinstance(v, list) and len(v) == 3}
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
            log.warning("ignoring unreadable probe cache %s (%s); probing again", self.path, err)
            return {}

    @staticmethod
    def _stat(path: Path) -> tuple[str, int, int]:
        st = path.stat()
        return str(path.resolve()), st.st_size, st.st_mtime_ns

    def lookup(self, path: Path) -> int | str | None:
        key, size, mtime = self._stat(path)
        entry = self._new.get(key) or self._entries.get(key)
        if entry is None or entry[0] != size or entry[1] != mtime:
            return None
        return entry[2]

    def store(self, path: Path, result: int | str) -> None:
        key, size, mtime = self._stat(path)
        self._new[key] = [size, mtime, result]

    def save(self) -> None:
        if self.path is None or not self._new:
            return
        with file_lock(self.path.with_suffix(".lock")):
            self._entries = {**self._load(), **self._new}
            atomic_write_json(self.path, {"versions": self._versions, "entries": self._entries})
        self._new = {}
