"""Where this process runs: rank/world from the torchrun environment, device and backend.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``
or a rendezvous endpoint); without them the process is rank 0 of 1 and nothing is initialised.
The backend follows the device: NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from fsarbench.env_settings import EnvSettingError, env_number

__all__ = [
    "DistEnv",
    "OneProcessOnlyError",
    "dist_env",
    "require_one_process",
    "gather_when_done",
    "select_device",
    "select_backend",
    "init_distributed",
    "GROUP_TIMEOUT",
    "group_timeout",
    "shutdown_distributed",
    "is_main",
    "barrier",
    "rank",
    "world_size",
    "local_world_size",
]


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job (``world_size == 1`` means no process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _whole(env: Mapping[str, str], name: str, default: str) -> int:
    """``env[name]`` as a whole number, refused by name (torchrun sets these)."""
    raw = env.get(name) or default  # blank: unset
    try:
        return int(raw)
    except ValueError:
        raise EnvSettingError(
            f"bad torchrun environment: {name}={raw!r} is not a whole number (torchrun sets "
            "it; unset it to run one process)"
        ) from None


def dist_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Rank, world size and local rank read from ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    world = _whole(env, "WORLD_SIZE", "1")
    rank_ = _whole(env, "RANK", "0")
    local = _whole(env, "LOCAL_RANK", str(rank_))
    if world < 1 or not 0 <= rank_ < world:
        raise ValueError(f"bad torchrun environment: RANK={rank_}, WORLD_SIZE={world}")
    return DistEnv(rank_, world, local)


class OneProcessOnlyError(RuntimeError):
    """Work that runs in one process was started as several (``torchrun --nproc_per_node``
    above 1): every rank would do the same work and write the same files."""


def require_one_process(what: str, instead: str, environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`OneProcessOnlyError` (on every rank, before any work) when this process
    is one of several started by torchrun; ``what`` runs in one process, ``instead`` says
    what to run."""
    env = dist_env(environ)
    if env.distributed:
        raise OneProcessOnlyError(
            f"{what} runs in one process, but torchrun started {env.world_size} "
            f"(this is rank {env.rank}); {instead}"
        )


#: Calls of :func:`gather_when_done` in this process (each group's store prefix).
_DONE_GROUPS = 0

#: How long :func:`gather_when_done` waits for the slowest rank (gloo's timeouts are kept
#: below 2**31 ms).
DONE_TIMEOUT = timedelta(days=7)


def gather_when_done(env: DistEnv, value: Any, timeout: timedelta = DONE_TIMEOUT) -> list[Any]:
    """Wait until every rank of ``env`` has called this, then return each rank's ``value``
    (in rank order; ``[value]`` in a 1-process run).

    For ranks that work independently (no process group while they work, so nothing they
    call takes them for data-parallel ranks): a gloo group is started only here, on the CPU,
    with a ``timeout`` long enough for the slowest rank's share, and destroyed after."""
    global _DONE_GROUPS
    if not env.distributed:
        return [value]
    if dist.is_initialized():
        raise RuntimeError("gather_when_done is for ranks that work without a process group")
    # Each call's group gets keys of its own in the launcher's store: a second call (run's
    # closing wait after a rank failed) found the first group's keys and tried to connect to
    # its closed sockets, and waited there for DONE_TIMEOUT. Every rank makes the same calls
    # in the same order, so their counters agree.
    store, _, _ = next(dist.rendezvous("env://", env.rank, env.world_size, timeout=timeout))
    _DONE_GROUPS += 1
    dist.init_process_group(
        backend="gloo",
        store=dist.PrefixStore(f"fsarbench-done-{_DONE_GROUPS}/", store),
        rank=env.rank,
        world_size=env.world_size,
        timeout=timeout,
    )
    try:
        values: list[Any] = [None] * env.world_size
        dist.all_gather_object(values, value)
        return values
    finally:
        dist.destroy_process_group()


def select_device(requested: str | None, env: DistEnv) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is requested (or ``None`` and
    available), else the CPU. ``requested`` may be ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
    (an explicit index is kept only in a 1-process run)."""
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"--device {requested} asked for, but CUDA is not available here")
    if env.distributed or device.index is None:
        device = torch.device("cuda", env.local_rank % max(1, torch.cuda.device_count()))
    return device


def select_backend(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


#: How long a collective of the training process group waits for the slowest rank. Rank 0
#: alone probes every video of a dataset's splits and extracts its test features while the
#: other ranks wait in a broadcast or barrier: hours on a large dataset, past torch's default
#: (10 minutes for NCCL), after which the watchdog aborted the waiting ranks.
GROUP_TIMEOUT = timedelta(hours=12)

#: gloo keeps its timeouts in int32 milliseconds.
_MAX_TIMEOUT_S = (2**31 - 1) / 1000


def group_timeout() -> timedelta:
    """``$FSAR_DIST_TIMEOUT`` (seconds), else :data:`GROUP_TIMEOUT`: how long the ranks of a
    ``torchrun`` job wait in one collective before they stop."""
    seconds = env_number(
        "FSAR_DIST_TIMEOUT",
        GROUP_TIMEOUT.total_seconds(),
        minimum=1,
        what="seconds the ranks of a torchrun job wait for each other in one collective",
    )
    if seconds > _MAX_TIMEOUT_S:
        raise EnvSettingError(
            f"FSAR_DIST_TIMEOUT={seconds:g} is above {_MAX_TIMEOUT_S:.0f} seconds (24.8 days, "
            "the longest timeout gloo takes): lower it, or unset it for 12 hours"
        )
    return timedelta(seconds=seconds)


def init_distributed(requested_device: str | None = None) -> tuple[DistEnv, torch.device]:
    """Read the environment, pick the device and, under torchrun, start the process group
    (its collectives wait up to :func:`group_timeout`)."""
    env = dist_env()
    device = select_device(requested_device, env)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if env.distributed and not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(
            backend=select_backend(device),
            rank=env.rank,
            world_size=env.world_size,
            timeout=group_timeout(),
            **kwargs,
        )
    return env, device


def shutdown_distributed() -> None:
    """Destroy the process group if one is running."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _active() else 0


def local_world_size() -> int:
    """Processes of this job on this node (torchrun's ``LOCAL_WORLD_SIZE``; 1 without it)."""
    return env_number(
        "LOCAL_WORLD_SIZE", 1, kind=int, minimum=1, what="torchrun's processes on this node"
    )


def world_size() -> int:
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if _active():
        dist.barrier()
