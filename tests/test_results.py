from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import fsarbench as fb
from fsarbench.results import load_queries


def _result(tmp_path, method="protonet", seed=0):
    pool = np.repeat(np.arange(6), 4)
    feats = __import__("torch").rand(len(pool), 4, 8)
    m = fb.make_manifest(pool, way=3, shot=1, episodes=20, seed=seed, dataset="toy")
    r = fb.evaluate(fb.create_method(method, feature_dim=8, seq_len=4), feats, m, progress=False)
    rec = fb.make_record(
        r,
        method=method,
        dataset="toy",
        split_variant="toy",
        manifest=m,
        hparams={"metric": "cosine"},
    )
    return rec, r


def test_record_carries_metadata_and_roundtrips(tmp_path):
    rec, r = _result(tmp_path)
    path = fb.save_result(tmp_path, rec, r)
    data = json.loads(path.read_text())
    for key in (
        "method",
        "dataset",
        "split_variant",
        "track",
        "way",
        "shot",
        "queries",
        "episodes",
        "seed",
        "manifest_hash",
        "config_hash",
        "code_version",
        "spread",
    ):
        assert data[key] not in (None, ""), key
    assert "CI half-width" in data["spread"]
    assert fb.load_records(tmp_path)[0] == rec
    q = load_queries(tmp_path, rec)
    assert len(q) == 60
    assert abs(q["correct"].mean() * 100 - rec.accuracy) < 1e-6
    summary = fb.write_summary(tmp_path)
    frame = pd.read_csv(summary)
    assert list(frame["method"]) == ["protonet"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_config_hash_changes_with_hparams(tmp_path):
    rec, r = _result(tmp_path)
    m = fb.make_manifest(np.repeat(np.arange(6), 4), way=3, shot=1, episodes=20, dataset="toy")
    other = fb.make_record(
        r,
        method="protonet",
        dataset="toy",
        split_variant="toy",
        manifest=m,
        hparams={"metric": "sqeuclidean"},
    )
    assert other.config_hash != rec.config_hash and other.cell != rec.cell


def test_per_query_rows_come_from_the_copy_of_the_record_asked_for(tmp_path):
    """One cell recorded in two sub-folders (a re-run, a shard copy): the paired statistics
    must read the per-query rows written with the record they pair, not the first in path
    order, and a record whose own rows are gone is an error, not another copy's rows."""
    import dataclasses

    import pytest

    rec, r = _result(tmp_path)
    old = dataclasses.replace(rec, created="2026-01-01T00:00:00+0000")
    new = dataclasses.replace(rec, created="2026-02-01T00:00:00+0000")
    wrong = dataclasses.replace(r, records={**r.records, "correct": ~r.records["correct"]})
    fb.save_result(tmp_path / "a_old", old, wrong)
    fb.save_result(tmp_path / "b_new", new, r)
    assert load_queries(tmp_path, new)["correct"].tolist() == r.records["correct"].tolist()
    assert load_queries(tmp_path, old)["correct"].tolist() == wrong.records["correct"].tolist()
    gone = dataclasses.replace(rec, created="2026-03-01T00:00:00+0000")
    with pytest.raises(FileNotFoundError, match="belong to other copies of that cell"):
        load_queries(tmp_path, gone)


def test_a_failed_record_write_leaves_the_old_record_in_place(tmp_path, monkeypatch):
    """The old record moved to superseded/ before the new one was written: on a full disk
    the cell was left with no record (summary.csv still named the old number)."""
    import errno

    import fsarbench.results as results
    from fsarbench.io import staged_write

    old, old_result = _result(tmp_path, seed=0)
    fb.save_result(tmp_path, old, old_result)
    new, new_result = _result(tmp_path, seed=0)
    new.created = "2099-01-01T00:00:00+00:00"  # a later evaluation of the cell
    assert new.cell == old.cell

    def full_disk(path, data):
        if path.suffix == ".json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return staged_write(path, data)

    monkeypatch.setattr(results, "staged_write", full_disk)
    try:
        fb.save_result(tmp_path, new, new_result)
    except OSError:
        pass
    else:
        raise AssertionError("the failed write was not raised")
    (kept,) = fb.load_records(tmp_path)
    assert kept.created == old.created
    assert load_queries(tmp_path, kept)["correct"].mean() * 100 == pytest.approx(kept.accuracy)
    assert not (tmp_path / "superseded").exists() or not any((tmp_path / "superseded").iterdir())
    assert not list((tmp_path / "records").glob(".*.tmp"))  # no temporary file left


def test_a_failed_write_names_its_file(tmp_path, monkeypatch):
    """A full disk's error was a bare '[Errno 28] No space left on device'."""
    import errno
    import os

    from fsarbench.io import atomic_write_bytes

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "out" / "x.json"
    try:
        atomic_write_bytes(target, b"{}")
    except OSError as err:
        assert err.errno == errno.ENOSPC and err.filename == str(target)
        assert str(target) in str(err)
    else:
        raise AssertionError("not raised")
    assert not list(target.parent.iterdir())


def test_a_partial_save_that_fails_does_not_lose_the_evaluation(tmp_path, monkeypatch, caplog):
    """On a full disk the final partial save failed and the finished evaluation ended in a
    bare '[Errno 28]' with no number."""
    import errno
    import importlib

    evaluate_mod = importlib.import_module("fsarbench.evaluate")

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(evaluate_mod, "atomic_write_bytes", full)
    pool = np.repeat(np.arange(6), 4)
    feats = __import__("torch").rand(len(pool), 4, 8)
    m = fb.make_manifest(pool, way=3, shot=1, episodes=20, seed=0, dataset="toy")
    method = fb.create_method("protonet", feature_dim=8, seq_len=4)
    plain = fb.evaluate(method, feats, m, progress=False)
    part = tmp_path / "partial" / "p.npz"
    kept = fb.evaluate(method, feats, m, progress=False, partial_path=part)
    assert kept.accuracy == plain.accuracy
    assert f"could not keep the finished episodes at {part}" in caplog.text


def test_supersede_says_whether_it_moved_anything(tmp_path):
    """Two identical runs at once both logged "X supersedes Y ... moved" where one moved it."""
    from fsarbench.results import supersede

    rec, result = _result(tmp_path)
    fb.save_result(tmp_path, rec, result)
    assert supersede(tmp_path, rec) is True
    assert supersede(tmp_path, rec) is False  # another run moved it already
    assert (tmp_path / "superseded" / f"{rec.cell}.json").exists()
    assert not list((tmp_path / "records").glob("*"))
