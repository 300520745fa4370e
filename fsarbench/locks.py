"""Locks for processes sharing a results folder or a feature cache (``filelock``: ``flock``
on POSIX, released by the OS when its holder dies, so a killed run never blocks the next).

A process that finds a lock taken logs who holds it (host, pid, start time, from a small
``<lock>.holder.json`` beside the lock), waits — up to ``$FSAR_LOCK_TIMEOUT`` seconds when
set, else as long as it takes — and then goes on, finding what the holder finished.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, SoftFileLock, Timeout

from fsarbench.env_settings import env_number
from fsarbench.io import atomic_write_text

__all__ = ["LockTimeout", "held"]

log = logging.getLogger(__name__)


class LockTimeout(RuntimeError):
    """A lock stayed taken longer than ``$FSAR_LOCK_TIMEOUT``."""


def _holder_path(lock: Path) -> Path:
    return lock.with_name(lock.name + ".holder.json")


def _holder(lock: Path) -> str:
    try:
        info = json.loads(_holder_path(lock).read_text())
    except (OSError, ValueError):
        return "another process (no holder information)"
    return f"pid {info['pid']} on {info['host']} since {info['since']}"


def lock_timeout() -> float:
    """``$FSAR_LOCK_TIMEOUT``: seconds to wait for a lock another process holds (unset or
    negative: wait as long as it is held)."""
    return env_number(
        "FSAR_LOCK_TIMEOUT",
        -1.0,
        allow_inf=True,
        what="seconds to wait for a lock another process holds",
    )


def _soft_lock(path: Path) -> SoftFileLock:
    """The lock newer filelock versions fall back to where ``flock`` is not implemented
    (Lustre without ``-o flock``, some NFS mounts): a lock file that exists while held. Unlike
    ``flock`` it outlives a killed holder; its holder is named while a run waits for it."""
    if path.parent not in _SOFT_FOLDERS:  # once per folder, not once per cell
        _SOFT_FOLDERS.add(path.parent)
        log.warning(
            "the file system of %s does not implement flock: locking by file existence "
            "instead (a lock left by a killed run must be deleted by hand, e.g. %s)",
            path.parent,
            path.with_name(path.name + ".soft"),
        )
    # not ``path`` itself: the failed flock attempt left that file behind, and a soft lock
    # takes any existing file for a holder
    return SoftFileLock(str(path.with_name(path.name + ".soft")))


_SOFT_FOLDERS: set[Path] = set()


@contextmanager
def held(
    path: str | Path, *, what: str, wait: bool = True, busy_remedy: str = ""
) -> Iterator[None]:
    """Hold the lock file ``path`` (created with its folder) for ``what``. ``wait=False``:
    a lock another process holds raises :class:`LockTimeout` at once, naming the holder and
    then ``busy_remedy`` (for callers whose partners cannot wait as long, e.g. torchrun's
    other ranks)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        try:
            lock.acquire(timeout=0)
        except NotImplementedError:  # older filelock on a file system without flock
            lock = _soft_lock(path)
            lock.acquire(timeout=0)
    except Timeout:
        holder, timeout = _holder(path), lock_timeout()
        if not wait:
            raise LockTimeout(f"{what} is in use by {holder}{busy_remedy}") from None
        log.warning("waiting for %s: it is held by %s", what, holder)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise LockTimeout(
                f"{what} is still locked after {timeout:.0f} s by {holder}; wait for that "
                "process, or raise FSAR_LOCK_TIMEOUT"
            ) from None
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%c")}
        atomic_write_text(_holder_path(path), json.dumps(info))
        yield
    finally:
        _holder_path(path).unlink(missing_ok=True)
        lock.release()
