"""Per-query rows every report checks before it prints, plots or ranks a record: figures,
leaderboard and compare leave out what table and report leave out; rows must hold each
(episode, query) key once; one bad record costs only its own entry; untested comparisons
counted as ties are named."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from report_fixtures import save_simulated_record

import fsarbench as fb
from fsarbench.cli import figures_cmd
from fsarbench.cli.main import main
from fsarbench.report.compare import compare_systems
from fsarbench.report.leaderboard import build_leaderboard
from fsarbench.report.page.board import collect_leaderboard
from fsarbench.report.records import QueryRowsError, load_entries
from fsarbench.results import ResultRecord, queries_match


def _manifest(way: int = 5, episodes: int = 200, dataset: str = "toy"):
    classes = np.repeat(np.arange(10), 6)
    return fb.make_manifest(
        classes, way=way, shot=1, queries=2, episodes=episodes, seed=0, dataset=dataset
    )


def _runs(path, systems=(("A", 0.9), ("B", 0.7), ("C", 0.5)), ways=(5, 6), **kw):
    """Records of ``systems`` (name, accuracy) in a 5-way and a 6-way setting."""
    rng = np.random.default_rng(3)
    out = {}
    for way in ways:
        m = _manifest(way)
        for name, acc in systems:
            out[(name, way)] = save_simulated_record(path, m, name, acc, rng, **kw)
    return out


def _rows_path(path, record: ResultRecord):
    return path / "records" / f"{record.cell}.queries.csv.gz"


def _edit_accuracy(path, record: ResultRecord, accuracy: float) -> None:
    """A hand-edited record: its rows untouched."""
    file = path / "records" / f"{record.cell}.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "accuracy": accuracy}))


def _all_correct_episodes(rows: pd.DataFrame) -> list[int]:
    acc = rows.groupby("episode")["correct"].mean()
    return list(acc[acc == 1.0].index)


def _deleted(rows: pd.DataFrame) -> pd.DataFrame:
    """One row of an all-correct episode gone: per-episode accuracies unchanged."""
    e = _all_correct_episodes(rows)[0]
    return rows.drop(rows[rows.episode == e].index[-1])


def _shifted(rows: pd.DataFrame) -> pd.DataFrame:
    """A row moved between two all-correct episodes: same row count, same per-episode
    accuracies, but later queries sit at other positions."""
    full = _all_correct_episodes(rows)
    dup = rows[rows.episode == full[-1]].iloc[[0]]
    moved = pd.concat([rows.drop(rows[rows.episode == full[0]].index[-1]), dup])
    return moved.sort_values(["episode", "query"], kind="stable")


def _blank(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows.copy()
    out["correct"] = out["correct"].astype(object)
    out.loc[out[out.episode == _all_correct_episodes(rows)[0]].index[-1], "correct"] = None
    return out


def _write_rows(path, record: ResultRecord, rows: pd.DataFrame) -> None:
    rows.to_csv(_rows_path(path, record), index=False, compression="gzip")


def _reread(rows: pd.DataFrame, tmp_path) -> pd.DataFrame:
    file = tmp_path / "rows.csv.gz"
    rows.to_csv(file, index=False, compression="gzip")
    return pd.read_csv(file)


# F1 -------------------------------------------------------------------------------------


def test_figures_leave_out_a_hand_edited_record_as_table_does(tmp_path, capsys, monkeypatch):
    """figures plotted a record's JSON accuracy unchecked: otam drawn at 95% for 6-way,
    with no note, where table and report left that record out."""
    recs = _runs(tmp_path)
    _edit_accuracy(tmp_path, recs[("A", 6)], 99.0)
    drawn = {}
    monkeypatch.setattr(
        figures_cmd, "render_all", lambda runs, entries, *a, **k: drawn.setdefault("e", entries)
    )
    assert main(["figures", "--runs", str(tmp_path), "--out", str(tmp_path / "fig")]) == 0
    plotted = {(e.system, e.setting.way) for e in drawn["e"]}
    assert ("A", 6) not in plotted and {("A", 5), ("B", 6), ("C", 6)} <= plotted
    err = capsys.readouterr().err
    assert "note: left out A in toy 6-way 1-shot" in err and "record was edited" in err


# F2 -------------------------------------------------------------------------------------


def test_rows_must_hold_each_episode_query_key_once(tmp_path):
    """The record check read per-episode accuracies only: a row moved between two
    all-correct episodes, or deleted from one, gave the record; so did a blank `correct`."""
    from fsarbench.results import query_rows_problem

    record = _runs(tmp_path, systems=(("A", 0.9),), ways=(5,))[("A", 5)]
    rows = pd.read_csv(_rows_path(tmp_path, record))
    assert query_rows_problem(rows, record) == ""
    assert queries_match(tmp_path, record)
    cases = {
        "deleted": (_deleted(rows), "rows, not 200 episodes x 10 queries"),
        "shifted": (_shifted(rows), "appears twice and another not at all"),
        "blank": (_blank(rows), "blank or not True/False"),
        "not boolean": (rows.assign(correct=rows["correct"].astype(int)), "not True/False"),
        "outside": (rows.assign(query=rows["query"] + 1), "lies outside"),
    }
    for name, (bad, why) in cases.items():
        assert why in query_rows_problem(_reread(bad, tmp_path), record), name
        _write_rows(tmp_path, record, bad)
        assert not queries_match(tmp_path, record), name  # so `run` re-evaluates the cell
        left_out: list[str] = []
        assert load_entries(tmp_path, left_out=left_out, verify_rows=True) == [], name
        assert "not one row per query" in left_out[0] and why in left_out[0], name


@pytest.mark.parametrize("edit", [_deleted, _shifted])
def test_paired_tests_refuse_rows_that_lost_or_moved_a_query(tmp_path, capsys, edit):
    """A moved row changed McNemar's counts silently (queries were paired by position); a
    deleted one aborted compare and leaderboard with "per-query correctness must be 1-D of
    equal length". Now the entry is refused, and the CLI leaves only it out."""
    recs = _runs(tmp_path, ways=(5,))
    rows = pd.read_csv(_rows_path(tmp_path, recs[("A", 5)]))
    _write_rows(tmp_path, recs[("A", 5)], edit(rows))
    with pytest.raises(QueryRowsError, match="not one row per query"):
        compare_systems(tmp_path, load_entries(tmp_path), "A", "B", test="mcnemar")
    args = ["--runs", str(tmp_path), "--test", "mcnemar", "--bootstrap", "100"]
    assert main(["compare", "B", "C", *args]) == 0
    assert main(["leaderboard", *args]) == 0
    out = capsys.readouterr()
    assert "note: left out A in toy 5-way 1-shot" in out.err
    assert "| B " in out.out and "| C " in out.out and "| A " not in out.out


# F3 -------------------------------------------------------------------------------------


def test_one_bad_record_leaves_out_only_its_entry_from_the_leaderboard(tmp_path, capsys):
    """The whole 6-way setting vanished from leaderboard.md/.csv (the note on stdout only)
    when one of its three records was hand-edited; report left out just that entry."""
    recs = _runs(tmp_path)
    _edit_accuracy(tmp_path, recs[("A", 6)], 99.0)
    assert main(["leaderboard", "--runs", str(tmp_path), "--bootstrap", "100"]) == 0
    assert "note: left out A in toy 6-way 1-shot" in capsys.readouterr().err
    md = (tmp_path / "leaderboard.md").read_text()
    six = md[md.index("## toy 6-way") :]
    assert "| B " in six and "| C " in six and "| A " not in six.split("Notes:")[0]
    assert "- left out A in toy 6-way 1-shot" in md and "record was edited" in md
    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    assert sorted(csv[csv.way == 6].method) == ["B", "C"]
    assert sorted(csv[csv.way == 5].method) == ["A", "B", "C"]
    # the library call leaves out the entry too, not the setting
    left_out: list[str] = []
    board = build_leaderboard(tmp_path, load_entries(tmp_path), left_out=left_out, n_boot=100)
    six_board = [s for s in board if s.way == 6]
    assert [st.entry.system for st in board[six_board[0]]] == ["B", "C"]
    assert len(left_out) == 1 and "A in toy 6-way" in left_out[0]


# F10 ------------------------------------------------------------------------------------


def test_leaderboard_names_comparisons_mcnemar_could_not_test(tmp_path, capsys):
    """Entries with different training seeds have no McNemar p; they tied (a system at
    53.60 shared rank 2 with one at 63.87) with nothing said."""
    rng = np.random.default_rng(4)
    m = _manifest()
    for seed in (0, 1):
        save_simulated_record(tmp_path, m, "A", 0.9, rng, train_seed=seed)
        save_simulated_record(tmp_path, m, "B", 0.6, rng, train_seed=seed)
    save_simulated_record(tmp_path, m, "C", 0.3, rng)
    args = ["leaderboard", "--runs", str(tmp_path), "--bootstrap", "100"]
    assert main([*args, "--test", "mcnemar"]) == 0
    note = (
        "McNemar needs the same training seeds on both sides: 2 comparison(s) untested, "
        "counted as ties (toy 5-way 1-shot (200 episodes, 2 queries/class): C vs A, C vs B); "
        "use --test ttest"
    )
    assert f"note: {note}" in capsys.readouterr().err
    assert f"- {note}" in (tmp_path / "leaderboard.md").read_text()
    _, page_notes = collect_leaderboard(
        tmp_path, load_entries(tmp_path), test="mcnemar", n_boot=100
    )
    assert note in page_notes  # the report page's leaderboard says so too
    assert main(args) == 0  # the t-test has every p-value: nothing to say
    assert "untested" not in capsys.readouterr().err
    assert "untested" not in (tmp_path / "leaderboard.md").read_text()


def test_compare_says_when_every_record_of_a_system_was_left_out(tmp_path, capsys):
    """After the note, compare said "no records for 'A'", as if A had never been run."""
    recs = _runs(tmp_path, ways=(5,))
    _edit_accuracy(tmp_path, recs[("A", 5)], 99.0)
    assert main(["compare", "A", "B", "--runs", str(tmp_path), "--bootstrap", "100"]) == 2
    err = capsys.readouterr().err
    assert "note: left out A in toy 5-way 1-shot" in err
    assert "every record of 'A' under" in err and "was left out" in err
