"""What 'run' writes after its cells: every paper table an earlier run wrote is written
again, and figures the records no longer give are removed."""

from __future__ import annotations

import argparse

from fsarbench.cli.run_cmd import _write_outputs
from fsarbench.report.demo import DemoSystem, write_demo_records


def test_earlier_paper_tables_are_rewritten_and_figures_not_drawn_are_removed(tmp_path, capsys):
    """'run --table 1' rewrote Table 1 only: Table 6's file kept the rows of the run before
    (the report, rebuilt from every record, showed more); an old forest plot drawn from a
    deleted record stayed beside the new ones."""
    write_demo_records(tmp_path, [DemoSystem("otam"), DemoSystem("trx")], settings=[(5, 1)])
    tables, figures = tmp_path / "tables", tmp_path / "figures"
    tables.mkdir()
    figures.mkdir()
    (tables / "paper_table6.md").write_text("the rows of an earlier run\n")
    (tables / "paper_table6.OUT-OF-DATE.csv").write_text("an interrupted run's CSV\n")
    (figures / "forest_gone.png").write_bytes(b"old")  # drawn by an earlier run
    (figures / ".drawn-by-run.json").write_text('["forest_gone.png"]')
    (figures / "my_notes.png").write_bytes(b"a user's file")
    (figures / "forest_otam.png").write_bytes(b"drawn by 'figures --forest otam trx'")
    _write_outputs(argparse.Namespace(out=tmp_path), cells=[])
    assert "| OTAM [4]" in (tables / "paper_table6.md").read_text()
    assert (tables / "paper_table6.tex").exists()
    assert (tables / "paper_table6.csv").exists()
    assert not (tables / "paper_table6.OUT-OF-DATE.csv").exists()  # rewritten: no longer stale
    assert "paper_table6.md" not in capsys.readouterr().out  # not a table of this run's cells
    assert not (figures / "forest_gone.png").exists() and (figures / "my_notes.png").exists()
    assert (figures / "forest_otam.png").exists()  # run did not draw it: not run's to delete
    assert any(p.name.startswith("per_class_synth_5w1s") for p in figures.iterdir())


def test_a_grids_line_counts_cells_as_the_run_line_does():
    """The run's first line said '18 cells (54 grid entries)', its grid line '54 cells'."""
    from types import SimpleNamespace

    from fsarbench.cli.run_cmd import _run_share
    from fsarbench.experiments.cells import Cell

    said: list[str] = []
    tags = (("grid", "table1"),)
    cells = [Cell("otam", "synth", 5, shot, tags=tags, label=lab) for shot in (1, 5)
             for lab in ("OTAM", "OTAM (row 2)")]  # fmt: skip
    runner = SimpleNamespace(run_cells=lambda group, on_record=None: None)
    env = SimpleNamespace(is_main=True, distributed=False)
    assert _run_share(runner, cells, env, lambda text, **_: said.append(text)) is None
    assert said == [said[0]] and said[0].startswith("grid table1: 2 cells (4 grid entries), ")
