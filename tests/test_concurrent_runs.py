"""Processes sharing one results folder: every model unit is trained once, every cell
evaluated once, and the summary equals a single process's; a killed lock holder blocks
nobody."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pandas as pd
import pytest
from test_runner import CELLS, OPTS, provider

from fsarbench.experiments.runner import RunOptions, run_cells
from fsarbench.locks import held
from fsarbench.training import trainer


def _worker(out: str, log: str) -> None:
    real = trainer.FeatureSource.stage

    def counted(self, name, first_step, steps):
        if first_step < steps:
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {name}\n")
        return real(self, name, first_step, steps)

    trainer.FeatureSource.stage = counted
    run_cells(CELLS, provider, RunOptions(out, **OPTS))


@pytest.mark.parametrize("processes", [2, 3])
def test_concurrent_runs_train_each_model_once_and_agree(tmp_path, processes):
    ctx = mp.get_context("spawn")  # fork after torch threads can deadlock
    log = tmp_path / "trainings.txt"
    shared = str(tmp_path / "shared")
    procs = [ctx.Process(target=_worker, args=(shared, str(log))) for _ in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    _worker(str(tmp_path / "alone"), str(tmp_path / "alone.txt"))
    shared = log.read_text().splitlines()
    alone = (tmp_path / "alone.txt").read_text().splitlines()
    assert len(shared) == len(alone) == 3  # protonet 1-shot, 2-shot, l2 1-shot: once each
    cols = ["method", "way", "shot", "accuracy", "ci95", "config_hash"]
    a = pd.read_csv(tmp_path / "shared" / "summary.csv")[cols]
    b = pd.read_csv(tmp_path / "alone" / "summary.csv")[cols]
    pd.testing.assert_frame_equal(a, b)


def _hold_forever(path: str) -> None:
    with held(path, what="test"):
        time.sleep(600)


def test_a_killed_holder_does_not_block_the_next_process(tmp_path, monkeypatch):
    monkeypatch.setenv("FSAR_LOCK_TIMEOUT", "20")
    lock = tmp_path / "unit.lock"
    proc = mp.get_context("spawn").Process(target=_hold_forever, args=(str(lock),))
    proc.start()
    deadline = time.time() + 30
    while not lock.with_name("unit.lock.holder.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    start = time.perf_counter()
    with held(lock, what="test"):
        pass
    assert time.perf_counter() - start < 5


def test_a_file_system_without_flock_locks_by_file_existence(tmp_path, monkeypatch, caplog):
    """Older filelock raised NotImplementedError where flock is not implemented (Lustre
    without -o flock) and the run stopped; the lock falls back to a lock file, warned once
    per folder, and still excludes a second holder."""
    import fsarbench.locks as locks
    from fsarbench.locks import LockTimeout

    class NoFlock(locks.FileLock):
        def acquire(self, *args, **kwargs):  # as filelock 3.12: the lock file stays behind
            open(self.lock_file, "a").close()
            raise NotImplementedError("FileSystem does not appear to support flock")

    monkeypatch.setattr(locks, "FileLock", NoFlock)
    monkeypatch.setattr(locks, "_SOFT_FOLDERS", set())
    monkeypatch.setenv("FSAR_LOCK_TIMEOUT", "0.3")
    path = tmp_path / "locks" / "cell.lock"
    with caplog.at_level("WARNING", logger="fsarbench.locks"):
        with held(path, what="cell"):
            assert path.with_name("cell.lock.soft").exists()
            with pytest.raises(LockTimeout, match="still locked"), held(path, what="cell"):
                pass
        with held(path, what="cell"), held(tmp_path / "locks" / "other.lock", what="other"):
            pass
    assert caplog.text.count("does not implement flock") == 1
