"""Progress on long work: a tqdm bar on a terminal; plain, timestamped lines (at most one per
``FSAR_PROGRESS_EVERY`` seconds, default 30, and one at the end) when stderr is a file or a
pipe, so CI logs and ``2> log`` hold readable lines instead of carriage-return bars."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm

from fsarbench.env_settings import env_number, env_switch

__all__ = ["PlainProgress", "progress_bar", "progress_every", "progress_on"]


class PlainProgress:
    """The part of tqdm's interface the harness uses, writing one line per interval."""

    def __init__(
        self,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        every: float = 30.0,
        stream=None,
        **_: Any,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.initial = initial  # done before this process started (a resume): not in the rate
        self.every, self.stream = every, stream or sys.stderr
        self.start = self.last = time.perf_counter()
        self.postfix = ""
        self.closed = False
        self.shown = None  # the count of the last line printed

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.perf_counter() - self.last >= self.every:
            self._line()

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        del refresh
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.shown != self.n:  # the last update's line already said it
                self._line()

    def _line(self) -> None:
        self.last = now = time.perf_counter()
        self.shown = self.n
        elapsed = now - self.start
        of = f"/{self.total}" if self.total is not None else ""
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        extra = f", {self.postfix}" if self.postfix else ""
        stamp = time.strftime("%H:%M:%S")
        print(
            f"{stamp} {self.desc}: {self.n}{of} {self.unit} ({elapsed:.0f} s, "
            f"{rate:.2f} {self.unit}/s{self._left(rate)}{extra})",
            file=self.stream,
            flush=True,
        )

    def _left(self, rate: float) -> str:
        """``", about 4 min left"`` at ``rate``; ``""`` when done, unknown or not started."""
        if self.closed or self.total is None or rate <= 0 or self.n >= self.total:
            return ""
        seconds = (self.total - self.n) / rate
        if seconds < 90:
            return f", about {seconds:.0f} s left"
        if seconds < 5400:
            return f", about {seconds / 60:.0f} min left"
        return f", about {seconds / 3600:.1f} h left"


def progress_bar(*, disable: bool = False, **kwargs: Any) -> tqdm | PlainProgress:
    """A tqdm bar on a terminal, plain lines otherwise; ``FSAR_PROGRESS=0`` (or ``disable``)
    turns progress off entirely."""
    if not progress_on():
        disable = True
    if not disable and not sys.stderr.isatty():
        return PlainProgress(every=progress_every(), **kwargs)
    return tqdm(file=sys.stderr, disable=disable, dynamic_ncols=True, mininterval=0.5, **kwargs)


def progress_on() -> bool:
    """``$FSAR_PROGRESS``: ``0`` (or ``false``, ``no``, ``off``) turns progress bars and
    lines off (default on)."""
    return env_switch("FSAR_PROGRESS", True, what="progress bars and lines")


def progress_every() -> float:
    """``$FSAR_PROGRESS_EVERY``: seconds between plain progress lines (default 30; 0 prints
    one per update)."""
    return env_number(
        "FSAR_PROGRESS_EVERY",
        30.0,
        minimum=0,
        allow_inf=True,
        what="seconds between plain progress lines",
    )
