"""Per-query rows every report checks before it prints, plots or ranks a record: figures,
leaderboard and compare leave out what table and report leave out; one bad record costs
only its own entry."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from report_fixtures import save_simulated_record

import fsarbench as fb
from fsarbench.cli import figures_cmd
from fsarbench.cli.main import main
from fsarbench.report.leaderboard import build_leaderboard
from fsarbench.report.records import load_entries
from fsarbench.results import ResultRecord


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


def _edit_accuracy(path, record: ResultRecord, accuracy: float) -> None:
    """A hand-edited record: its rows untouched."""
    file = path / "records" / f"{record.cell}.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "accuracy": accuracy}))


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
