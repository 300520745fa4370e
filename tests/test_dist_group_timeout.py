"""The training process group waits hours for a rank, not torch's default (review 38b, F1):
rank 0 alone probes a large dataset's videos while the other ranks wait in a broadcast,
and NCCL's default 10-minute timeout aborted them first."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch.distributed as dist

from fsarbench.distributed import env as dist_env_module
from fsarbench.distributed.env import GROUP_TIMEOUT, group_timeout, init_distributed
from fsarbench.env_settings import EnvSettingError


def _torchrun_rank(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Rank 1 of 2 as torchrun would start it; ``init_process_group`` captured (its
    keyword arguments land in the returned dict)."""
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    called: dict = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: called.update(kw))
    return called


def test_process_group_gets_the_long_timeout(monkeypatch):
    monkeypatch.delenv("FSAR_DIST_TIMEOUT", raising=False)
    called = _torchrun_rank(monkeypatch)
    init_distributed("cpu")
    assert called["timeout"] == GROUP_TIMEOUT >= timedelta(hours=2)
    assert called["backend"] == "gloo" and called["rank"] == 1 and called["world_size"] == 2


def test_timeout_is_set_by_the_environment(monkeypatch):
    monkeypatch.setenv("FSAR_DIST_TIMEOUT", "7200")
    assert group_timeout() == timedelta(hours=2)
    called = _torchrun_rank(monkeypatch)
    init_distributed("cpu")
    assert called["timeout"] == timedelta(hours=2)


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "nan", "inf", "3e6"])
def test_bad_timeout_is_refused_by_name(monkeypatch, raw):
    monkeypatch.setenv("FSAR_DIST_TIMEOUT", raw)
    with pytest.raises(EnvSettingError, match="FSAR_DIST_TIMEOUT"):
        group_timeout()


def test_one_process_starts_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(
        dist_env_module.dist, "init_process_group", lambda **kw: pytest.fail("no group")
    )
    env, device = init_distributed("cpu")
    assert not env.distributed and device.type == "cpu"
