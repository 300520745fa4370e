"""The HTML report's data and markup (no browser: see test_report_browser.py)."""

from __future__ import annotations

import dataclasses
import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import pytest
import tomllib
from report_fixtures import EVIL, write_report_runs, write_small_runs

from fsarbench.cli.main import main
from fsarbench.cli.run_cmd import write_run_report
from fsarbench.report.compare import compare_systems
from fsarbench.report.leaderboard import build_leaderboard
from fsarbench.report.page import NoRecordsError, collect_report, render_report
from fsarbench.report.page.health import FROZEN_CAUSE, data_health
from fsarbench.report.page.provenance import entry_provenance
from fsarbench.report.published import load_table
from fsarbench.report.records import load_entries
from fsarbench.report.tables import build_table
from fsarbench.results import load_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return write_report_runs(tmp_path_factory.mktemp("report-runs"))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return write_small_runs(tmp_path_factory.mktemp("report-small"))


@pytest.fixture(scope="module")
def data(runs):
    return collect_report(runs, n_boot=200, figures=False)


def test_tables_with_records_shown_beside_published_rest_noted(data, runs, small) -> None:
    entries = load_entries(runs)
    assert [t.number for t in data.tables] == [1, 2, 3, 4, 5, 6]
    table1 = data.tables[0]
    expected = build_table(load_table(1), entries, source="both")
    assert [r.source for r in table1.rows] == [r.source for r in expected.rows]
    got = [[c.text for c in r.cells] for r in table1.rows if r.is_run]
    want = [[c.text for c in r.cells] for r in expected.rows if r.source.startswith("run")]
    assert got == want and len(got) == 4  # otam, trx, sgtm-otam, protonet (open row)
    assert "published" in {r.source for r in table1.rows}
    only = collect_report(small, n_boot=100, figures=False)
    assert [t.number for t in only.tables] == [1, 2, 6]
    assert [(a.number, a.command) for a in only.absent_tables] == [
        (n, f"python -m fsarbench run --table {n}") for n in (3, 4, 5)
    ]


def test_verdict_columns_of_numbers_sort_as_numbers(data) -> None:
    """'A acc.', 'B acc.' and 'p raw' sorted as text: '1.2e-28' after '0.244'."""
    page = render_report(data)
    table = page.split('<table class="verdicts sortable">')[1].split("</table>")[0]
    head = table.split("</thead>")[0]
    assert 'data-type="text">A acc.' not in head and 'data-type="text">p raw' not in head
    row = data.verdicts[0]
    assert row.acc_a_value == pytest.approx(float(row.acc_a.split(" ±")[0]), abs=0.005)


def test_the_banner_names_every_synthetic_dataset(data) -> None:
    """The banner named `synth` alone where Tables 3 and 4 stood on `synth-planted`."""
    assert data.synthetic_datasets == ("synth", "synth-planted")
    page = render_report(data)
    assert "<code>synth</code>, <code>synth-planted</code>) standing in" in page


def test_leaderboard_matches_build_leaderboard_with_ties(data, runs) -> None:
    entries = [e for e in load_entries(runs) if not e.is_variant]
    board = build_leaderboard(runs, entries, n_boot=200)
    assert [b.setting for b in data.boards] == [s.label for s in board]
    for section, standings in zip(data.boards, board.values()):
        assert [(r.system, r.rank) for r in section.rows] == [
            (st.entry.system, st.rank) for st in standings
        ]
        ranks = [r.rank for r in section.rows]
        assert [r.tied for r in section.rows] == [ranks.count(k) > 1 for k in ranks]
    assert any(b.ties for b in data.boards)  # otam and sgtm-otam are near-identical


def test_verdicts_are_the_paper_method_against_the_others_with_levels(data, runs) -> None:
    pairs = {(v.a, v.b) for v in data.verdicts}
    assert pairs == {("sgtm-otam", "otam"), ("sgtm-otam", "protonet"), ("sgtm-otam", "trx")}
    comps = compare_systems(runs, load_entries(runs), "sgtm-otam", "trx", n_boot=200)
    rows = [v for v in data.verdicts if v.b == "trx"]
    assert [v.verdict for v in rows] == [c.verdict for c in comps] == ["sgtm-otam better"] * 3
    assert [v.winner for v in rows] == ["a"] * 3
    # two seeds against one: the single seed's own seed variance is untested
    assert all(v.level.startswith("episode level, seeds of one side only (2 vs 1") for v in rows)


def test_data_health_counts_missing_and_unreadable_per_dataset(runs, data) -> None:
    records = [r for r in load_records(runs) if r.dataset == "synth"]
    bad = [
        dataclasses.replace(records[0], skipped_videos=["test/a: missing", "train/b: missing"]),
        dataclasses.replace(records[1], skipped_videos=["test/a: missing", "val/c: bad header"]),
        dataclasses.replace(records[2], dataset="other", skipped_videos=["train/d"]),
    ]
    health = {h.dataset: h for h in data_health(bad + records[3:])}
    synth, other = health["synth"], health["other"]
    assert synth.missing == {"test/a", "train/b"} and synth.unreadable == {"val/c": "bad header"}
    assert synth.by_split() == {"test": 1, "train": 1, "val": 1} and not synth.ok
    # a frozen record names no cause: the video may be missing as well as unreadable
    assert other.unrecorded == {"train/d"} and not other.unreadable and other.records == 1
    assert not other.ok and other.by_split() == {"train": 1}
    assert synth.records == len(records) - 1
    page = render_report(dataclasses.replace(data, health=[other]))  # as the page shows it
    assert f"<code>train/d</code> — {FROZEN_CAUSE}</li>" in page
    named = dataclasses.replace(records[3], skipped_videos=["test/a"])  # a cause elsewhere
    (merged,) = data_health([bad[0], named])
    assert merged.missing == {"test/a", "train/b"} and not merged.unrecorded


def test_provenance_names_what_made_the_number(runs) -> None:
    entry = [e for e in load_entries(runs) if e.system == "sgtm-otam"][0]
    prov = entry_provenance(entry)
    fields = dict(prov.fields)
    assert fields["manifest hash"] == entry.manifest_hash
    assert fields["episode seed"] == "0" and fields["training seeds"] == "0, 1"
    assert fields["code version"] == entry.records[0].code_version
    assert [s[0] for s in prov.seeds] == ["0", "1"]
    assert [s[2] for s in prov.seeds] == [r.config_hash[:16] for r in entry.records]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))


def test_page_is_self_contained_and_escapes_names(small) -> None:
    data = collect_report(small, n_boot=100)
    html = render_report(data)
    parser = _Tags()
    parser.feed(html)
    tags = parser.tags
    assert not [t for t, a in tags if t == "link" or (t == "script" and "src" in a)]
    images = [a["src"] for t, a in tags if t == "img"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in html and "https://" not in html
    assert EVIL not in html and "evil&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert sum(1 for t, a in tags if t == "table" and "paper" in a.get("class", "")) == 3


def test_report_command_writes_index_and_prints_its_url(small, tmp_path, capsys) -> None:
    out = tmp_path / "site"
    assert main(["report", "--runs", str(small), "--out", str(out), "--no-figures"]) == 0
    printed = capsys.readouterr().out
    index = (out / "index.html").resolve()
    assert str(index) in printed and index.as_uri() in printed
    assert "<h2>Leaderboard</h2>" in index.read_text()
    assert not list(out.glob(".*.tmp"))  # written through a temporary file


def test_report_command_on_empty_or_missing_folder_says_what_to_run(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "nowhere"):
        assert main(["report", "--runs", str(folder)]) == 2
        err = capsys.readouterr().err
        assert str(folder) in err and "python -m fsarbench run --all" in err
    with pytest.raises(NoRecordsError, match="no result records"):
        collect_report(tmp_path / "empty")


def test_run_hook_writes_the_report_and_only_warns_on_failure(small, tmp_path, capsys) -> None:
    path = write_run_report(small)
    assert path == (small / "report" / "index.html").resolve() and path.exists()
    assert write_run_report(tmp_path) is None
    out = capsys.readouterr().out
    assert "warning: the HTML report was not written" in out and str(tmp_path) in out


def test_run_embeds_the_figures_it_drew_instead_of_drawing_them_again(small, tmp_path) -> None:
    from PIL import Image

    drawn = tmp_path / "accuracy_vs_way.png"
    Image.new("RGB", (4, 3), (200, 10, 10)).save(drawn)
    data = collect_report(small, figure_files=[drawn, tmp_path / "accuracy_vs_way.pdf"])
    assert [f.name for f in data.figures] == ["accuracy_vs_way"]
    assert data.figures[0].uri.startswith("data:image/png;base64,")
    assert collect_report(small, figure_files=[]).figures == []


def test_templates_ship_as_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["fsarbench.report.page"]
    folder = ROOT / "fsarbench" / "report" / "page"
    files = [str(p.relative_to(folder)) for p in (folder / "templates").iterdir()]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files)


def test_docs_commands_parse() -> None:
    import shlex

    from fsarbench.cli.main import build_parser

    text = (ROOT / "docs" / "report.md").read_text()
    commands = [
        line.split("#")[0].strip()
        for line in text.splitlines()
        if line.strip().startswith("python -m fsarbench")
    ]
    assert len(commands) >= 4
    for command in commands:
        build_parser().parse_args(shlex.split(command)[3:])


def test_missing_browser_skips_with_reason_but_fails_under_ci(monkeypatch, tmp_path) -> None:
    import browser_fixtures

    monkeypatch.setattr(browser_fixtures, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-chromium.*make browser"):
        browser_fixtures.require_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        browser_fixtures.require_browser()


@pytest.mark.slow
def test_run_ends_by_printing_the_report_path(tmp_path, capsys) -> None:
    out = tmp_path / "runs"
    argv = ["run", "--method", "protonet", "--dataset", "synth", "--shots", "1"]
    assert main([*argv, "--episodes", "100", "--out", str(out), "--no-progress"]) == 0
    index = (out / "report" / "index.html").resolve()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2:] == [f"report: {index}", f"        {index.as_uri()}"]
    assert "protonet" in index.read_text()


def test_systems_on_different_episodes_are_named_not_ranked(tmp_path) -> None:
    from fsarbench.episodes import make_manifest
    from fsarbench.evaluate import evaluate
    from fsarbench.registry import create_method
    from fsarbench.report.demo import demo_features
    from fsarbench.results import make_record, save_result

    feats, labels = demo_features()
    method = create_method("protonet", feature_dim=feats.shape[-1], seq_len=feats.shape[1])
    for name, manifest_seed in (("otam", 0), ("sgtm-otam", 1)):
        manifest = make_manifest(labels, way=5, shot=1, episodes=30, seed=manifest_seed)
        result = evaluate(method, feats, manifest, progress=False)
        record = make_record(
            result, method=name, dataset="synth", split_variant="synth", manifest=manifest
        )
        record.seed = 0  # the same setting on paper, other episodes in fact
        save_result(tmp_path, record, result)
    data = collect_report(tmp_path, n_boot=50, figures=False)
    assert data.boards == [] and len(data.board_notes) == 1
    assert "not ranked" in data.board_notes[0] and "different episodes" in data.board_notes[0]
    assert data.verdicts == []
    assert any(n.startswith("sgtm-otam vs otam not compared") for n in data.verdict_notes)
    assert "not ranked" in render_report(data)
