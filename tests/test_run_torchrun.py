"""``run`` under torchrun: each process trains and evaluates whole model units of its own (as
``--shard`` deals them), rank 0 alone prints, and only once every rank is done; the summary is
a plain run's. Fast tests fake the torchrun environment and run the ranks one after another
(the order a real run's final wait gives the outputs); the slow test runs torchrun itself."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_cmd import FakeProvider

import fsarbench.experiments.features as features_mod
from fsarbench.cli import run_cmd
from fsarbench.cli.main import build_parser, main
from fsarbench.distributed.env import DistEnv, dist_env, gather_when_done, shutdown_distributed
from fsarbench.distributed.launch import spawn_local
from fsarbench.experiments.runner import DatasetFeatures

ARGV = ["run", "--method", "protonet", "otam", "--dataset", "toy", "--shots", "1", "2"]
ARGV += ["--episodes", "50", "--recipe", "steps=4", "val_every=2", "val_episodes=10"]
ARGV += ["--no-progress", "--device", "cpu"]


class ToyProvider(FakeProvider):
    """In-memory features for ``run`` (whose frozen track also passes the protocol)."""

    def __call__(self, dataset: str, protocol: str | None = None) -> DatasetFeatures:
        return super().__call__(dataset)


def _torchrun(monkeypatch, rank: int, world: int = 2, posted: dict | None = None) -> dict:
    """Fake torchrun's environment for ``rank``. The final wait returns at once (the ranks
    are run in turn, the later ones first) with what the ranks run so far posted."""
    for key, value in {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world}.items():
        monkeypatch.setenv(key, str(value))
    posted = {} if posted is None else posted

    def gather(env: DistEnv, value: object) -> list[object]:
        if value is not None:  # None: the wait after a failure, while rank 0 reports
            posted[env.rank] = value
        return [posted.get(r, (0, None)) for r in range(env.world_size)]

    monkeypatch.setattr(run_cmd, "gather_when_done", gather)
    return posted


def _records(out: Path) -> set[str]:
    return {p.stem for p in (out / "records").glob("*.json")}


def test_ranks_share_the_units_and_rank_0_alone_prints_a_plain_runs_summary(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", ToyProvider)
    assert main([*ARGV, "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    out = tmp_path / "torchrun"
    posted = _torchrun(monkeypatch, rank=1)
    assert main([*ARGV, "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""  # rank 1 prints nothing
    share = _records(out)
    assert posted == {1: (len(share), None)}  # one model per cell here; then it waited
    assert share and share < _records(tmp_path / "plain")  # its units only, not all
    _torchrun(monkeypatch, rank=0, posted=posted)
    assert main([*ARGV, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert _records(out) == _records(tmp_path / "plain")
    assert posted == {1: (len(share), None), 0: (4 - len(share), None)}  # none of rank 1's
    assert "torchrun: 2 processes" in text and "4 model(s) trained" in text
    threads = f"torchrun: {torch.get_num_threads()} intra-op thread(s) per process"
    assert threads in text and "set OMP_NUM_THREADS to that run's count" in text
    assert text.count("| protonet |") == 1 and "time per stage (rank 0)" in text
    plain = (tmp_path / "plain" / "summary.csv").read_text()
    assert (out / "summary.csv").read_text() == plain


def test_under_torchrun_each_rank_takes_its_shard_its_device_and_no_progress(monkeypatch):
    args = build_parser().parse_args([*ARGV, "--out", "/tmp/unused"])
    _torchrun(monkeypatch, rank=1, world=3)
    env = run_cmd._torchrun_share(args)
    assert (env.rank, env.world_size) == (1, 3)
    assert run_cmd._shard_spec(args, env) == "1/3" and args.no_progress
    args.plan = True  # rank 0 plans the whole run
    assert run_cmd._shard_spec(args, env) is None
    assert run_cmd._shard_spec(args, DistEnv()) is None  # a plain run: its --shard, if any


def test_a_failing_rank_is_named_by_rank_0_instead_of_leaving_it_waiting(
    tmp_path, monkeypatch, capsys
):
    """A rank that raised left the run without joining the final wait: rank 0 waited for it
    until torchrun killed the job, and nobody said which rank failed or why. The failing rank
    now posts its error, and rank 0 names it and exits 2 (finished cells stay saved)."""
    from fsarbench.experiments.runner import CellRunner

    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", ToyProvider)
    original = CellRunner.run_cells

    def run_cells(self, cells, **kwargs):
        if dist_env().rank == 1:
            raise OSError("disk full")
        return original(self, cells, **kwargs)

    monkeypatch.setattr(CellRunner, "run_cells", run_cells)
    out = tmp_path / "torchrun"
    posted = _torchrun(monkeypatch, rank=1)
    assert main([*ARGV, "--out", str(out)]) == 2
    assert posted == {1: (0, "OSError: disk full")}
    _torchrun(monkeypatch, rank=0, posted=posted)
    assert main([*ARGV, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 processes stopped with an error" in err and "rank 1: OSError: disk full" in err
    assert _records(out)  # rank 0's cells are saved for the re-run, and in its tables
    assert (out / "summary.csv").exists() and list((out / "tables").glob("*.md"))


def test_ranks_other_than_0_log_warnings_only(monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger(), "level", logging.INFO)
    _torchrun(monkeypatch, rank=1)
    run_cmd._torchrun_share(build_parser().parse_args([*ARGV, "--out", "/tmp/unused"]))
    assert logging.getLogger().level == logging.WARNING
    logging.getLogger().setLevel(logging.INFO)
    _torchrun(monkeypatch, rank=0)
    run_cmd._torchrun_share(build_parser().parse_args([*ARGV, "--out", "/tmp/unused"]))
    assert logging.getLogger().level == logging.INFO


def test_under_torchrun_shard_and_launcher_are_refused(monkeypatch, capsys):
    _torchrun(monkeypatch, rank=0)
    for extra in (["--shard", "0/2"], ["--launcher", "local"]):
        assert main([*ARGV, "--out", "/tmp/unused", *extra]) == 2
        assert "each process takes its share of the model units itself" in capsys.readouterr().err


def test_plan_under_torchrun_is_printed_by_rank_0_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", ToyProvider)
    _torchrun(monkeypatch, rank=1)
    assert main([*ARGV, "--out", str(tmp_path), "--plan"]) == 0
    assert capsys.readouterr().out == ""
    _torchrun(monkeypatch, rank=0)
    assert main([*ARGV, "--out", str(tmp_path), "--plan"]) == 0
    assert "4 model(s) to train for 4 cell(s)" in capsys.readouterr().out


def _gather_worker(out: str) -> None:
    """A rank that worked without a process group (spawn_local started one: left first)."""
    shutdown_distributed()
    env = dist_env()
    if env.rank == 1:
        time.sleep(2)  # the slower rank: rank 0 waits for it
    values = gather_when_done(env, env.rank * 10)
    torch.save({"values": values, "at": time.time()}, Path(out) / f"rank{env.rank}.pt")


def test_gather_when_done_waits_for_every_rank_and_gathers_in_rank_order(tmp_path):
    start = time.time()
    spawn_local(_gather_worker, 2, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["values"] == r1["values"] == [0, 10]
    assert r0["at"] - start >= 2  # rank 0 returned only after rank 1 arrived
    assert gather_when_done(DistEnv(), 7) == [7]  # one process: nothing to wait for


@pytest.mark.slow
def test_torchrun_run_gives_the_summary_of_a_plain_run(tmp_path):
    """The defect's command line on the default synth (features extracted once, shared)."""
    env = {"FSAR_CACHE": str(tmp_path / "cache")}
    argv = ["run", "--method", "protonet", "otam", "--dataset", "synth", "--shots", "1", "2"]
    argv += ["--episodes", "50", "--recipe", "steps=4", "val_every=2", "val_episodes=10"]
    argv += ["--no-progress", "--workers", "0", "--device", "cpu", "--root", str(tmp_path / "s")]
    plain = [sys.executable, "-m", "fsarbench", *argv, "--out", str(tmp_path / "plain")]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    torchrun += ["--nproc_per_node=2", "-m", "fsarbench", *argv, "--out", str(tmp_path / "tr")]
    runs = []
    for cmd in (plain, torchrun):
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=1200, env={**_environ(), **env}
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(proc.stdout)
    assert runs[1].count("synth__frozen.md:") == 1 and "4 model(s) trained" in runs[1]
    summary = [(tmp_path / d / "summary.csv").read_text() for d in ("plain", "tr")]
    assert summary[0] == summary[1]


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


GATHER_TWICE = """
import sys
import time
from datetime import timedelta
from pathlib import Path
from fsarbench.distributed.env import dist_env, gather_when_done
env = dist_env()
first = gather_when_done(env, env.rank, timeout=timedelta(seconds=60))
if env.rank == 1:  # rank 0 reaches the second group first and reads the keys it finds
    time.sleep(2)
second = gather_when_done(env, None, timeout=timedelta(seconds=60))
Path(sys.argv[1], f"rank{env.rank}").write_text(f"{first} {second}")
"""


def test_gather_when_done_twice_under_torchrun(tmp_path):
    """run's closing wait after a rank failed is a second gather: under torchrun it found the
    first group's keys in the launcher's store, tried its closed sockets and hung for
    DONE_TIMEOUT (7 days), so the failed rank's error was never printed."""
    script = tmp_path / "twice.py"
    script.write_text(GATHER_TWICE)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_environ(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}").read_text() == "[0, 1] [None, None]"
