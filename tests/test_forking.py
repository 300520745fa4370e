"""Worker processes forked from a process holding decoders: garbage is collected in the
parent first and the rest is frozen out of the children's collections (a forked child that
collected an inherited decord reader deadlocked in its destructor)."""

from __future__ import annotations

import gc
import os
import subprocess
import time

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from fsarbench.data.forking import start_workers


class FreezeCounts(Dataset):
    """Item ``i``: the freeze count of the process that serves it."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        return gc.get_freeze_count()


class _Reader:
    """Stands in for a decoder whose destructor must run where its threads live."""

    def __init__(self, log: list[int]) -> None:
        self.log, self.me = log, self  # a cycle: only the cyclic collector frees it

    def __del__(self) -> None:
        self.log.append(os.getpid())


def test_workers_start_without_the_parents_garbage_and_with_the_rest_frozen():
    log: list[int] = []
    reader = _Reader(log)
    gc.collect()  # the reader survives into the oldest generation, as a long-lived one does
    del reader  # garbage now, but only a full collection would find it
    loader = DataLoader(FreezeCounts(), batch_size=None, num_workers=1)
    batches = start_workers(loader)
    assert log == [os.getpid()]  # destroyed in the parent, before the worker was forked
    assert gc.get_freeze_count() == 0  # the parent's own collections resumed
    assert all(int(n) > 0 for n in batches)  # the worker's collector ignores inherited objects


def test_without_workers_the_loader_is_iterated_as_is():
    loader = DataLoader(torch.arange(3), batch_size=None, num_workers=0)
    assert [int(x) for x in start_workers(loader)] == [0, 1, 2]


class SlowInitFlags(Dataset):
    """Item ``i``: whether the loader's own ``worker_init_fn`` ran in this worker (slowly)."""

    def __len__(self) -> int:
        return 1000

    def __getitem__(self, i: int) -> str:
        time.sleep(0.02)
        return os.environ.get("FSAR_TEST_WORKER_INIT", "")


def _own_init(worker_id: int) -> None:
    os.environ["FSAR_TEST_WORKER_INIT"] = f"ran in {worker_id}"


def test_a_sigterm_ends_a_worker_as_ctrl_c_does_and_the_loaders_own_init_still_runs():
    """torchrun stops a rank with killpg: its DataLoader workers get the SIGTERM too. They
    died of it, and the rank then failed with 'DataLoader worker (pid N) is killed by
    signal: Terminated' instead of taking its interrupted path; now they end quietly."""
    loader = DataLoader(SlowInitFlags(), batch_size=None, num_workers=1, worker_init_fn=_own_init)
    batches = start_workers(loader)
    assert next(batches) == "ran in 0"
    (worker,) = batches._workers
    # from another process, as torchrun's: torch's handler exits quietly only for the parent
    subprocess.run(["kill", "-TERM", str(worker.pid)], check=True)
    worker.join(timeout=30)
    assert worker.exitcode == 0  # torch's own handler: -15, killed by the signal
    del batches  # the parent shuts its workers down without an error


def test_a_sigterm_after_the_worker_loop_ends_the_worker_without_a_traceback():
    """A SIGTERM in a worker's exit path (the parent terminating a slow worker) raised
    KeyboardInterrupt in multiprocessing's queue close: a traceback after "interrupted"."""
    import sys

    from fsarbench.data.forking import _interrupt

    def _worker_loop():  # torch's loop, by name
        _interrupt(15, sys._getframe())

    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        _worker_loop()
    code = (
        "import sys; from fsarbench.data.forking import _interrupt; _interrupt(15, sys._getframe())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 128 + 15 and done.stderr == ""
