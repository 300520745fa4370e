"""Atomic file writes and content hashes: results are never half-written."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "stable_hash",
    "md5_file",
    "remove_cut_writes",
]


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) while in the block;
    other processes asking for it wait (POSIX ``flock``)."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask (``0o666 & ~umask``),
    read from ``/proc`` where it is shown (setting the umask to read it races with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``; the file gets
    the mode a plain ``open()`` would give it (``mkstemp``'s 0600 kept results, figures and
    tables from the rest of a team sharing the folder)."""
    tmp = staged_write(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def staged_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` (``.<name>.<random>.tmp``, flushed
    to disk) and return it, for the caller to ``os.replace`` onto ``path`` once everything
    that goes with it is written too. An error names ``path`` (a full disk's ``[Errno 28]``
    named no file) and leaves no temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None:
            raise type(err)(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


_FILE_MODE = _new_file_mode()


#: A temporary file of an atomic write this much older than now is a killed process's: the
#: records, tables, manifests, partial evaluations and lock-holder files written in a
#: results folder take well under a second.
CUT_WRITE_AGE_S = 600.0


def remove_cut_writes(folder: Path, older_than: float | None = None) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write_bytes` calls cut short by a kill
    left in ``folder`` (``.<name>.<random>.tmp``: e.g. a 25-120 MB checkpoint, never read),
    warning for each; returns them. Call it only while no other process writes there (with
    the folder's lock held), or with ``older_than`` seconds: then only files not modified
    for that long go (a write in progress elsewhere is younger)."""
    cutoff = None if older_than is None else time.time() - older_than
    removed = []
    for tmp in sorted(Path(folder).glob(".*.tmp")):
        try:
            if cutoff is not None and tmp.stat().st_mtime > cutoff:
                continue
        except FileNotFoundError:  # its write just finished
            continue
        log.warning("removing %s: a write cut short (its process was killed)", tmp)
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def json_bytes(obj: Any) -> bytes:
    """``obj`` as the JSON files fsarbench writes (indented, sorted keys, numpy as lists)."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def stable_hash(obj: Any, n: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj``, first ``n`` hex digits."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
