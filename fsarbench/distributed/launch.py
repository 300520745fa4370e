"""Start ``n`` local processes the way ``torchrun --nproc_per_node=n`` does (for tests and
notebooks; jobs use torchrun itself). Each child gets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``LOCAL_WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``, joins the process group and runs
``fn(*args)``."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp

from fsarbench.distributed.env import init_distributed, shutdown_distributed

__all__ = ["free_port", "spawn_local"]


def free_port() -> int:
    """A TCP port that is free on this machine now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child(
    local_rank: int, world: int, port: int, device: str | None, fn: Callable[..., Any], args: tuple
) -> None:
    os.environ.update(
        {
            "RANK": str(local_rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(local_rank),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    init_distributed(device)
    try:
        fn(*args)
    finally:
        shutdown_distributed()


def spawn_local(
    fn: Callable[..., Any], nprocs: int, *args: Any, device: str | None = "cpu"
) -> None:
    """Run ``fn(*args)`` on ranks ``0..nprocs-1`` of a fresh local process group and wait.

    ``fn`` must be importable (a module-level function); a failure in any rank raises here.
    """
    mp.spawn(_child, args=(nprocs, free_port(), device, fn, args), nprocs=nprocs, join=True)
