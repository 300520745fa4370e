"""Forking worker processes from a process that holds decoders.

A forked child inherits the parent's objects, garbage included. One child that collected an
inherited decord reader deadlocked in its destructor (``pthread_cond_destroy``: the reader's
threads exist only in the parent). So garbage is collected in the parent first, where the
readers' threads live, and what is left is frozen out of the children's collections while
they start.

A SIGTERM sent to the whole process group (torchrun stops its ranks with ``killpg``, so each
rank's DataLoader workers get it too) ends a worker as Ctrl-C's SIGINT does: quietly, leaving
the parent, which got the signal as well, to unwind and shut its workers down. Torch's own
handler let the worker die of the signal, and the parent then failed with "DataLoader worker
(pid N) is killed by signal: Terminated" instead of taking its interrupted path.
"""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["EndOnTerm", "clean_fork", "start_workers"]


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


def _interrupt(signum: int, frame: Any) -> None:
    """Inside torch's worker loop, end it as Ctrl-C does; after it (the worker is exiting,
    and the parent's shutdown terminates a slow one) end without a traceback: a
    KeyboardInterrupt raised in multiprocessing's exit path printed one, which read as a
    crash after the "interrupted" line."""
    while frame is not None:
        if frame.f_code.co_name == "_worker_loop":
            raise KeyboardInterrupt(f"signal {signum}")
        frame = frame.f_back
    os._exit(128 + signum)


class EndOnTerm:
    """A DataLoader ``worker_init_fn`` that first makes SIGTERM raise ``KeyboardInterrupt``
    in the worker (torch's worker loop ends quietly on it, as on Ctrl-C), then calls
    ``init`` (the loader's own ``worker_init_fn``, if any)."""

    def __init__(self, init: Callable[[int], None] | None) -> None:
        self.init = init

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGTERM, _interrupt)
        if self.init is not None:
            self.init(worker_id)


def start_workers(loader: Any) -> Iterator[Any]:
    """``iter(loader)`` of a torch ``DataLoader``, its worker processes (started there)
    forked inside :func:`clean_fork`, each ending on SIGTERM as on Ctrl-C (:class:`EndOnTerm`)."""
    if not getattr(loader, "num_workers", 0):
        return iter(loader)
    if not isinstance(loader.worker_init_fn, EndOnTerm):
        loader.worker_init_fn = EndOnTerm(loader.worker_init_fn)
    with clean_fork():
        return iter(loader)
