"""Whether the user has asked this command to stop (Ctrl-C, SIGTERM).

While a command runs, Ctrl-C and SIGTERM (a scheduler's kill, ``timeout``, torchrun stopping
its ranks) both raise ``KeyboardInterrupt`` and are remembered here. Some readers written in
C turn an interrupt raised inside them into an error of their own: pandas' CSV parser,
reading a gzip stream, raises ``ParserError``. Code that catches such errors to skip or redo
a damaged file calls :func:`raise_if_interrupted` first, so an interrupt still ends the
command (exit status 130) and is never reported, or acted on, as a damaged file.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["interrupts_recorded", "interrupt_requested", "raise_if_interrupted"]

_REQUESTED = threading.Event()


def interrupt_requested() -> bool:
    """Whether Ctrl-C or SIGTERM has reached this command (inside :func:`interrupts_recorded`)."""
    return _REQUESTED.is_set()


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if the command was asked to stop; call it before treating
    an error as bad data."""
    if _REQUESTED.is_set():
        raise KeyboardInterrupt("interrupted")


def _interrupt(signum, frame) -> None:
    _REQUESTED.set()
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def interrupts_recorded() -> Iterator[None]:
    """Record Ctrl-C and SIGTERM (each raising ``KeyboardInterrupt``, as Ctrl-C does) while
    the block runs. A signal whose handler is not the default (submitit's preemption handler,
    SIGINT ignored in a background job, an enclosing block's own) is left alone, as is
    everything off the main thread; the block that installs a handler starts and ends with
    no interrupt recorded (a nested command leaves its caller's record alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    taken = {s: d for s, d in defaults.items() if signal.getsignal(s) is d}
    if not taken:
        yield
        return
    _REQUESTED.clear()
    for signum in taken:
        signal.signal(signum, _interrupt)
    try:
        yield
    finally:
        for signum, default in taken.items():
            signal.signal(signum, default)
        _REQUESTED.clear()
