"""``run --launcher local``: model units as submitit jobs (local processes) sharing --out end
with the summary of a plain run; the job command lines drop the launcher's own options."""

from __future__ import annotations

import pandas as pd
import pytest

from fsarbench.experiments.launch import shard_argv

pytest.importorskip("submitit")

ARGV = ["run", "--method", "protonet", "--dataset", "synth", "--shots", "1", "2"]
ARGV += ["--episodes", "60", "--recipe", "steps=4", "val_every=2", "val_episodes=10"]
ARGV += ["--no-progress", "--workers", "0"]


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    """One feature cache for the module: the tests differ in how units run, not in features."""
    return tmp_path_factory.mktemp("cache")


def test_job_command_lines_drop_the_launcher_options():
    argv = [*ARGV, "--launcher", "slurm", "--slurm", "partition=gpu", "time=2", "--jobs", "3"]
    assert shard_argv(argv, 2, 3) == [*ARGV, "--shard", "2/3"]
    assert shard_argv(["run", "--jobs=4", "--all"], 0, 1) == ["run", "--all", "--shard", "0/1"]


def test_local_launcher_gives_the_summary_of_a_plain_run(
    tmp_path, monkeypatch, capsys, feature_cache
):
    from fsarbench.cli.main import main

    monkeypatch.setenv("FSAR_CACHE", str(feature_cache))
    assert main([*ARGV, "--out", str(tmp_path / "plain")]) == 0
    plain_log = capsys.readouterr().out
    assert "2 model(s) trained" in plain_log and "time per stage: data and features" in plain_log
    assert main([*ARGV, "--out", str(tmp_path / "jobs"), "--launcher", "local"]) == 0
    out = capsys.readouterr().out
    assert "2 model unit(s) in 2 local job(s)" in out and out.count(" finished") == 2
    cols = ["method", "way", "shot", "train_shot", "accuracy", "ci95", "config_hash"]
    plain = pd.read_csv(tmp_path / "plain" / "summary.csv")[cols]
    jobs = pd.read_csv(tmp_path / "jobs" / "summary.csv")[cols]
    pd.testing.assert_frame_equal(plain, jobs)
    assert (tmp_path / "jobs" / "tables" / "synth__frozen.md").exists()


def test_a_job_of_two_tasks_shares_its_units_and_gives_the_same_summary(
    tmp_path, monkeypatch, feature_cache
):
    """``tasks_per_node=2`` (one task per GPU on a cluster): both tasks run the job's shard,
    the unit locks give each unit to one of them, and the summary equals a plain run's."""
    from fsarbench.cli.main import main

    monkeypatch.setenv("FSAR_CACHE", str(feature_cache))
    assert main([*ARGV, "--out", str(tmp_path / "plain")]) == 0
    argv = [*ARGV, "--out", str(tmp_path / "job"), "--launcher", "local", "--jobs", "1"]
    assert main([*argv, "--slurm", "tasks_per_node=2"]) == 0
    cols = ["method", "way", "shot", "train_shot", "accuracy", "ci95", "config_hash"]
    plain = pd.read_csv(tmp_path / "plain" / "summary.csv")[cols]
    job = pd.read_csv(tmp_path / "job" / "summary.csv")[cols]
    pd.testing.assert_frame_equal(plain, job)
    logs = list((tmp_path / "job" / "submitit").glob("*_0_log.out")) + list(
        (tmp_path / "job" / "submitit").glob("*_1_log.out")
    )
    assert len(logs) == 2  # two tasks ran


def test_gpus_per_node_starts_one_task_per_gpu():
    from fsarbench.experiments.launch import _slurm_parameters

    assert _slurm_parameters({"gpus_per_node": "4", "time": "2"}) == {
        "gpus_per_node": "4",
        "timeout_min": 120,
        "tasks_per_node": 4,
    }
    assert _slurm_parameters({"gpus_per_node": 4, "tasks_per_node": 1})["tasks_per_node"] == 1
    with pytest.raises(ValueError, match="tasks_per_node .* must be >= 1, got 0"):
        _slurm_parameters({"gpus_per_node": 0})


@pytest.mark.parametrize("hours", ["0", "0.01", "-1", "abc", "nan"])
def test_a_job_time_under_a_minute_is_refused(hours, tmp_path):
    """time=0 killed every local job at its start; the launcher said only that the jobs
    produced no output."""
    from fsarbench.experiments.launch import _slurm_parameters, make_executor

    with pytest.raises(ValueError, match="time is in hours, at least 1/60"):
        _slurm_parameters({"time": hours})
    with pytest.raises(ValueError, match="time is in hours, at least 1/60"):
        make_executor("local", tmp_path, {"time": hours})
    assert _slurm_parameters({"time": "0.5"})["timeout_min"] == 30


def test_launcher_options_without_a_launcher_are_refused(tmp_path, capsys, caplog):
    """--jobs 0 meant one job per unit; --jobs and --slurm without --launcher were ignored;
    the local launcher ignored other --slurm keys silently."""
    from fsarbench.cli.main import main
    from fsarbench.experiments.launch import make_executor

    out = ["--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        main([*ARGV, *out, "--launcher", "local", "--jobs", "0"])
    assert "must be at least 1, got 0" in capsys.readouterr().err
    for extra in (["--jobs", "2"], ["--slurm", "time=1"]):
        assert main([*ARGV, *out, *extra]) == 2
        assert "add --launcher local|slurm" in capsys.readouterr().err
    with caplog.at_level("WARNING"):
        make_executor("local", tmp_path, {"time": "1", "partition": "gpu"})
    assert "ignored: partition" in caplog.text


def test_the_launching_process_rebuilds_a_summary_left_partial_by_racing_jobs(
    tmp_path, monkeypatch, feature_cache
):
    """Two jobs finishing together could leave one job's partial view as ``summary.csv``
    (each job rebuilds it from the records it sees). Made deterministic here: the jobs run
    in this process one after the other, then the summary is cut to one row, as the slower
    job's view would leave it; the launching process must end with every record's row."""
    from fsarbench.cli.main import main
    from fsarbench.experiments import launch

    out, complete = tmp_path / "jobs", {}

    def jobs_that_race(executor, argv, shards):
        for shard in range(shards):
            assert main(launch.shard_argv(argv, shard, shards)) == 0
        lines = (out / "summary.csv").read_text().splitlines()
        complete["summary"] = lines
        assert len(lines) == 3  # header + both cells
        (out / "summary.csv").write_text("\n".join(lines[:2]) + "\n")

    monkeypatch.setenv("FSAR_CACHE", str(feature_cache))
    monkeypatch.setattr(launch, "submit_shards", jobs_that_race)
    assert main([*ARGV, "--out", str(out), "--launcher", "local", "--jobs", "2"]) == 0
    assert (out / "summary.csv").read_text().splitlines() == complete["summary"]


class _Job:
    """A submitted job: ``results`` interrupted (Ctrl-C while waiting) or finished; ``ends``:
    whether it stops by itself after the interrupt (a Ctrl-C at the terminal reaches the
    launcher's whole process group, a ``kill PID`` only the launcher)."""

    def __init__(self, job_id: int, interrupted: bool, ends: bool = False) -> None:
        self.job_id, self.interrupted, self.ends, self.cancelled = job_id, interrupted, ends, False

    def results(self):
        if self.interrupted:
            raise KeyboardInterrupt
        return [0]

    def done(self) -> bool:
        return self.ends or not self.interrupted

    def cancel(self, check: bool = True) -> None:
        self.cancelled = True


@pytest.mark.parametrize("local, ends", [(True, False), (True, True), (False, False)])
def test_ctrl_c_on_the_launcher_stops_local_jobs_and_names_cluster_ones(
    tmp_path, capsys, monkeypatch, local, ends
):
    """A signal that reached the launcher alone left its local jobs training into --out
    after it said it was interrupted: jobs still running after a short grace are
    interrupted (those the signal reached too are left to stop by themselves); SLURM jobs
    keep their place and the user is told how to cancel them."""
    import contextlib

    import submitit

    from fsarbench.experiments import launch

    monkeypatch.setattr(launch, "_GRACE_S", 0.2)
    base = submitit.LocalExecutor if local else object
    jobs = [_Job(11, True, ends), _Job(12, False)]

    class Executor(base):
        def __init__(self) -> None:
            if local:
                super().__init__(folder=str(tmp_path))

        def batch(self):
            return contextlib.nullcontext()

        def submit(self, fn, argv):
            return jobs[int(argv[-1].split("/")[0])]

    with pytest.raises(KeyboardInterrupt):
        launch.submit_shards(Executor(), ["run", "--all"], 2)
    out = capsys.readouterr().out
    assert [j.cancelled for j in jobs] == [local and not ends, False]
    if local and not ends:
        assert "interrupting the local job(s) 11;" in out
    elif local:
        assert "interrupting" not in out
    else:
        assert "keep running on the cluster; cancel them with: scancel 11 12" in out


def test_merge_names_a_shard_that_has_not_run(tmp_path, monkeypatch, capsys, feature_cache):
    """Two shards into one folder, merged after the first alone: the tables just had fewer
    rows, with nothing saying a shard was missing."""
    from fsarbench.cli.main import main

    monkeypatch.setenv("FSAR_CACHE", str(feature_cache))
    out = str(tmp_path / "shared")
    assert main([*ARGV, "--out", out, "--shard", "0/2"]) == 0
    assert "shard 0/2: 1 of 2 cells" in capsys.readouterr().out
    assert main(["merge", "--out", out]) == 0
    merged = capsys.readouterr().out
    assert "warning: no plan of shard(s) 1/2" in merged
    assert "shards missing or unfinished, named above" in merged
    assert main([*ARGV, "--out", out, "--shard", "1/2"]) == 0
    capsys.readouterr()
    assert main(["merge", "--out", out]) == 0
    assert "warning" not in capsys.readouterr().out
