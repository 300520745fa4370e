"""The experiment runner on in-memory features: records, skipping, resume after a kill."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.experiments import runner as runner_mod
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.grids import expand_grid, grid_names
from fsarbench.experiments.runner import DatasetFeatures, RunOptions, run_cells
from fsarbench.training import SplitFeatures


def provider(name: str) -> DatasetFeatures:
    g = torch.Generator().manual_seed(7)
    splits, names = {}, {}
    for split, n_cls in (("train", 8), ("val", 5), ("test", 6)):
        classes = np.repeat(np.arange(n_cls), 5)
        centres = torch.randn(n_cls, 16, generator=g)
        f = centres[torch.as_tensor(classes)][:, None].expand(-1, 4, -1)
        f = (f + torch.randn(len(classes), 4, 16, generator=g)).contiguous()
        splits[split] = SplitFeatures(fb.InMemoryFeatureStore(f), classes, name)
        names[split] = [f"{split}{c}" for c in range(n_cls)]
    return DatasetFeatures(name, name, splits, names, {"backbone": "toy"})


CELLS = [Cell(m, "toy", 5, s, label=m) for m in ("protonet", "protonet") for s in (1, 2)]
CELLS += [Cell("protonet", "toy", 5, 1, (("metric", "sqeuclidean"),), label="l2")]
OPTS = dict(
    episodes=200, progress=False, recipe_overrides={"steps": 4, "val_every": 2, "val_episodes": 20}
)


def test_cells_recorded_and_skipped(tmp_path):
    recs = run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))
    assert len(recs) == 3  # the duplicate cell ran once
    assert {r.method for r in recs} == {"protonet", "protonet[metric=sqeuclidean]"}
    assert all(r.recipe["steps"] == 4 and r.features == {"backbone": "toy"} for r in recs)
    assert all(r.accuracy > 20 + 2 * r.ci95 for r in recs)
    threads = torch.get_num_threads()
    assert all(r.compute["device"] == "cpu" and r.compute["threads"] == threads for r in recs)
    assert all(r.compute["batch_episodes"] >= 1 and r.compute["autocast"] == "off" for r in recs)
    assert fb.load_records(tmp_path)[0].compute == recs[0].compute  # stored, read back
    calls = []
    run_cells(CELLS, lambda n: calls.append(n) or provider(n), RunOptions(tmp_path, **OPTS))
    assert calls == ["toy"] and len(fb.load_records(tmp_path)) == 3


def test_records_say_which_step_was_selected_and_how_the_loss_went(tmp_path):
    """A record named its recipe but not what training made of it: which step val chose,
    at what val accuracy, and whether the loss went down; a model reloaded from its folder
    (records deleted) gives the same account."""
    cell = [Cell("protonet", "toy", 5, 1, label="protonet")]
    recipe = {"steps": 10, "val_every": 5, "val_episodes": 20}
    opts = {**OPTS, "recipe_overrides": recipe}
    (record,) = run_cells(cell, provider, RunOptions(tmp_path, **opts))
    training = record.training
    assert training["steps"] == {"main": 10}
    assert training["selected_step"] in (5, 10) and 0 <= training["val_accuracy"] <= 100
    assert training["loss"]["stage"] == "main" and training["loss"]["window"] == 2
    assert fb.load_records(tmp_path)[0].training == training  # stored, read back
    for path in (tmp_path / "records").glob("*.json"):
        path.unlink()
    (again,) = run_cells(cell, provider, RunOptions(tmp_path, **opts))
    assert again.training == training and again.accuracy == record.accuracy


def test_zero_test_frames_are_counted_in_the_record_and_named_under_tables(tmp_path):
    from fsarbench.report.recipe_changes import recipe_changes_text

    def padded(name: str) -> DatasetFeatures:
        data = provider(name)
        data.splits["test"].store.features[[2, 7], -1] = 0.0  # two padded test videos
        return data

    cell = [Cell("protonet", "toy", 5, 1, label="protonet")]
    (record,) = run_cells(cell, padded, RunOptions(tmp_path, **OPTS))
    assert record.zero_frame_videos == 2
    note = "Test videos with all-zero frame features (padding?): 2 in toy."
    assert note in recipe_changes_text([record])
    assert "padding" not in recipe_changes_text(
        run_cells(cell, provider, RunOptions(tmp_path / "b", **OPTS))
    )


def test_a_runs_stored_test_episodes_load_as_a_manifest(tmp_path):
    """'eval --manifest RUNS/manifests/X.npz' (the official episodes, the obvious file to
    pass) failed with "'utf-8' codec can't decode byte 0xff"."""
    import io

    from fsarbench.episodes import Manifest, ManifestError

    cell = [Cell("protonet", "toy", 5, 1, label="protonet")]
    (record,) = run_cells(cell, provider, RunOptions(tmp_path, **OPTS))
    (stored,) = (tmp_path / "manifests").glob("*.npz")
    manifest = Manifest.load(stored)
    assert manifest.hash == record.manifest_hash and manifest.episodes == 200
    old = io.BytesIO()  # as an earlier fsarbench stored them: no settings in the file
    with np.load(stored) as data:
        np.savez(old, **{k: data[k] for k in ("classes", "support", "query", "hash")})
    (tmp_path / "old.npz").write_bytes(old.getvalue())
    with pytest.raises(ManifestError, match="stored by an earlier fsarbench, without their"):
        Manifest.load(tmp_path / "old.npz")
    (tmp_path / "cut.npz").write_bytes(stored.read_bytes()[:100])
    with pytest.raises(ManifestError, match=r"cut.npz: not a readable .npz"):
        Manifest.load(tmp_path / "cut.npz")


def test_killed_run_resumes_to_same_summary(tmp_path, monkeypatch):
    run_cells(CELLS, provider, RunOptions(tmp_path / "a", **OPTS))
    original = runner_mod.evaluate
    count = {"n": 0}

    def dying(*a, **k):
        count["n"] += 1
        if count["n"] == 2:
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(runner_mod, "evaluate", dying)
    with pytest.raises(KeyboardInterrupt):
        run_cells(CELLS, provider, RunOptions(tmp_path / "b", **OPTS))
    monkeypatch.setattr(runner_mod, "evaluate", original)
    run_cells(CELLS, provider, RunOptions(tmp_path / "b", **OPTS))
    assert (tmp_path / "a" / "summary.csv").read_text() == (
        tmp_path / "b" / "summary.csv"
    ).read_text()


def test_grids_expand_with_synth_standing_in():
    assert {"table1", "table6", "figure4", "main"} <= set(grid_names())
    cells = expand_grid("table6", available=[])
    assert {c.dataset for c in cells} == {"synth"}
    assert sorted({c.way for c in cells}) == [5, 6, 7, 8, 9, 10]
    assert dict(cells[0].tags)["paper_dataset"] == "kinetics100"
    t1 = expand_grid("table1", available=["ucf101"])
    assert {c.dataset for c in t1} == {"ucf101", "synth"}
    with pytest.raises(ValueError, match="Did you mean 'table1'"):
        expand_grid("tabel1", available=[])


def test_runner_keeps_pair_tables_per_model_and_pool_products_for_the_last(tmp_path):
    """Pair tables are reused by one model's cells even when other models' cells come in
    between; pool products (TRX's reach 1 GiB) are kept for the model evaluated last only."""
    from fsarbench.evaluate import POOL_KEY_PREFIX
    from fsarbench.experiments.runner import CellRunner, RunOptions

    runner = CellRunner({}, RunOptions(out_dir=tmp_path))
    trx = runner._tables_of("trx-5shot")
    trx.update({"pairs": "small", POOL_KEY_PREFIX + "x": "large"})
    assert runner._tables_of("trx-5shot") is trx
    otam = runner._tables_of("otam-1shot")
    assert trx == {"pairs": "small"}  # the pool products are dropped, the pair table kept
    assert runner._tables_of("trx-5shot") is trx and otam == {}
    # a model after one with pool products gets its own tables, under its own key (a loop
    # variable once rebound the key: two models evaluated after TRX shared one pair table)
    otam["pairs"] = "otam's"
    trx[POOL_KEY_PREFIX + "x"] = "large"
    bimhm = runner._tables_of("bimhm-1shot")
    assert bimhm == {} and bimhm is not otam
    assert runner._tables_of("otam-1shot") is otam
    assert set(runner.pair_tables) == {"trx-5shot", "otam-1shot", "bimhm-1shot"}


def _into_shard(out) -> None:
    """Move a run's records into a shard sub-folder, as a launcher job writes them."""
    import shutil

    shutil.move(str(out / "records"), str(out / "shard0" / "records"))


def test_reuse_stale_rewrites_a_shard_record_beside_its_rows(tmp_path):
    """A record kept with --reuse-stale from a shard sub-folder was rewritten to records/
    without its rows, and the next run threw it away as rowless."""
    from fsarbench.results import load_records

    cell = [Cell("protonet", "toy", 5, 1)]
    (first,) = run_cells(cell, provider, RunOptions(tmp_path, **OPTS))
    (tmp_path / "shard0").mkdir()
    _into_shard(tmp_path)
    other = dict(OPTS, episodes=150)  # other test episodes: the stored record is stale
    (kept,) = run_cells(cell, provider, RunOptions(tmp_path, reuse_stale=True, **other))
    assert kept.created == first.created and kept.stale_accepted
    assert not (tmp_path / "records" / f"{kept.cell}.json").exists()
    (again,) = run_cells(cell, provider, RunOptions(tmp_path, reuse_stale=True, **other))
    assert again.created == first.created and again.episodes == 200  # kept again, not re-run
    assert [r.created for r in load_records(tmp_path)] == [first.created]


def test_a_re_run_cell_supersedes_its_old_copy_in_a_shard_folder(tmp_path):
    """Re-running a cell wrote the new record to records/ and left the shard's old copy,
    which tables and the leaderboard ranked beside it."""
    from fsarbench.results import load_records

    cell = [Cell("protonet", "toy", 5, 1)]
    (first,) = run_cells(cell, provider, RunOptions(tmp_path, **OPTS))
    (tmp_path / "shard0").mkdir()
    _into_shard(tmp_path)
    (new,) = run_cells(cell, provider, RunOptions(tmp_path, **dict(OPTS, episodes=150)))
    assert new.created != first.created
    assert [(r.created, r.episodes) for r in load_records(tmp_path)] == [(new.created, 150)]
    assert (tmp_path / "superseded" / f"{first.cell}.json").exists()


def test_a_model_shared_across_shots_never_supersedes_the_per_shot_records(tmp_path):
    """A --share-model-across-shots run into a folder of per-shot records superseded the
    per-shot 2-shot record of each training seed it ran (one seed at a time), so the folder
    pooled what was left of the per-shot seeds with no word."""
    cells = [Cell("protonet", "toy", 5, s, label="protonet") for s in (1, 2)]
    per_shot = run_cells(cells, provider, RunOptions(tmp_path, **OPTS))
    shared = run_cells(cells, provider, RunOptions(tmp_path, share_shots=True, **OPTS))
    assert [r.train_shot for r in per_shot] == [1, 2] and [r.train_shot for r in shared] == [1, 1]
    assert shared[0].cell == per_shot[0].cell  # at 1-shot the shared model is the per-shot one
    kept = sorted(p.stem for p in (tmp_path / "records").glob("*.json"))
    assert kept == sorted({r.cell for r in per_shot + shared})  # three records, none moved
    assert not (tmp_path / "superseded").exists()


def test_tables_and_report_are_marked_out_of_date_once_records_change(tmp_path):
    """A re-run with another recipe, interrupted before its end, left tables/*.md and the
    report showing the numbers of the records it had moved to superseded/."""
    from fsarbench.experiments.outputs import (
        LEADERBOARD_OUT_OF_DATE,
        OUT_OF_DATE,
        mark_outputs_out_of_date,
    )
    from fsarbench.report.leaderboard import write_leaderboard

    cells = [Cell("protonet", "toy", 5, 1, label="protonet")]
    run_cells(cells, provider, RunOptions(tmp_path, **OPTS))
    (tmp_path / "tables").mkdir()
    table, latex, csv = (tmp_path / "tables" / f"t.{x}" for x in ("md", "tex", "csv"))
    for path in (table, latex, csv):
        path.write_text("| protonet | 80.00 |\n")
    (tmp_path / "report").mkdir()
    report = tmp_path / "report" / "index.html"
    report.write_text("<html><body><p>80.00</p></body></html>")
    board, board_csv = tmp_path / "leaderboard.md", tmp_path / "leaderboard.csv"
    board.write_text("| 1 | protonet | 80.00 |\n")
    board_csv.write_text("rank,method,accuracy\n1,protonet,80.00\n")
    run_cells(cells, provider, RunOptions(tmp_path, **OPTS))  # all reused: nothing changes
    assert OUT_OF_DATE not in table.read_text() + report.read_text()
    other = {**OPTS, "recipe_overrides": {**OPTS["recipe_overrides"], "steps": 6}}
    run_cells(cells, provider, RunOptions(tmp_path, **other))  # supersedes the record
    assert table.read_text().startswith(f"> **{OUT_OF_DATE}**")
    assert latex.read_text().startswith(f"% {OUT_OF_DATE}")
    # a program reading the CSV stops at a missing file instead of reading old numbers
    assert not csv.exists()
    assert (tmp_path / "tables" / "t.OUT-OF-DATE.csv").read_text() == "| protonet | 80.00 |\n"
    assert "<body>\n<p style=" in report.read_text() and OUT_OF_DATE in report.read_text()
    # the leaderboard kept ranking the replaced record; run does not rewrite it
    assert board.read_text().startswith(f"> **{LEADERBOARD_OUT_OF_DATE}**")
    assert not board_csv.exists() and (tmp_path / "leaderboard.OUT-OF-DATE.csv").exists()
    assert mark_outputs_out_of_date(tmp_path) == []  # once
    write_leaderboard(tmp_path, {})  # rewritten: current again
    assert board_csv.exists() and not (tmp_path / "leaderboard.OUT-OF-DATE.csv").exists()
    assert LEADERBOARD_OUT_OF_DATE not in board.read_text()


def test_a_record_of_another_method_in_a_cells_file_is_never_served(tmp_path, caplog):
    """Two method names written as one file name shared a record file, and run served the
    first one's number under the second's name."""
    from fsarbench.experiments.runner import CellRunner

    cell = Cell("protonet", "toy", 5, 1, label="protonet")
    run_cells([cell], provider, RunOptions(tmp_path, **OPTS))
    runner = CellRunner(provider, RunOptions(tmp_path, **OPTS))
    _, rid, prov, _ = runner.identify(cell)
    assert runner.reuse(rid, prov, "protonet") is not None
    assert runner.reuse(rid, prov, "proto-net") is None
    assert "its record is of 'protonet', not 'proto-net'" in caplog.text


def test_a_changed_test_split_re_evaluates_without_retraining_the_model(tmp_path):
    """A frozen model is trained on train/val features only: a replaced (or touched) test
    video changes the test cache key, so the record is made again, but the model folder
    keeps its name and its weights (every frozen model was retrained)."""

    def keyed(test_key: str, noise: float):
        def provide(name: str) -> DatasetFeatures:
            feats = provider(name)
            test = feats.splits["test"]
            f = test.store.get(np.arange(len(test.classes)))
            f = f + noise * torch.randn(f.shape, generator=torch.Generator().manual_seed(3))
            feats.splits["test"] = SplitFeatures(fb.InMemoryFeatureStore(f), test.classes, name)
            feats.info = {
                "backbone": "toy",
                "cache_keys": {"train": "a", "val": "b", "test": test_key},
            }
            return feats

        return provide

    cells = [Cell("protonet", "toy", 5, 1, label="p")]
    first = run_cells(cells, keyed("t1", 0.0), RunOptions(tmp_path, **OPTS))
    (model,) = (tmp_path / "models").iterdir()
    weights = {
        p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in model.iterdir() if p.is_file()
    }
    second = run_cells(cells, keyed("t2", 3.0), RunOptions(tmp_path, **OPTS))
    assert [p.name for p in (tmp_path / "models").iterdir()] == [model.name]
    assert weights == {
        p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in model.iterdir() if p.is_file()
    }
    assert first[0].provenance["features"]["test"] == "t1"
    assert second[0].provenance["features"]["test"] == "t2"
    assert second[0].accuracy != first[0].accuracy  # made again on the new test features


def test_a_summary_that_cannot_be_written_does_not_stop_the_cells(tmp_path, caplog):
    """summary.csv replaced by a folder stopped a run after its first cell (the summary is
    rewritten after every record): the cells go on, with one warning."""
    (tmp_path / "summary.csv").mkdir(parents=True)
    with caplog.at_level("WARNING"):
        recs = run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))
    assert len(recs) == 3 and len(list((tmp_path / "records").glob("*.json"))) == 3
    said = [r.message for r in caplog.records if "summary.csv could not be written" in r.message]
    assert len(said) == 1


def test_the_summary_is_rebuilt_under_the_folders_lock(tmp_path, monkeypatch):
    """Two runs into one --out read the records and wrote summary.csv without a lock: the
    one that read first could write last, leaving the other's record out."""
    import multiprocessing as mp

    from fsarbench.locks import LockTimeout
    from fsarbench.results import rebuild_summary

    run_cells(CELLS[:1], provider, RunOptions(tmp_path, **OPTS))
    lock = tmp_path / "locks" / "summary.lock"
    ready, release = mp.get_context("spawn").Event(), mp.get_context("spawn").Event()
    holder = mp.get_context("spawn").Process(target=_hold, args=(lock, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        monkeypatch.setenv("FSAR_LOCK_TIMEOUT", "0.2")
        with pytest.raises(LockTimeout, match="summary.csv"):
            rebuild_summary(tmp_path)
    finally:
        release.set()
        holder.join(60)
    assert len(rebuild_summary(tmp_path)) == 1


def test_a_summary_lock_held_too_long_does_not_stop_the_cells(tmp_path, monkeypatch, caplog):
    """With a short FSAR_LOCK_TIMEOUT, contention on the summary lock ended the run."""
    import fsarbench.experiments.runner as runner_mod
    from fsarbench.locks import LockTimeout

    def busy(out):
        raise LockTimeout("summary.csv is still locked after 0 s by pid 1")

    monkeypatch.setattr(runner_mod, "rebuild_summary", busy)
    with caplog.at_level("WARNING"):
        recs = run_cells(CELLS, provider, RunOptions(tmp_path, **OPTS))
    assert len(recs) == 3 and "summary.csv could not be written" in caplog.text


def _hold(lock, ready, release) -> None:
    from fsarbench.locks import held

    with held(lock, what="summary.csv"):
        ready.set()
        release.wait(60)


def test_an_eval_record_in_a_run_folder_is_named_when_it_replaces_or_is_replaced(tmp_path, caplog):
    """`eval --out RUN` on the run's own episodes replaced the run's record without a word;
    the next run listed 19 fields as 'None -> ...' and moved the eval record to superseded/
    under the name the run's record already had there, which it overwrote."""
    import json
    import logging

    from fsarbench.results import load_record, rerun_reason, save_result

    cell = [Cell("protonet", "toy", 5, 1)]
    (run_record,) = run_cells(cell, provider, RunOptions(tmp_path, **OPTS))
    path = tmp_path / "records" / f"{run_record.cell}.json"
    data = json.loads(path.read_text())
    data["provenance"] = {k: data["provenance"][k] for k in ("code", "code_digest")}
    data["created"] = "2030-01-01T00:00:00.000000+0000"  # as `eval` writes it, later
    from fsarbench.results import ResultRecord

    eval_record = ResultRecord(**data)
    with caplog.at_level(logging.WARNING):
        save_result(tmp_path, eval_record)
    assert "this train/eval record replaces the run record of the same cell" in caplog.text
    rows = f"{run_record.cell}.queries.csv.gz"  # the same numbers' per-query rows
    (tmp_path / "records" / rows).write_bytes((tmp_path / "superseded" / rows).read_bytes())
    assert "its record was written by `train` or `eval`" in rerun_reason(eval_record, ["x"])
    assert rerun_reason(run_record, ["lr: 1 -> 2"]) == "it was made with lr: 1 -> 2"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        (again,) = run_cells(cell, provider, RunOptions(tmp_path, **OPTS))
    assert "its record was written by `train` or `eval`" in caplog.text
    assert "None ->" not in caplog.text
    kept = sorted(p.name for p in (tmp_path / "superseded").glob("*.json"))
    assert len(kept) == 2  # the run's first record and the eval record, neither overwritten
    stamps = {load_record(tmp_path / "superseded" / name).created for name in kept}
    assert stamps == {run_record.created, eval_record.created}
    assert load_record(path).created == again.created
