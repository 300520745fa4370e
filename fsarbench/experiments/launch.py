"""``run --launcher local|slurm``: a run's model units dealt out as submitit jobs.

Each job runs the same ``run`` command line with ``--shard I/N`` (whole units per shard, by a
stable hash) into the shared ``--out``; locks keep concurrent jobs from training a unit twice,
a preempted or timed-out job is resubmitted by submitit and resumes from its checkpoints, and
the launching process renders summary, tables and figures once every job has finished. The
``local`` launcher runs the jobs as local processes through submitit's local executor (the
same code path, testable on one machine).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

__all__ = [
    "LAUNCHER_FLAGS",
    "ShardJob",
    "make_executor",
    "one_gpu_per_task",
    "shard_argv",
    "submit_shards",
]

log = logging.getLogger(__name__)

#: Options of the launching process that the jobs do not get.
LAUNCHER_FLAGS = {"--launcher": 1, "--slurm": "+", "--jobs": 1, "--shard": 1, "--plan": 0}

#: ``--slurm`` keys with another name in submitit (``time`` in hours).
_SLURM_NAMES = {"partition": "slurm_partition", "account": "slurm_account", "qos": "slurm_qos"}


def shard_argv(argv: list[str], shard: int, shards: int) -> list[str]:
    """``argv`` without the launcher's own options, plus ``--shard shard/shards``."""
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        name = token.split("=", 1)[0]
        i += 1
        if name not in LAUNCHER_FLAGS:
            out.append(token)
        elif "=" not in token and LAUNCHER_FLAGS[name] == "+":
            while i < len(argv) and not argv[i].startswith("--"):
                i += 1
        elif "=" not in token:
            i += int(LAUNCHER_FLAGS[name])
    return [*out, "--shard", f"{shard}/{shards}"]


class ShardJob:
    """The job function (picklable); on preemption or timeout submitit resubmits it with
    the same arguments, and the run resumes from its checkpoints and records."""

    def __call__(self, argv: list[str]) -> int:
        from fsarbench.cli.main import main

        one_gpu_per_task()
        code = main(argv)
        if code:
            raise RuntimeError(f"'python -m fsarbench {' '.join(argv)}' exited with {code}")
        return code

    def checkpoint(self, argv: list[str]) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(ShardJob(), argv)


def one_gpu_per_task() -> None:
    """In a job of several tasks (``tasks_per_node`` = GPUs): this task sees only the GPU of
    its local rank. The tasks run the job's ``run --shard`` side by side and share its model
    units through the unit locks, so a node's GPUs train different units at once."""
    import submitit

    try:
        job = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return
    if job.num_tasks <= 1:
        return
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    os.environ["CUDA_VISIBLE_DEVICES"] = (
        visible[job.local_rank % len(visible)] if visible else str(job.local_rank)
    )


def _slurm_parameters(items: dict[str, Any]) -> dict[str, Any]:
    """``--slurm`` items as submitit parameters; ``gpus_per_node=G`` without
    ``tasks_per_node`` starts G tasks, one per GPU (:func:`one_gpu_per_task`)."""
    params: dict[str, Any] = {}
    for key, value in items.items():
        if key == "time":
            params["timeout_min"] = _timeout_min(value)
        else:
            params[_SLURM_NAMES.get(key, key)] = value
    if "gpus_per_node" in items and "tasks_per_node" not in items:
        params["tasks_per_node"] = int(items["gpus_per_node"])
    _check_tasks(params.get("tasks_per_node", 1))
    return params


def _timeout_min(hours: Any) -> int:
    """``--slurm time`` (hours) in whole minutes, at least one (``time=0`` killed every job
    at its start, and the launcher said only that the jobs produced no output)."""
    try:
        minutes = int(float(hours) * 60)
    except (TypeError, ValueError, OverflowError):
        minutes = 0
    if minutes < 1:
        raise ValueError(f"--slurm time is in hours, at least 1/60 (one minute): got {hours!r}")
    return minutes


def _check_tasks(tasks: Any) -> int:
    if int(tasks) < 1:
        raise ValueError(f"--slurm tasks_per_node (or gpus_per_node) must be >= 1, got {tasks}")
    return int(tasks)


def make_executor(kind: str, folder: Path, slurm: dict[str, Any]):
    """A submitit executor writing its logs under ``folder``."""
    try:
        import submitit
    except ImportError:
        raise RuntimeError(
            "--launcher needs submitit: pip install submitit (or fsarbench[cluster])"
        ) from None
    if kind == "local":
        ignored = sorted(set(slurm) - {"time", "tasks_per_node"})
        if ignored:
            log.warning(
                "--launcher local uses only time and tasks_per_node of --slurm; ignored: %s",
                ", ".join(ignored),
            )
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(
            timeout_min=_timeout_min(slurm.get("time", 24)),
            tasks_per_node=_check_tasks(slurm.get("tasks_per_node", 1)),
        )
        return executor
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    executor.update_parameters(name="fsarbench", **_slurm_parameters(slurm))
    return executor


#: Seconds local jobs get to stop by themselves after an interrupt reached the launcher.
_GRACE_S = 3.0


def submit_shards(executor, argv: list[str], shards: int) -> None:
    """Submit one job per shard, wait for all, and fail naming the jobs that failed."""
    with executor.batch():
        jobs = [executor.submit(ShardJob(), shard_argv(argv, i, shards)) for i in range(shards)]
    print(f"submitted {len(jobs)} job(s): {', '.join(str(j.job_id) for j in jobs)}", flush=True)
    try:
        _wait(jobs, shards)
    except KeyboardInterrupt:
        _stop_on_interrupt(executor, jobs)
        raise


def _stop_on_interrupt(executor, jobs: list) -> None:
    """Ctrl-C or SIGTERM on the launcher. Local jobs share its process group, so a Ctrl-C at
    the terminal reaches them too; a signal sent to the launcher alone (``kill PID``, a
    scheduler) does not: local jobs still running after a short grace are interrupted (each
    stops as a run does on Ctrl-C; checkpoints and records are written atomically, so a
    re-run resumes from the last finished ones). Cluster jobs keep their place in the queue,
    and the user is told how to cancel them."""
    import submitit

    ids = " ".join(str(j.job_id) for j in jobs)
    if not isinstance(executor, submitit.LocalExecutor):
        print(f"the job(s) {ids} keep running on the cluster; cancel them with: scancel {ids}")
        return
    deadline = time.monotonic() + _GRACE_S
    while time.monotonic() < deadline and not all(j.done() for j in jobs):
        time.sleep(0.1)
    running = [j for j in jobs if not j.done()]
    for job in running:
        job.cancel(check=False)
    if running:
        names = " ".join(str(j.job_id) for j in running)
        print(f"interrupting the local job(s) {names}; a re-run resumes from their work")


def _wait(jobs: list, shards: int) -> None:
    """Wait for every job; fail naming those that failed, after all have ended."""
    failed = []
    for i, job in enumerate(jobs):
        try:
            job.results()  # every task of the job (one per GPU)
            print(f"job {job.job_id} (shard {i}/{shards}) finished", flush=True)
        except Exception as err:  # a failed job must not hide the others' results
            failed.append(f"shard {i} (job {job.job_id}): {err}")
    if failed:
        raise RuntimeError(
            f"{len(failed)} job(s) failed; their logs are under the submitit folder; a re-run "
            "resumes what they left:\n  " + "\n  ".join(failed)
        )
