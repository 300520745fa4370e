"""Which run cells a paper table ranks (bold, underline) and how it marks the others: the
column's ranked cells follow the table's reference episode protocol, other episodes drawn
from the same videos are marked, and a row mixing real and stand-in data marks each stand-in
cell (review 38d)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from report_fixtures import save_simulated_record

from fsarbench.episodes import make_manifest
from fsarbench.report.published import load_table
from fsarbench.report.records import load_entries
from fsarbench.report.tables import build_table

LABELS = np.repeat(np.arange(24), 10)


def _record(out: Path, method: str, acc: float, *, rng: int, shot: int = 1, episodes: int = 200,
            dataset: str = "kinetics", drawn_for: str | None = None, **kw) -> None:  # fmt: skip
    manifest = make_manifest(
        LABELS, way=5, shot=shot, episodes=episodes, split="test",
        dataset=dataset if drawn_for is None else drawn_for,
    )  # fmt: skip
    save_simulated_record(
        out, manifest, method, acc, np.random.default_rng(rng), dataset=dataset,
        track="finetune", train_way=5, train_shot=shot, **kw,
    )  # fmt: skip


def _column(table, j: int = 0) -> dict[str, tuple[str, str]]:
    return {r.labels[0]: (r.cells[j].text, r.cells[j].mark) for r in table.rows}


def test_the_ranked_cells_are_those_on_the_tables_reference_episodes(tmp_path):
    """Two cells on 200 episodes and two on 400: the note named 400 the reference, yet the
    200-episode cells were ranked (68.70 bold under its marker, 90.15 unmarked)."""
    _record(tmp_path, "otam", 0.70, rng=1)
    _record(tmp_path, "trx", 0.60, rng=2)
    _record(tmp_path, "hyrsm", 0.90, rng=5, episodes=400)
    _record(tmp_path, "sgtm-otam", 0.80, rng=3, episodes=400)
    column = _column(build_table(load_table(1), load_entries(tmp_path), source="runs"))
    assert column["OTAM [4]"][0].endswith("[200 episodes]") and column["OTAM [4]"][1] == ""
    assert column["TRX [24]"][1] == ""
    assert column["HyRSM [36]"][1] == "best" and column["Ours+OTAM"][1] == "second"


def test_a_cell_on_other_episodes_drawn_from_the_same_videos_is_marked(tmp_path):
    """A manifest drawn under another dataset name (same count, seed and videos): the best
    cell of the column lost its ranking without a word and a lower one was bold."""
    _record(tmp_path, "otam", 0.90, rng=1, drawn_for="")
    _record(tmp_path, "trx", 0.60, rng=2)
    _record(tmp_path, "hyrsm", 0.70, rng=5)
    _record(tmp_path, "sgtm-otam", 0.80, rng=3)
    table = build_table(load_table(1), load_entries(tmp_path), source="runs")
    text, mark = _column(table)["OTAM [4]"]
    assert text.endswith(" [other episodes drawn]") and mark == ""
    assert any(n.startswith("[other episodes drawn]: evaluated on other episodes") and
               "otam (kinetics 5-way 1-shot" in n for n in table.notes)  # fmt: skip


def test_a_row_of_real_and_stand_in_cells_marks_each_stand_in(tmp_path):
    """The whole row was labelled 'run (synth)' and a synthetic 3-shot number sat bold,
    unmarked, under 'Kinetics 3-shot' beside a real Kinetics 1-shot number."""
    _record(tmp_path, "otam", 0.70, rng=1)
    _record(tmp_path, "sgtm-otam", 0.80, rng=3)
    for shot in (1, 3):
        for method, acc in (("otam", 0.95), ("sgtm-otam", 0.5)):
            _record(tmp_path, method, acc, rng=shot, shot=shot, dataset="synth",
                    tags={"synthetic": True})  # fmt: skip
    table = build_table(load_table(1), load_entries(tmp_path), source="runs", stand_in="synth")
    otam = next(r for r in table.rows if r.labels[0] == "OTAM [4]")
    assert otam.source == "run (synth where marked)"
    assert not otam.cells[0].text.endswith("]") and otam.cells[1].text.endswith(" [synth]")
