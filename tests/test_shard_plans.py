"""The plans ``run --shard I/N`` leaves under ``shards/``, as ``merge`` reads them."""

from __future__ import annotations

import json

import numpy as np
from report_fixtures import save_simulated_record

import fsarbench as fb
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.shard_plans import mark_shard_done, shard_gaps, write_shard_plan
from fsarbench.results import load_records

CELLS = [Cell("otam", "toy", shot=1), Cell("trx", "toy", shot=1), Cell("otam", "toy", shot=2)]


def _record(out, method: str, shot: int) -> None:
    classes = np.repeat(np.arange(10), 6)
    m = fb.make_manifest(classes, way=5, shot=shot, queries=1, episodes=20, dataset="toy")
    save_simulated_record(out, m, method, 0.7, np.random.default_rng(0), train_seed=0)


def test_a_finished_shard_with_every_record_leaves_no_gap(tmp_path):
    write_shard_plan(tmp_path, "0/1", CELLS, ["run"])
    for cell in CELLS:
        _record(tmp_path, cell.method, cell.shot)
    mark_shard_done(tmp_path, "0/1", failed=False)
    assert shard_gaps(tmp_path, load_records(tmp_path)) == []


def test_no_plans_no_gaps(tmp_path):
    _record(tmp_path, "otam", 1)
    assert shard_gaps(tmp_path, load_records(tmp_path)) == []


def test_missing_unfinished_failed_and_unrecorded_shards_are_named(tmp_path):
    write_shard_plan(tmp_path / "a", "0/4", CELLS[:2], ["run"])  # never stamped finished
    _record(tmp_path / "a", "otam", 1)
    write_shard_plan(tmp_path / "b", "1/4", CELLS[2:], ["run"])
    mark_shard_done(tmp_path / "b", "1/4", failed=True)
    (tmp_path / "c" / "shards").mkdir(parents=True)
    (tmp_path / "c" / "shards" / "2-of-4.json").write_text("{not json")
    gaps = shard_gaps(tmp_path, load_records(tmp_path))
    assert gaps[0].startswith("no plan of shard(s) 3/4 below")
    assert "shard 0/4 (a/shards/0-of-4.json) started" in gaps[1] and "not finished" in gaps[1]
    assert gaps[2].startswith("1 of shard 0/4's 2 planned cell(s) have no record: trx toy")
    assert "shard 1/4 (b/shards/1-of-4.json) stopped with an error" in gaps[3]
    assert gaps[4].startswith("1 of shard 1/4's 1 planned cell(s) have no record: otam toy")
    assert gaps[5] == "shard 2/4's plan c/shards/2-of-4.json is unreadable"
    assert len(gaps) == 6


def test_a_plan_names_its_cells_once_and_its_command(tmp_path):
    write_shard_plan(tmp_path, "1/2", [*CELLS, CELLS[0]], ["run", "--all"])
    plan = json.loads((tmp_path / "shards" / "1-of-2.json").read_text())
    assert len(plan["cells"]) == 3 and plan["argv"] == ["run", "--all"]
    assert plan["finished"] is None
