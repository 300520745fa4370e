"""Device, backend and precision selection (CUDA faked by monkeypatching), sharding maths,
merging shards' records."""

from __future__ import annotations

import pytest
import torch

from fsarbench.distributed import env as denv
from fsarbench.distributed.env import DistEnv, dist_env, select_backend, select_device
from fsarbench.distributed.precision import select_precision
from fsarbench.distributed.sharded_eval import shard_starts
from fsarbench.results import newest_per_cell


def test_dist_env_reads_torchrun_variables():
    assert dist_env({}) == DistEnv(0, 1, 0)
    e = dist_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (e.rank, e.world_size, e.local_rank, e.distributed, e.is_main) == (3, 4, 1, True, False)
    with pytest.raises(ValueError, match="RANK=4, WORLD_SIZE=4"):
        dist_env({"RANK": "4", "WORLD_SIZE": "4"})


def test_cpu_selects_gloo():
    device = select_device("cpu", DistEnv(1, 2, 1))
    assert device == torch.device("cpu")
    assert select_backend(device) == "gloo"


def _fake_cuda(monkeypatch, available: bool, count: int = 4):
    monkeypatch.setattr(denv.torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(denv.torch.cuda, "device_count", lambda: count)


def test_cuda_selects_local_rank_device_and_nccl(monkeypatch):
    _fake_cuda(monkeypatch, True)
    device = select_device(None, DistEnv(6, 8, 2))
    assert device == torch.device("cuda", 2)
    assert select_backend(device) == "nccl"
    assert select_device("cuda:3", DistEnv()) == torch.device("cuda", 3)  # 1 process: kept
    assert select_device("cuda:3", DistEnv(1, 2, 1)) == torch.device("cuda", 1)
    assert select_device("cuda", DistEnv()) == torch.device("cuda", 0)


def test_missing_cuda_is_an_error_and_default_is_cpu(monkeypatch):
    _fake_cuda(monkeypatch, False, 0)
    assert select_device(None, DistEnv()) == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        select_device("cuda", DistEnv())


def test_precision_bf16_fp16_and_cpu():
    cuda = torch.device("cuda", 0)
    bf16 = select_precision(cuda, bf16_supported=lambda: True)
    assert (bf16.dtype, bf16.scaler, bf16.channels_last, bf16.name) == (
        torch.bfloat16,
        False,
        True,
        "bfloat16",
    )
    fp16 = select_precision(cuda, bf16_supported=lambda: False)
    assert (fp16.dtype, fp16.scaler) == (torch.float16, True)
    off = select_precision(cuda, amp=False, channels_last=False, bf16_supported=lambda: True)
    assert (off.dtype, off.scaler, off.channels_last) == (None, False, False)
    cpu = select_precision(torch.device("cpu"), bf16_supported=lambda: True)
    assert (cpu.dtype, cpu.scaler, cpu.channels_last, cpu.name) == (None, False, False, "fp32")
    assert not cpu.grad_scaler().is_enabled()


@pytest.mark.parametrize(("total", "step", "world"), [(10, 3, 2), (7, 7, 3), (1000, 500, 4)])
def test_shard_starts_partition_the_blocks(total, step, world):
    starts = [shard_starts(total, step, r, world) for r in range(world)]
    assert sorted(s for part in starts for s in part) == list(range(0, total, step))
    with pytest.raises(ValueError, match="outside"):
        shard_starts(total, step, world, world)


def test_merging_keeps_the_newest_copy_of_a_cell_across_time_zones():
    class R:
        def __init__(self, cell, acc, created):
            self.cell, self.accuracy, self.created = cell, acc, created

    copies = [
        R("a", 1, "2026-01-02T10:00:00+0000"),
        R("b", 2, "2026-01-02T09:00:00+0000"),
        R("a", 3, "2026-01-02T11:30:00+0200"),  # 09:30 UTC: older, though its text sorts last
        R("a", 4, "2026-01-02T05:30:00-0500"),  # 10:30 UTC: the newest
    ]
    recs, twice = newest_per_cell(copies)
    assert [(r.cell, r.accuracy) for r in recs] == [("b", 2), ("a", 4)] and twice == ["a"]


def test_merge_keeps_own_records_beside_an_outside_result_of_the_same_cell(tmp_path, capsys):
    """An outside record (from a bundle) of the same cell as a shard's own record won the
    newest-copy de-duplication and so removed the own record from summary.csv and tables."""
    import numpy as np
    import pandas as pd
    from report_fixtures import save_simulated_record

    import fsarbench as fb
    from fsarbench.cli.main import main

    m = fb.make_manifest(np.repeat(np.arange(10), 6), way=5, shot=1, queries=2, episodes=50)
    rng = np.random.default_rng(0)
    own = save_simulated_record(tmp_path / "shard1", m, "otam", 0.6, rng)
    outside = {"outside": {"bundle": "otam.zip"}}
    save_simulated_record(tmp_path / "external" / "otam", m, "otam", 0.9, rng, tags=outside)
    (path,) = (tmp_path / "external" / "otam" / "records").glob("*.json")
    path.write_text(path.read_text().replace(own.created[:4], "2099"))  # the newer copy
    assert main(["merge", "--out", str(tmp_path)]) == 0
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary.accuracy.tolist() == [own.accuracy]
    assert "recorded by more than one shard" not in capsys.readouterr().out
