# ruff: noqa: E501  (the paper's table rows below are kept verbatim, one line each)
"""The table renderer against the seed paper's Tables 1 and 2, and with our own records."""

from __future__ import annotations

import csv
import io
import re
import shutil

import pytest

from fsarbench.report.demo import DemoSystem, write_demo_records
from fsarbench.report.published import available_tables, load_citation, load_table
from fsarbench.report.records import load_entries
from fsarbench.report.render import render
from fsarbench.report.tables import build_table, mark_significant

# The rows of Tables 1 and 2 as the paper's extracted text gives them (tabs shown as " | ").
# The extraction keeps the paper's underlines as <u>..</u> and loses its bold.
PAPER_TABLE_1 = """\
CMN [44] | ECCV'18 | 57.3 | 72.5 | 76.0 | - | - | - | - | - | -
ARN [41] | ECCV'20 | 63.7 | - | 82.4 | 66.3 | - | 83.1 | 45.5 | - | 60.6
OTAM [4] | CVPR'20 | 72.2 | 78.7 | 84.2 | 79.9 | 87.0 | 88.9 | 54.5 | 65.7 | 68.0
AMeFu [15] | MM'20 | 74.1 | <u>84.3</u> | 86.8 | 85.1 | 93.1 | 95.5 | 60.2 | 71.5 | 75.5
ITANet [42] | IJCAI'21 | 73.6 | - | 84.3 | - | - | - | - | - | -
TRX [24] | CVPR'21 | 63.6 | 81.8 | 85.9 | 78.2 | 92.4 | 96.1 | 53.1 | 66.8 | 75.6
TA ² N [21] | AAAI'22 | 72.8 | - | 85.8 | 81.9 | - | 95.1 | 59.7 | - | 73.9
STRM [30] | CVPR'22 | 62.9 | 81.1 | 86.7 | 80.5 | 92.7 | <u>96.9</u> | 52.3 | 67.4 | 77.3
HyRSM [36] | CVPR'22 | 73.7 | 83.5 | 86.1 | 83.9 | 93.0 | 94.7 | 60.3 | 71.7 | 76.0
Bi-MHM [36] | CVPR'22 | 72.3 | 81.1 | 84.5 | 81.7 | 88.2 | 89.3 | 58.3 | 67.1 | 69.0
HCL [43] | ECCV'22 | 73.7 | 82.4 | 85.8 | 82.5 | 91.0 | 93.9 | 59.1 | 71.2 | 76.3
Task Sampler [22] | MM'22 | 73.6 | - | 86.2 | 83.5 | - | 96.0 | 59.9 | - | 73.5
SloshNet [39] | AAAI'23 | 70.4 | - | 87.0 | 86.0 | - | 97.1 | 59.4 | - | 77.5
MoLo [35] | CVPR'23 | 74.0 | 83.7 | 85.6 | 86.0 | 93.5 | 95.5 | 60.8 | 72.0 | <u>77.4</u>
Ours+OTAM | - | <u>75.2</u> | 84.1 | <u>87.2</u> | 88.1 | <u>94.6</u> | 96.1 | <u>60.9</u> | <u>72.1</u> | 76.3
Ours+Bi-MHM | - | 75.6 | 84.4 | 87.6 | <u>87.8</u> | 95.0 | 96.0 | 61.5 | 72.5 | 76.0
"""
PAPER_TABLE_2 = """\
MatchingNet [32] | NeurIPS'16 | 31.3 | 45.5 | - | -
MAML [14] | ICML'17 | 30.9 | 41.9 | - | -
CMN [44] | ECCV'18 | 33.4 | 46.5 | - | -
OTAM [4] | CVPR'20 | 36.4 | 48.0 | 42.8 | 52.3
ITANet [42] | IJCAI'21 | 39.8 | 53.7 | 49.2 | 62.3
TRX [24] | CVPR'21 | 36.0 | <u>56.7</u> | 42.0 | 64.6
TA ² N [21] | AAAI'22 | - | - | 47.6 | 61.0
STRM [30] | CVPR'22 | 37.1 | 55.3 | 43.1 | 68.1
HyRSM [36] | CVPR'22 | 40.6 | 56.1 | 54.3 | 69.0
Bi-MHM [36] | CVPR'22 | 38.0 | 48.9 | 44.6 | 56.0
Task Sampler [22] | MM'22 | - | - | 47.1 | 61.6
SloshNet [39] | AAAI'23 | - | - | 46.5 | 68.3
MoLo [35] | CVPR'23 | <u>42.7</u> | 56.4 | <u>56.6</u> | <u>70.6</u>
Ours+OTAM | - | 40.0 | 56.0 | 54.1 | 69.8
Ours+Bi-MHM | - | <u>41.3</u> | <u>57.5</u> | <u>55.4</u> | <u>71.4</u>
"""


def _paper_rows(text: str) -> dict[str, list[str]]:
    rows = [line.split(" | ") for line in text.strip().splitlines()]
    return {r[0].replace(" ² ", "²"): r[2:] for r in rows}  # extraction spaces superscripts


def _rendered_rows(md: str, n_labels: int) -> dict[str, list[str]]:
    """Published rows of a rendered Markdown table: row name -> value cells (with markup)."""
    out = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > n_labels and cells[n_labels] == "published":
            out[cells[0]] = cells[n_labels + 1 :]
    return out


def _plain(cell: str) -> str:
    return re.sub(r"\*\*|</?u>", "", cell)


def _marks(rows: dict[str, list[str]], marker: str) -> set[tuple[str, int]]:
    return {(name, j) for name, cells in rows.items() for j, c in enumerate(cells) if marker in c}


@pytest.mark.parametrize("number, paper", [(1, PAPER_TABLE_1), (2, PAPER_TABLE_2)])
def test_published_values_cell_for_cell(number: int, paper: str) -> None:
    md = render(build_table(load_table(number), [], source="published"), "md")
    ours = _rendered_rows(md, n_labels=2)
    theirs = _paper_rows(paper)
    assert list(ours) == list(theirs), "rows differ in name or order"
    for name in theirs:
        assert [_plain(c) for c in ours[name]] == [_plain(c) for c in theirs[name]], name


def test_table1_marks_match_paper() -> None:
    md = render(build_table(load_table(1), [], source="published"), "md")
    ours, theirs = _rendered_rows(md, 2), _paper_rows(PAPER_TABLE_1)
    # Underlines survive the extraction: ours must be exactly the paper's.
    assert _marks(ours, "<u>") == _marks(theirs, "<u>")
    bold = _marks(ours, "**")
    assert bold == {tuple(m) for m in load_table(1).paper_marks.bold}
    # Bold is lost in the extraction; check the prose: Ours+Bi-MHM beats the best earlier
    # method by 1.5/1.8/0.7 (1-shot) and 0.1/1.5/0.5 (3-shot), and by 0.6 at Kinetics 5-shot.
    values = {
        n: [float(c) if c != "-" else None for c in map(_plain, cells)] for n, cells in ours.items()
    }
    earlier = [v for n, v in values.items() if not n.startswith("Ours")]
    claims = {0: 1.5, 3: 1.8, 6: 0.7, 1: 0.1, 4: 1.5, 7: 0.5, 2: 0.6}
    for j, gain in claims.items():
        best_earlier = max(v[j] for v in earlier if v[j] is not None)
        assert values["Ours+Bi-MHM"][j] - best_earlier == pytest.approx(gain, abs=1e-9)
    for j in range(9):
        top = max(v[j] for v in values.values() if v[j] is not None)
        assert {n for n, v in values.items() if v[j] == top} == {n for n, k in bold if k == j}


def test_table2_marks_match_paper() -> None:
    md = render(build_table(load_table(2), [], source="published"), "md")
    ours, theirs = _rendered_rows(md, 2), _paper_rows(PAPER_TABLE_2)
    bold, under = _marks(ours, "**"), _marks(ours, "<u>")
    # Table 2's extraction underlines best and second alike: together they are the paper's set.
    assert bold | under == _marks(theirs, "<u>")
    assert not bold & under
    # The prose: MoLo is "the best-performing approach" at 1-shot; ours wins 5-shot by 0.8.
    assert bold == {("MoLo [35]", 0), ("Ours+Bi-MHM", 1), ("MoLo [35]", 2), ("Ours+Bi-MHM", 3)}
    assert bold == {tuple(m) for m in load_table(2).paper_marks.bold}
    assert under == {tuple(m) for m in load_table(2).paper_marks.underline}
    for j in (1, 3):
        second = [
            _plain(c)
            for n, cells in ours.items()
            for k, c in enumerate(cells)
            if k == j and (n, k) in under
        ]
        assert float(_plain(ours["Ours+Bi-MHM"][j])) - float(second[0]) == pytest.approx(0.8)


def test_every_published_table_loads() -> None:
    assert available_tables() == [1, 2, 3, 4, 5, 6]
    for n in available_tables():
        spec = load_table(n)
        assert spec.rows and all(len(r.values) == len(spec.columns) for r in spec.rows)
    assert "Saliency-Guided" in str(load_citation())


@pytest.mark.parametrize("number, quoted", [(1, True), (2, True), (3, False), (6, True)])
def test_the_protocol_note_says_which_rows_it_describes(number: int, quoted: bool) -> None:
    """The setup the paper states for its own method (ResNet-50, 8 frames) was printed under
    every published row, also under the rows the paper quotes from earlier work (AMeFu also
    uses depth). Tables 1, 2 and 6 now say it describes the paper's own rows."""
    (note,) = [
        n
        for n in build_table(load_table(number), [], source="published").notes
        if n.startswith("published protocol")
    ]
    assert ("the other rows are the paper's quotes of earlier work" in note) is quoted


def test_latex_is_booktabs_with_marks() -> None:
    tex = render(build_table(load_table(1), [], source="published"), "latex", load_citation())
    for piece in (
        r"\toprule",
        r"\midrule",
        r"\bottomrule",
        r"\multicolumn{3}{c}{Kinetics}",
        r"\textbf{75.6}",
        r"\underline{75.2}",
        r"\underline{84.3}",
        r"TA\textsuperscript{2}N",
        r"\cmidrule(lr){4-6}",
    ):
        assert piece in tex, piece
    assert tex.count(r"\\") == 2 + 16  # two header lines + 16 rows
    assert "_" not in tex.replace(r"\_", "")


def test_latex_escapes_ablation_symbols() -> None:
    tex = render(build_table(load_table(3), [], source="published"), "latex")
    assert r"\checkmark" in tex and "✓" not in tex
    assert r"$\lambda$" in render(build_table(load_table(5), [], source="published"), "latex")


def test_latex_escapes_what_its_default_encoding_misprints() -> None:
    """A note's '[<name> protocol]' printed as '[¡name¿ protocol]' under OT1."""
    from fsarbench.report.render import latex_escape

    assert latex_escape("[<x> | y]") == r"[\textless{}x\textgreater{} \textbar{} y]"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    write_demo_records(
        out,
        [
            DemoSystem("sgtm-otam"),
            DemoSystem("otam", noise=3.0),
            DemoSystem("my-head", noise=1.0, train_seeds=(0, 1)),
            DemoSystem("sgtm-otam-tml", noise=0.5),
        ],
        settings=[(5, 1), (5, 5)],
        episodes=150,
    )
    return out


def test_run_rows_from_records(runs) -> None:
    table = build_table(load_table(1), load_entries(runs))
    by = {(r.labels[0], r.source): r for r in table.rows}
    ours = by[("Ours+OTAM", "run (synth)")]
    assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", ours.cells[0].text)
    assert ours.cells[1].text == "-"  # no 3-shot record
    # synth stands in once, under Kinetics; UCF101 and HMDB51 columns stay empty
    assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", ours.cells[2].text)
    assert all(c.text == "-" for c in ours.cells[3:])
    assert ("OTAM [4]", "run (synth)") in by
    assert "seeds ±" in by[("my-head", "run (synth)")].cells[0].text  # two training seeds
    assert by[("my-head", "run (synth)")].labels == ["my-head", "-"]  # as the paper's Ours rows
    assert not any(r.labels[0] == "sgtm-otam-tml" for r in table.rows)  # Table 3's variant
    t3 = build_table(load_table(3), load_entries(runs), source="runs")
    assert [r.labels[0] for r in t3.rows] == ["2", "Ours"]
    assert any("synthetic" in n for n in table.notes)


def test_a_columns_only_run_cell_is_not_marked_best(tmp_path) -> None:
    """Table 5 printed its only run cell bold, as the best of a column of one."""
    write_demo_records(tmp_path, [DemoSystem("sgtm-otam")], settings=[(5, 1)], episodes=50)
    table = build_table(load_table(5), load_entries(tmp_path), source="runs")
    (cell,) = [c for r in table.rows for c in r.cells if c.entry is not None]
    (line,) = [
        x for x in render(table, "md", load_citation()).splitlines() if x.startswith("| 0.5")
    ]
    assert cell.mark == "" and "**" not in line and "<u>" not in line


def test_run_marks_and_significance(runs) -> None:
    table = build_table(load_table(1), load_entries(runs), source="runs")
    run_rows = {r.labels[0]: r for r in table.rows}
    col = 0
    best = max(run_rows.values(), key=lambda r: r.cells[col].value or -1)
    assert best.cells[col].mark == "best"
    assert mark_significant(table, runs) >= 1
    assert run_rows["Ours+OTAM"].cells[col].significant  # otam sees far noisier features
    assert "\\*" in render(table, "md")


def test_csv_long_format(runs) -> None:
    text = render(build_table(load_table(2), load_entries(runs)), "csv", load_citation())
    rows = list(csv.DictReader(io.StringIO(text)))
    molo = [r for r in rows if r["row"] == "MoLo [35]" and r["column"] == "1-shot"]
    assert molo[0]["value"] == "42.7" and molo[0]["mark"] == "best"
    assert molo[0]["citation"] == "sgtm2024"
    assert any(r["source"] == "run (synth)" and r["ci95"] for r in rows)


def test_bad_format_and_source() -> None:
    table = build_table(load_table(6), [], source="published")
    with pytest.raises(ValueError, match="format must be one of"):
        render(table, "html")
    with pytest.raises(ValueError, match="source must be one of"):
        build_table(load_table(6), [], source="mine")


def test_table_cli(runs, tmp_path, capsys) -> None:
    from fsarbench.cli.main import main

    out = tmp_path / "t6.tex"
    assert main(["table", "6", "--runs", str(runs), "--format", "latex", "--out", str(out)]) == 0
    assert r"\textbf{75.2}" in out.read_text()
    assert main(["table", "1", "--runs", str(runs), "--source", "runs"]) == 0
    assert "Ours+OTAM" in capsys.readouterr().out


def test_latex_names_every_package_it_uses() -> None:
    tex = render(build_table(load_table(1), [], source="published"), "latex", load_citation())
    needs = {r"\toprule": "booktabs", r"\resizebox": "graphicx"}
    header = tex.splitlines()[0]
    for command, package in needs.items():
        if command in tex:
            assert package in header, (command, header)


def test_a_table_number_the_paper_does_not_have_is_named(capsys):
    """'table 7' said that table7.yaml was not found and to pass --published DIR, as if the
    package's own tables were missing."""
    from fsarbench.cli.main import main

    assert main(["table", "7"]) == 2
    err = capsys.readouterr().err
    assert "there is no published Table 7" in err and "tables 1, 2, 3, 4, 5, 6" in err


def test_table_out_to_a_folder_writes_the_table_file_in_it(tmp_path, capsys):
    """'table 1 --out FOLDER' stopped with an IsADirectoryError traceback."""
    from fsarbench.cli.main import main
    from fsarbench.report.demo import DemoSystem, write_demo_records

    write_demo_records(tmp_path / "runs", [DemoSystem("otam")], settings=[(5, 1)], episodes=20)
    (tmp_path / "out").mkdir()
    argv = ["table", "1", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert main([*argv, "--format", "latex"]) == 0
    assert "\\begin{table}" in (tmp_path / "out" / "table1.tex").read_text()
    # a new folder named with a trailing slash was written as a file named 'new'
    argv = ["table", "1", "--runs", str(tmp_path / "runs"), "--out", f"{tmp_path / 'new'}/"]
    assert main(argv) == 0 and (tmp_path / "new" / "table1.md").is_file()
    # a mistyped --stand-in showed no run row and exited 0
    assert main(["table", "1", "--runs", str(tmp_path / "runs"), "--stand-in", "snyth"]) == 2
    assert "did you mean 'synth'?" in capsys.readouterr().err


def _made_by_older_code(records: list) -> list:
    """``records`` as if made by another harness than the installed one (stale)."""
    for r in records:
        r.provenance["code"] = {"harness": "0" * 16}
    return records


def test_stale_records_are_marked_in_paper_rows_and_lose_a_cell_to_current_ones(tmp_path):
    """Stale records filled the paper's own rows (OTAM [4], Ours+OTAM) with no ‡stale in
    Markdown, LaTeX or CSV and no note saying what was stale; and a stale record with more
    episodes took the cell of a current one, which was named only in a 'not shown' note."""
    from fsarbench.report.records import STALE_MARK, group_entries
    from fsarbench.results import load_records

    old, new = tmp_path / "old", tmp_path / "new"
    write_demo_records(old, [DemoSystem("otam"), DemoSystem("sgtm-otam")], [(5, 1)], episodes=40)
    write_demo_records(new, [DemoSystem("otam")], [(5, 1)], episodes=20)
    entries = group_entries(_made_by_older_code(load_records(old)) + load_records(new))
    table = build_table(load_table(1), entries, source="runs")
    rows = {r.labels[0]: r for r in table.rows}
    assert rows["OTAM [4]"].cells[0].entry.system == "otam"  # current wins over stale
    assert rows["Ours+OTAM"].cells[0].text.endswith(STALE_MARK)
    (note,) = [n for n in table.notes if n.startswith("not shown")]
    assert note.startswith(f"not shown: otam {STALE_MARK} (")
    assert note.endswith("a current record wins over a stale one.")
    assert any(n.startswith(f"{STALE_MARK}: made by other code") for n in table.notes)
    md = render(table, "md")
    assert re.search(rf"\| Ours\+OTAM .*\| [\d.]+ ± [\d.]+ {STALE_MARK}", md)
    tex = render(table, "latex")
    assert STALE_MARK not in tex and "‡" not in tex and r"\ddag{}stale" in tex
    cells = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    ours = next(c for c in cells if c["row"] == "Ours+OTAM" and c["value"])
    otam = next(c for c in cells if c["row"] == "OTAM [4]" and c["value"])
    assert (ours["system"], ours["stale"]) == (f"sgtm-otam {STALE_MARK}", "code:harness")
    assert (otam["system"], otam["stale"]) == ("otam", "")


def test_published_files_are_parsed_once_and_read_again_when_they_change(
    tmp_path, monkeypatch
) -> None:
    """Tables, figures and the report read the same YAML files many times per run: parsed
    once, each caller gets its own copy, and an edited file is read again, even one that
    keeps its size and modification time."""
    import os
    import shutil

    from fsarbench.report import published

    folder = tmp_path / "published"
    shutil.copytree(published.published_dir(), folder)
    published._parsed_yaml.cache_clear()  # the same text may have been parsed before
    parses = []
    parse = published.load_yaml
    monkeypatch.setattr(published, "load_yaml", lambda text: parses.append(1) or parse(text))
    first = load_table(6, folder)
    assert load_table(6, folder) == first and len(parses) == 1  # parsed once
    path = folder / "table6.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("caption:", "caption: Edited.", 1), encoding="utf-8")
    assert load_table(6, folder).caption.startswith("Edited.")
    assert load_table(6, folder) != first and len(parses) == 2  # the edited file, once
    stat = path.stat()
    path.write_text(text.replace("caption:", "caption: Edit22.", 1), encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # within one mtime tick
    assert path.stat().st_size == stat.st_size
    assert load_table(6, folder).caption.startswith("Edit22.") and len(parses) == 3


def test_a_published_table_with_a_key_written_twice_is_refused(tmp_path) -> None:
    """YAML keeps the last of two equal keys silently: a published number typed twice
    (the second a typo) was shown as the paper's."""
    import shutil

    from fsarbench.config import ConfigError
    from fsarbench.report import published

    folder = tmp_path / "published"
    shutil.copytree(published.published_dir(), folder)
    path = folder / "table6.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "caption: again\n", encoding="utf-8")
    with pytest.raises(
        ConfigError,
        match=r"table6\.yaml is not valid YAML .*'caption' is "
        r"written twice",
    ):
        load_table(6, folder)


def test_a_cell_of_two_tracks_shows_the_tables_own_and_marks_the_other(tmp_path) -> None:
    """A finetune record took a Table 6 cell from the frozen one by the tracks' alphabetical
    order ("equal precedence"), was ranked with the frozen cells and carried no mark."""
    write_demo_records(tmp_path, [DemoSystem("otam"), DemoSystem("trx")], settings=[(5, 1)])
    write_demo_records(tmp_path, [DemoSystem("otam")], settings=[(5, 1)], track="finetune")
    table = build_table(load_table(6), load_entries(tmp_path), source="runs")
    cells = {r.labels[0]: r.cells[0] for r in table.rows}
    otam, trx = cells["OTAM [4]"], cells["TRX [24]"]
    assert otam.entry.setting.track == "finetune" and "[" not in otam.text
    assert trx.text.endswith(" [frozen track]")
    assert otam.mark == trx.mark == ""  # one cell per track: nothing to rank either against
    (note,) = [n for n in table.notes if n.startswith("not shown")]
    assert "the table's own track wins" in note


def test_the_significance_note_of_an_ablation_table_names_other_rows(tmp_path) -> None:
    """Table 5's note called the best other λ 'the best baseline'."""
    write_demo_records(
        tmp_path,
        [DemoSystem("sgtm-otam"), DemoSystem("sgtm-otam[lambda_recon=0.1]", noise=3.0)],
        settings=[(5, 1)],
        episodes=60,
    )
    table = build_table(load_table(5), load_entries(tmp_path), source="runs")
    mark_significant(table, tmp_path)
    (note,) = [n for n in table.notes if n.startswith("*:")]
    assert "the best other row run of the column" in note


def test_bold_goes_to_the_tables_own_track_when_it_has_cells(tmp_path) -> None:
    """With more frozen than finetune cells in a column, bold and underline went to
    '[frozen track]' cells and the table's own (finetune) cells were never ranked."""
    frozen = ["otam", "trx", "protonet", "my-head", "hyrsm"]  # 3 shown: otam, trx lose cells
    write_demo_records(tmp_path, [DemoSystem(m) for m in frozen], settings=[(5, 1)])
    finetune = [DemoSystem("otam", noise=3.0), DemoSystem("trx", noise=4.0)]
    write_demo_records(tmp_path, finetune, settings=[(5, 1)], track="finetune")
    table = build_table(load_table(6), load_entries(tmp_path), source="runs")
    cells = [r.cells[0] for r in table.rows if r.cells[0].entry is not None]
    assert sorted(c.entry.setting.track for c in cells) == ["finetune"] * 2 + ["frozen"] * 3
    marked = [c for c in cells if c.mark]
    assert marked and all(c.entry.setting.track == "finetune" for c in marked)


def test_a_run_cell_over_other_test_videos_is_marked_and_not_silently_unranked(tmp_path):
    """A baseline whose records lost a test video was dropped from bold and '*' without a
    mark: 'ours' stood bold and starred as better than 'the best other method' while a
    better baseline sat unmarked in the same column."""
    import json

    write_demo_records(
        tmp_path,
        [
            DemoSystem("otam", noise=1.0),
            DemoSystem("protonet"),
            DemoSystem("sgtm-otam", noise=0.5),
        ],
        settings=[(5, 1)],
        episodes=60,
    )
    for path in (tmp_path / "records").glob("protonet__*.json"):
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "skipped_videos": ["test/v_0042: unreadable"]}))
    entries = load_entries(tmp_path)
    table = build_table(load_table(1), entries, source="runs", stand_in="synth")
    cells = {r.labels[0]: r.cells[0] for r in table.rows if r.cells[0].entry is not None}
    (protonet,) = [c for c in cells.values() if c.entry.system == "protonet"]
    assert protonet.text.endswith(" [other test videos]") and protonet.mark == ""
    notes = " ".join(table.notes)
    assert "[other test videos]: evaluated over other test videos" in notes
    assert (
        "protonet (synth 5-way 1-shot (60 episodes)): left-out test videos v_0042 vs none" in notes
    )
    others = [c for c in cells.values() if c is not protonet]
    assert all("[other test videos]" not in c.text for c in others)
    mark_significant(table, tmp_path, alpha=0.5)
    assert "best other method run of the column on the same test episodes" in " ".join(table.notes)


def test_on_an_even_split_the_run_that_lost_a_video_is_the_one_marked(tmp_path):
    """With one cell on each pool, the first row's pool was the reference: 'ours', on the
    full test list, was marked '[other test videos]' and the baseline that lost a video not."""
    import json

    write_demo_records(
        tmp_path,
        [DemoSystem("trx", noise=1.0), DemoSystem("sgtm-otam", noise=0.5)],
        settings=[(5, 1)],
        episodes=60,
    )
    for path in (tmp_path / "records").glob("trx__*.json"):
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "skipped_videos": ["test/v_0042: unreadable"]}))
    table = build_table(load_table(1), load_entries(tmp_path), source="runs", stand_in="synth")
    texts = {c.entry.system: c.text for r in table.rows for c in r.cells if c.entry is not None}
    assert texts["trx"].endswith("[other test videos]")
    assert "[other test videos]" not in texts["sgtm-otam"]


def test_table_out_into_a_results_folder_without_runs_is_refused(
    runs, tmp_path, capsys, monkeypatch
):
    """'table 1 --out RESULTS' (run's flag for its folder) printed the published rows alone,
    read from the default --runs, and wrote them into the results folder."""
    from fsarbench.cli.main import main

    monkeypatch.chdir(tmp_path)  # no default results folder here
    assert main(["table", "1", "--out", str(runs)]) == 2
    assert f"pass --runs {runs} to tabulate them" in capsys.readouterr().err
    assert not (runs / "table1.md").exists()
    assert main(["table", "1", "--runs", str(runs), "--out", str(runs)]) == 0
    assert (runs / "table1.md").is_file()
    # a folder that merely holds a results folder below it is a place to write the table
    shutil.copytree(runs, tmp_path / "proj" / "results" / "mine")
    assert main(["table", "1", "--out", str(tmp_path / "proj")]) == 0
    assert (tmp_path / "proj" / "table1.md").is_file()


def test_a_cell_of_two_frame_protocols_shows_the_seed_papers_and_marks_the_other(tmp_path):
    """A hyrsm-protocol record took a Table 1 cell from the seed-protocol one by name order
    ("equal precedence"), unmarked; a trx-protocol row was ranked against seed cells."""
    systems = [DemoSystem("otam"), DemoSystem("trx", noise=3.0)]
    write_demo_records(tmp_path, systems, settings=[(5, 1)])
    write_demo_records(tmp_path, [DemoSystem("otam", noise=1.0)], [(5, 1)], protocol="hyrsm")
    write_demo_records(tmp_path, [DemoSystem("protonet")], [(5, 1)], protocol="trx")
    table = build_table(load_table(6), load_entries(tmp_path), source="runs")
    cells = {r.labels[0]: r.cells[0] for r in table.rows if r.cells[0].entry is not None}
    otam, trx, protonet = cells["OTAM [4]"], cells["TRX [24]"], cells["protonet"]
    assert otam.entry.setting.protocol == "seed" and "[" not in otam.text
    assert protonet.text.endswith(" [trx protocol]") and protonet.mark == ""
    assert {otam.mark, trx.mark} == {"best", "second"}  # the seed cells, ranked together
    (note,) = [n for n in table.notes if n.startswith("not shown")]
    assert "[hyrsm protocol]" in note and "frame protocol (seed) wins" in note
    assert any("frame protocols: hyrsm, seed, trx" in n for n in table.notes)
    rows = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert {(r["system"], r["protocol"]) for r in rows if r["system"]} == {
        ("otam", "seed"),
        ("trx", "seed"),
        ("protonet", "trx"),
    }


def test_a_model_shared_across_shots_loses_a_cell_to_the_per_shot_model_and_is_marked(tmp_path):
    """Records of a model shared across shots (trained 1-shot) took 5-shot cells from the
    per-shot model's by hash order, unmarked."""
    write_demo_records(tmp_path, [DemoSystem("otam")], settings=[(5, 1), (5, 5)])
    write_demo_records(tmp_path, [DemoSystem("otam")], settings=[(5, 5)], train_shot=1)
    write_demo_records(tmp_path, [DemoSystem("trx")], settings=[(5, 5)], train_shot=1)
    table = build_table(load_table(1), load_entries(tmp_path), source="runs")
    shown = [c for r in table.rows for c in r.cells if c.entry is not None]
    otam = [c for c in shown if c.entry.method == "otam"]
    assert [c.entry.records[0].train_shot for c in otam] == [1, 5]  # each at its own shot
    (trx,) = [c for c in shown if c.entry.method == "trx"]
    assert trx.text.endswith(" [trained 1-shot]")
    (note,) = [n for n in table.notes if n.startswith("not shown")]
    assert "the default recipe (one model per shot" in note
    assert any("(--recipe/--option): shot=1 for trx" in n for n in table.notes), table.notes
    rows = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert {r["train_shot"] for r in rows if r["system"] == "trx"} == {"1"}
