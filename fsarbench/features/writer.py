"""A background writer for the feature cache: the extraction loop hands each batch's
features to it and goes on with the next forward, while this thread copies them to the
host (on GPUs), stores them and flushes the cache every ``flush_every_s`` seconds.

A bounded queue keeps at most ``max_pending`` batches in flight (memory stays bounded and
a slow disk slows the loop instead of growing the queue). Entries are stored in the order
they were handed over, so the cache ends byte-equal to a synchronous loop's; an error in
the thread is raised in the loop at its next hand-over or at :meth:`CacheWriter.close`.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fsarbench.features.cache import FeatureCache

__all__ = ["CacheWriter"]

_STOP = object()


class CacheWriter:
    """Stores features and failures into ``cache`` from a daemon thread.

    Use as a context manager: on exit the queue is drained (everything handed over is
    stored, also after an interruption) and the thread stops; the caller flushes.
    """

    def __init__(self, cache: FeatureCache, flush_every_s: float, max_pending: int = 4) -> None:
        self.cache, self.flush_every_s = cache, flush_every_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, max_pending))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="feature-cache-writer")
        self._thread.daemon = True
        self._thread.start()

    def write(self, index: np.ndarray, view: np.ndarray, features: Tensor) -> None:
        """Queue ``features [n, T, D]`` (any device and float dtype) for entries
        ``(index [n], view [n])``; stored as float16."""
        self._put(("write", index, view, features))

    def mark_failed(self, failed: list[tuple[int, int, str]]) -> None:
        """Queue entries that could not be read, as ``(index, view, error)``."""
        if failed:
            self._put(("failed", failed))

    def close(self) -> None:
        """Store everything queued, stop the thread, raise the thread's error if any."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        try:
            self.close()
        except RuntimeError:
            if exc_type is None:  # an interruption in flight is the error to report
                raise

    def _put(self, item: tuple) -> None:
        self._raise()
        while True:  # wake up now and then: a dead thread would never take the item
            try:
                self._queue.put(item, timeout=1.0)
                return
            except queue.Full:
                self._raise()
                if not self._thread.is_alive():
                    raise RuntimeError("the feature-cache writer thread stopped") from None

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"writing the feature cache failed: {error}") from error

    def _work(self) -> None:
        last_flush = time.perf_counter()
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue  # drain after a failure; the loop raises it
            try:
                self._store(item)
                if time.perf_counter() - last_flush > self.flush_every_s:
                    self.cache.flush()
                    last_flush = time.perf_counter()
            except BaseException as err:  # reported to the loop, never lost in the thread
                self._error = err

    def _store(self, item: tuple) -> None:
        if item[0] == "failed":
            for index, view, error in item[1]:
                self.cache.mark_failed(index, view, error)
            return
        _, index, view, features = item
        host = features.to("cpu", torch.float16)
        finite = torch.isfinite(host).flatten(1).all(1)
        if not bool(finite.all()):  # NaN weights were cached for every video, unsaid
            bad = index[~finite.numpy()]
            ids = [self.cache.video_ids[int(i)] for i in bad[:5]]  # not cache positions
            raise FloatingPointError(
                f"the backbone gave NaN/inf features for {len(bad)} of {len(index)} clips "
                f"(videos {ids}{' ...' if len(bad) > 5 else ''}): its weights or its input are "
                "broken, or its "
                "outputs exceed float16 (the cache's precision); nothing of this batch was "
                "stored"
            )
        self.cache.write(index, view, host.numpy())
