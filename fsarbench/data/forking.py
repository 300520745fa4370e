"""Forking worker processes from a process that holds decoders.

A forked child inherits the parent's objects, garbage included. One child that collected an
inherited decord reader deadlocked in its destructor (``pthread_cond_destroy``: the reader's
threads exist only in the parent). So garbage is collected in the parent first, where the
readers' threads live, and what is left is frozen out of the children's collections while
they start.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["clean_fork", "start_workers"]


@contextmanager
def clean_fork() -> Iterator[None]:
    """Collect garbage, then keep every live object out of the cyclic collections of the
    processes forked inside the block (the parent's own collections resume after it)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def start_workers(loader: Any) -> Iterator[Any]:
    """``iter(loader)`` of a torch ``DataLoader``, its worker processes (started there)
    forked inside :func:`clean_fork`."""
    if not getattr(loader, "num_workers", 0):
        return iter(loader)
    with clean_fork():
        return iter(loader)
