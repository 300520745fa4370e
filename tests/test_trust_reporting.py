"""Reporting that never prints a confident number it cannot back: one-episode statistics,
training seeds in the summary tables, seed pairing, raw p-values, entries that cannot be
reported, best marks across stand-ins, outside results in the summary."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from report_fixtures import save_simulated_record

import fsarbench as fb
from fsarbench.cli.main import main
from fsarbench.experiments.summary_tables import summary_tables, write_summary_tables
from fsarbench.report.compare import compare_systems
from fsarbench.report.published import load_table
from fsarbench.report.records import UnpairedError, group_entries, load_entries
from fsarbench.report.tables import build_table, mark_significant
from fsarbench.results import OUTSIDE_TAG, UnreadableRecordError, load_record, load_records
from fsarbench.stats.intervals import mean_and_halfwidth
from fsarbench.stats.paired import bootstrap_mean_ci, compare_paired, paired_ttest
from fsarbench.stats.rounding import fixed


def _manifest(episodes=300, dataset="toy", seed=0, classes=10):
    classes = np.repeat(np.arange(classes), 6)
    return fb.make_manifest(
        classes, way=5, shot=1, queries=2, episodes=episodes, seed=seed, dataset=dataset
    )


_save = save_simulated_record


def test_one_episode_gives_no_test_and_no_interval():
    assert all(math.isnan(v) for v in paired_ttest(np.array([0.8]), np.array([0.6])))
    assert all(math.isnan(v) for v in bootstrap_mean_ci(np.array([0.2])))
    c = compare_paired(np.array([0.8]), np.array([0.6]))
    assert math.isnan(c.p_ttest) and math.isnan(c.ci_low) and math.isnan(c.ci_high)
    mean, half, std = mean_and_halfwidth(np.array([0.6]), "t")
    assert mean == 0.6 and math.isnan(half) and math.isnan(std)
    # two episodes that differ alike have no variance either: the sign-flip test's p, not 0
    assert paired_ttest(np.array([0.8, 0.6]), np.array([0.6, 0.4]))[1] == 0.5


def test_one_episode_over_several_seeds_has_no_interval_and_no_place_in_holm(tmp_path, capsys):
    """With 2 seeds over 1 episode the pooled ± counted the episode term as 0 with 1
    degree of freedom (80.00 ± 254.12 printed), and compare's footer counted the
    setting in a Holm family its NaN p was not part of."""
    rng = np.random.default_rng(6)
    one = _manifest(episodes=1, dataset="one")
    many = _manifest(episodes=300)
    for seed, acc in ((0, 0.9), (1, 0.6)):
        _save(tmp_path, one, "A", acc, rng, train_seed=seed, dataset="one")
        _save(tmp_path, one, "B", acc - 0.2, rng, train_seed=seed, dataset="one")
        _save(tmp_path, many, "A", acc, rng, train_seed=seed)
        _save(tmp_path, many, "B", acc - 0.2, rng, train_seed=seed)
    by_setting = {(e.system, e.setting.dataset): e for e in load_entries(tmp_path)}
    assert math.isnan(by_setting[("A", "one")].ci95)
    assert math.isfinite(by_setting[("A", "toy")].ci95)
    assert main(["compare", "A", "B", "--runs", str(tmp_path), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "over the 1 of 2 setting(s) compared that have a ttest p-value" in out


def test_the_forest_plot_draws_the_interval_the_verdict_rests_on(tmp_path):
    """With several seeds the forest plot drew the episode-level interval ([13.45, 18.45],
    hollow) beside a verdict resting on the hierarchical one ([12.60, 19.30])."""
    from fsarbench.report.figures import plot_forest

    manifest, rng = _manifest(), np.random.default_rng(7)
    for seed, acc in ((0, 0.8), (1, 0.6)):
        _save(tmp_path, manifest, "A", acc, rng, train_seed=seed)
        _save(tmp_path, manifest, "B", acc - 0.1, rng, train_seed=seed)
    (c,) = compare_systems(tmp_path, load_entries(tmp_path), "A", "B", n_boot=300)
    assert c.stats.seed_level is not None and c.stats.diff_ci != (c.stats.ci_low, c.stats.ci_high)
    fig = plot_forest([c])
    (segment,) = fig.axes[0].collections[0].get_segments()
    assert tuple(segment[:, 0]) == pytest.approx(c.stats.diff_ci)


def test_summary_tables_pool_training_seeds_and_leave_outside_results_out(tmp_path):
    manifest, rng = _manifest(), np.random.default_rng(0)
    for seed, acc in ((0, 0.9), (1, 0.5), (2, 0.2)):
        _save(tmp_path, manifest, "A", acc, rng, train_seed=seed)
    _save(tmp_path / "external" / "X", manifest, "X", 0.95, rng, tags={OUTSIDE_TAG: "x"})
    records = load_records(tmp_path)
    (text,) = summary_tables(records).values()
    (entry,) = [e for e in group_entries(records) if e.system == "A"]
    row = next(line for line in text.splitlines() if line.startswith("| A "))
    assert f"{entry.accuracy:.2f} ± {entry.ci95:.2f} (seeds ± {entry.seeds.std:.2f}, n=3)" in row
    assert "| X " not in text and "several training seeds" in text
    fb.write_summary(tmp_path)
    assert "X" not in set(pd.read_csv(tmp_path / "summary.csv")["method"])


def test_seeds_of_two_systems_are_paired_only_when_they_are_the_same_seeds(tmp_path):
    manifest, rng = _manifest(), np.random.default_rng(1)
    for seed, acc in ((0, 0.8), (1, 0.5), (2, 0.6)):
        _save(tmp_path / "same", manifest, "A", acc, rng, train_seed=seed)
        _save(tmp_path / "same", manifest, "B", acc - 0.05, rng, train_seed=seed)
        _save(tmp_path / "other", manifest, "A", acc, rng, train_seed=seed)
        _save(tmp_path / "other", manifest, "B", acc - 0.05, rng, train_seed=seed + 5)
    (same,) = compare_systems(tmp_path / "same", load_entries(tmp_path / "same"), "A", "B")
    (other,) = compare_systems(tmp_path / "other", load_entries(tmp_path / "other"), "A", "B")
    assert same.stats.seed_level.seed_test.startswith("paired t over 3 seeds")
    assert not math.isnan(same.stats.p_mcnemar)
    assert other.stats.seed_level.seed_test.startswith("Welch t")
    assert math.isnan(other.stats.p_mcnemar)


def test_mcnemar_in_comparisons_is_clustered_by_episode_across_seeds(tmp_path):
    """Queries of one episode (10 here) share its support set, in every training seed: they
    were counted as independent pairs, which made McNemar's p far too small."""
    from fsarbench.report.records import query_correct
    from fsarbench.stats.paired import mcnemar

    manifest, rng = _manifest(), np.random.default_rng(3)
    for seed, acc in ((0, 0.8), (1, 0.6)):
        _save(tmp_path, manifest, "A", acc, rng, train_seed=seed)
        _save(tmp_path, manifest, "B", acc - 0.1, rng, train_seed=seed)
    entries = load_entries(tmp_path)
    (c,) = compare_systems(tmp_path, entries, "A", "B")
    a, b = ([e for e in entries if e.system == name][0] for name in ("A", "B"))
    ca, cb = np.concatenate(query_correct(tmp_path, a)), np.concatenate(query_correct(tmp_path, b))
    episodes = np.tile(np.repeat(np.arange(manifest.episodes), 10), 2)
    assert c.stats.mcnemar_method.startswith("clustered")
    assert c.stats.p_mcnemar == mcnemar(ca, cb, episodes)[2] > mcnemar(ca, cb)[2]


def test_compare_prints_as_raw_p_the_p_that_holm_adjusts(tmp_path, capsys):
    manifest, rng = _manifest(2000), np.random.default_rng(2)
    for seed, acc in ((0, 0.80), (1, 0.56)):
        _save(tmp_path, manifest, "A", acc, rng, train_seed=seed)
        _save(tmp_path, manifest, "B", 0.65, rng, train_seed=seed)
    args = ["compare", "A", "B", "--runs", str(tmp_path), "--bootstrap", "200"]
    assert main(args) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "toy 5-way" in line)
    raw, holm = re.search(r"\| ([^|/]+) / ([^|]+) \|", row.split("]", 1)[1]).groups()
    assert raw.strip() == holm.strip()  # one setting: Holm changes nothing


def test_an_entry_that_cannot_be_reported_is_left_out_with_a_note(tmp_path, capsys):
    rng = np.random.default_rng(3)
    manifest = _manifest()
    _save(tmp_path, manifest, "A", 0.8, rng)
    _save(tmp_path, manifest, "B", 0.6, rng)
    for seed in (0, 1):  # C's two training seeds on different episodes of another dataset
        other = _manifest(dataset="other", classes=10 + seed)
        _save(tmp_path, other, "C", 0.7, rng, train_seed=seed, dataset="other")
    with pytest.raises(UnpairedError):
        load_entries(tmp_path)
    left_out: list[str] = []
    assert {e.system for e in load_entries(tmp_path, left_out=left_out)} == {"A", "B"}
    assert len(left_out) == 1 and left_out[0].startswith("C in other")
    assert main(["compare", "A", "B", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "A better" in out.out and "note: left out C in other" in out.err
    assert main(["compare", "A", "B", "--runs", str(tmp_path), "--dataset", "toy"]) == 0
    out = capsys.readouterr()  # an entry the filters leave out is not this report's to name
    assert "A better" in out.out and "C in other" not in out.err
    assert main(["leaderboard", "--runs", str(tmp_path)]) == 0


def test_an_unreadable_record_file_is_named_where_the_reader_looks(tmp_path, capsys):
    """A corrupt record shrank compare's Holm family with a log warning only."""
    rng = np.random.default_rng(5)
    for dataset in ("toy", "other"):
        manifest = _manifest(dataset=dataset)
        _save(tmp_path, manifest, "A", 0.8, rng, dataset=dataset)
        _save(tmp_path, manifest, "B", 0.6, rng, dataset=dataset)
    broken = next(p for p in sorted((tmp_path / "records").glob("*.json")) if "other" in p.name)
    broken.write_text(broken.read_text()[:200])  # truncated JSON
    left_out: list[str] = []
    assert len(load_entries(tmp_path, left_out=left_out)) == 3
    assert len(left_out) == 1 and f"record {broken} cannot be read" in left_out[0]
    assert main(["compare", "A", "B", "--runs", str(tmp_path), "--bootstrap", "200"]) == 0
    err = capsys.readouterr().err
    assert f"note: left out record {broken} cannot be read" in err
    assert main(["leaderboard", "--runs", str(tmp_path)]) == 0
    assert f"record {broken} cannot be read" in capsys.readouterr().err
    from fsarbench.report.page.collect import collect_report

    notes = collect_report(tmp_path, figures=False, n_boot=100).board_notes
    assert any(f"record {broken} cannot be read" in note for note in notes)


def test_a_synthetic_stand_in_is_not_ranked_against_real_runs(tmp_path):
    rng = np.random.default_rng(4)
    real, synth = _manifest(400, "kinetics100"), _manifest(400, "synth")
    ours = _save(tmp_path, real, "sgtm-otam", 0.70, rng, dataset="kinetics100")
    _save(tmp_path, real, "trx", 0.60, rng, dataset="kinetics100")
    _save(tmp_path, synth, "otam", 0.95, rng, dataset="synth")
    table = build_table(load_table(1), load_entries(tmp_path), source="runs")
    column = next(
        j for j, c in enumerate(table.spec.columns) if (c.dataset, c.shot) == ("kinetics", 1)
    )
    marks = {r.cells[column].entry.system: r.cells[column].mark for r in table.rows}
    assert marks == {"otam": "", "sgtm-otam": "best", "trx": "second"}
    assert mark_significant(table, tmp_path) == 1  # tested against TRX, its own episodes
    (cell,) = [r.cells[column] for r in table.rows if r.cells[column].entry.system == ours.method]
    assert cell.significant


def test_leaderboard_ranks_a_setting_on_the_episodes_most_of_its_systems_share(tmp_path, capsys):
    """One record that lost a test video took its whole setting off the leaderboard ("no
    setting could be ranked"), the entries on the official episodes included; now it alone
    is left out, named."""
    rng = np.random.default_rng(5)
    manifest = _manifest()
    for name, acc in (("A", 0.8), ("B", 0.6), ("C", 0.7)):
        _save(tmp_path, manifest, name, acc, rng)
    _save(tmp_path, manifest, "D", 0.7, rng, skipped_videos=["test/c1_v0: unreadable"])
    # one setting of "other", its two systems drawn from different test pools: no majority,
    # so the setting cannot be ranked
    _save(tmp_path, _manifest(dataset="other", classes=10), "A", 0.7, rng, dataset="other")
    _save(tmp_path, _manifest(dataset="other", classes=11), "B", 0.7, rng, dataset="other")
    assert main(["leaderboard", "--runs", str(tmp_path), "--bootstrap", "100"]) == 0
    out = capsys.readouterr()
    setting = "toy 5-way 1-shot (300 episodes, 2 queries/class)"
    assert f"note: left out D in {setting}: evaluated on other test episodes" in out.err
    toy = out.out.split("## toy 5-way 1-shot")[1].split("##")[0]
    assert all(f"| {s} " in toy for s in "ABC") and "| D " not in toy
    assert "note: left out the setting: cannot compare" in out.err
    assert "## other 5-way" not in out.out
    md = (tmp_path / "leaderboard.md").read_text()  # the notes are written there too
    assert "- left out the setting: cannot compare" in md and "- left out D in toy" in md


def test_a_table_names_the_entries_that_lost_their_cell_to_another(tmp_path):
    rng = np.random.default_rng(6)
    _save(tmp_path, _manifest(400, "kinetics100", seed=1), "trx", 0.6, rng, dataset="kinetics100")
    _save(tmp_path, _manifest(400, "kinetics100"), "trx", 0.7, rng, dataset="kinetics100")
    table = build_table(load_table(1), load_entries(tmp_path), source="runs")
    (note,) = [n for n in table.notes if n.startswith("not shown:")]
    assert "trx (kinetics100 5-way 1-shot (400 episodes, 2 queries/class, episode seed 1))" in note
    assert note.endswith(
        "the cell shows trx (kinetics100 5-way 1-shot (400 episodes, 2 queries/class)): "
        "the lower episode seed wins."
    )


def test_runs_that_lost_other_test_videos_are_not_paired_or_pooled(tmp_path):
    """The manifest hash covers the class ids of the usable videos: two runs that each lost
    another video of one class drew identical indices over pools shifted from that video on
    (153 of 300 episodes named other videos), and were compared as paired and pooled as the
    training seeds of one system."""
    m = _manifest()
    rng = np.random.default_rng(0)
    save_simulated_record(tmp_path, m, "alpha", 0.7, rng, skipped_videos=["test/c1_v0: bad"])
    save_simulated_record(tmp_path, m, "beta", 0.6, rng, skipped_videos=["test/c1_v5: bad"])
    with pytest.raises(UnpairedError, match="left-out test videos"):
        compare_systems(tmp_path, load_entries(tmp_path), "alpha", "beta")
    seeds = tmp_path / "seeds"
    save_simulated_record(seeds, m, "alpha", 0.7, rng, train_seed=0, skipped_videos=["test/a"])
    save_simulated_record(seeds, m, "alpha", 0.7, rng, train_seed=1, skipped_videos=["test/b"])
    with pytest.raises(UnpairedError, match="left-out test videos"):
        load_entries(seeds)
    left_out: list[str] = []
    assert load_entries(seeds, left_out=left_out) == [] and "videos a vs b" in left_out[0]


def test_runs_on_another_test_list_are_not_paired(tmp_path):
    """Another test list with the same class layout gives the same manifest hash: a lab's
    bundle made on other videos was paired episode by episode with this folder's runs."""
    m = _manifest()
    rng = np.random.default_rng(1)
    ours = {"split_md5": {"test": "a" * 32}}
    theirs = {"split_md5": {"test": "b" * 32}}
    save_simulated_record(tmp_path, m, "alpha", 0.7, rng, features=ours)
    save_simulated_record(tmp_path, m, "beta", 0.6, rng, features=theirs)
    with pytest.raises(UnpairedError, match=f"test list md5 {'a' * 32} vs {'b' * 32}"):
        compare_systems(tmp_path, load_entries(tmp_path), "alpha", "beta")


def test_a_stale_seed_is_neither_pooled_with_current_ones_nor_printed_unmarked(tmp_path):
    """Seed 0 made by older harness code (79%) and seed 1 by the installed code (60%) were
    printed as one bold 69.82 ± 18.86 in the leaderboard and Table 1, with no mark."""
    from fsarbench.provenance import harness_digest, pipeline_digest
    from fsarbench.report.records import STALE_MARK

    m = _manifest()
    rng = np.random.default_rng(0)
    current = {"code": {"harness": harness_digest(), "pipeline": pipeline_digest()}}
    older = {"code": {"harness": "0" * 16, "pipeline": pipeline_digest()}}
    save_simulated_record(tmp_path, m, "alpha", 0.8, rng, train_seed=0, provenance=older)
    save_simulated_record(tmp_path, m, "alpha", 0.6, rng, train_seed=1, provenance=current)
    entries = {e.system: e for e in load_entries(tmp_path)}
    assert set(entries) == {"alpha", f"alpha {STALE_MARK}"}
    assert [r.train_seed for r in entries["alpha"].records] == [1]


def test_compare_finds_a_system_whose_records_are_all_stale_by_its_plain_name(tmp_path, capsys):
    """After a code change 'compare alpha beta' (the docs' example) said "no records for
    'alpha'" and asked for "alpha ‡stale" to be typed."""
    from fsarbench.provenance import pipeline_digest

    m = _manifest()
    rng = np.random.default_rng(5)
    older = {"code": {"harness": "0" * 16, "pipeline": pipeline_digest()}}
    save_simulated_record(tmp_path, m, "alpha", 0.8, rng, provenance=older)
    save_simulated_record(tmp_path, m, "beta", 0.6, rng)
    assert main(["compare", "alpha", "beta", "--runs", str(tmp_path), "--bootstrap", "200"]) == 0
    assert "alpha ‡stale better" in capsys.readouterr().out
    other = _manifest(dataset="other")  # a current alpha elsewhere: the stale one still counts
    save_simulated_record(tmp_path, other, "alpha", 0.8, rng, dataset="other")
    save_simulated_record(tmp_path, other, "beta", 0.6, rng, dataset="other")
    assert main(["compare", "alpha", "beta", "--runs", str(tmp_path), "--bootstrap", "200"]) == 0
    out = capsys.readouterr()
    assert "alpha ‡stale better" in out.out and "only beta has records" not in out.err
    # the row's number carries the mark whatever the verdict says, and a note explains it
    save_simulated_record(tmp_path, m, "beta", 0.8, rng, train_seed=1)  # no verdict naming it
    save_simulated_record(tmp_path, m, "alpha", 0.8, rng, train_seed=1, provenance=older)
    args = ["compare", "beta", "alpha", "--runs", str(tmp_path), "--bootstrap", "200"]
    assert main(args) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("| toy")]
    assert row.split("|")[3].strip().endswith("‡stale") and "‡stale" not in row.split("|")[2]
    assert "Note: ‡stale: made by other code than the installed one" in out


def test_the_leaderboard_says_what_the_stale_mark_means(tmp_path, capsys):
    """leaderboard.md and the report's leaderboard showed '‡stale' on systems with no word
    of what it means (only paper tables explained it)."""
    from fsarbench.provenance import pipeline_digest
    from fsarbench.report.page import collect_report

    m = _manifest()
    rng = np.random.default_rng(7)
    older = {"code": {"harness": "0" * 16, "pipeline": pipeline_digest()}}
    save_simulated_record(tmp_path, m, "alpha", 0.8, rng, provenance=older)
    save_simulated_record(tmp_path, m, "beta", 0.6, rng)
    assert main(["leaderboard", "--runs", str(tmp_path), "--bootstrap", "100"]) == 0
    md = (tmp_path / "leaderboard.md").read_text()
    assert "alpha ‡stale" in md and "- ‡stale: made by other code than the installed one" in md
    notes = collect_report(tmp_path, n_boot=50, figures=False).board_notes
    assert any(n.startswith("‡stale: made by other code") for n in notes)


def test_ours_in_a_column_without_any_baseline_run_is_counted_as_untested(tmp_path):
    """No star and no note: a reader took the missing * for "not significant"."""
    rng = np.random.default_rng(6)
    _save(tmp_path, _manifest(400, "kinetics100"), "sgtm-otam", 0.9, rng, dataset="kinetics100")
    table = build_table(load_table(1), load_entries(tmp_path), source="runs")
    assert mark_significant(table, tmp_path) == 0
    assert any(n.startswith("1 run cell(s) of ours not tested") for n in table.notes)


def test_table_with_a_mistyped_runs_folder_is_an_error(tmp_path, capsys):
    """It printed the published rows alone with rc 0, as if nothing had been run."""
    assert main(["table", "1", "--runs", str(tmp_path / "nope")]) == 2
    assert "results folder" in capsys.readouterr().err
    assert main(["table", "1", "--runs", str(tmp_path / "nope"), "--source", "published"]) == 0


def test_query_rows_that_do_not_give_the_record_are_refused(tmp_path, capsys):
    """Rows of another evaluation under a cell's id (a kill between writing the rows and the
    record) were paired as the record's: compare printed 65.70 beside a record of 64.66,
    and a truncated rows file crashed compare and leaderboard with a raw EOFError."""
    from fsarbench.report.records import QueryRowsError

    m = _manifest()
    rng = np.random.default_rng(2)
    a = save_simulated_record(tmp_path, m, "alpha", 0.7, rng)
    b = save_simulated_record(tmp_path, m, "beta", 0.6, rng)
    rows_a, rows_b = (tmp_path / "records" / f"{r.cell}.queries.csv.gz" for r in (a, b))
    good = rows_a.read_bytes()
    rows_a.write_bytes(rows_b.read_bytes())
    with pytest.raises(QueryRowsError, match=f"rows of {a.cell} .* belong to another"):
        compare_systems(tmp_path, load_entries(tmp_path), "alpha", "beta")
    rows_a.write_bytes(good[: len(good) // 2])
    with pytest.raises(QueryRowsError, match=f"rows of {a.cell} .* are unreadable"):
        compare_systems(tmp_path, load_entries(tmp_path), "alpha", "beta")
    assert main(["leaderboard", "--runs", str(tmp_path)]) == 0  # beta ranked without alpha
    out = capsys.readouterr()
    setting = "toy 5-way 1-shot (300 episodes, 2 queries/class)"
    assert f"note: left out alpha in {setting}: the per-query rows of {a.cell}" in out.err
    assert "| beta " in out.out and "| alpha " not in out.out.split("Notes:")[0]
    rows_a.write_bytes(good)
    compare_systems(tmp_path, load_entries(tmp_path), "alpha", "beta")
    record = tmp_path / "records" / f"{a.cell}.json"
    data = json.loads(record.read_text())
    # a hand-edited ± was printed as it stood; with its spread text edited too, the ± went
    # unchecked (a text the check did not know was taken for an older record's)
    for edit in ({"ci95": 0.5}, {"std": 3.0}, {"ci95": 0.5, "spread": "95% CI half-width"}):
        record.write_text(json.dumps({**data, **edit}))
        with pytest.raises(QueryRowsError, match=f"rows of {a.cell} .* record was edited"):
            compare_systems(tmp_path, load_entries(tmp_path), "alpha", "beta")
    # table printed the edited record as it stood (bold, as the best); now it is left out
    left_out: list[str] = []
    kept = load_entries(tmp_path, left_out=left_out, verify_rows=True)
    assert [e.system for e in kept] == ["beta"] and "alpha in toy" in left_out[0]
    assert main(["table", "1", "--runs", str(tmp_path), "--source", "runs"]) == 0
    assert "note: left out alpha in toy 5-way 1-shot" in capsys.readouterr().err


def test_a_hand_edited_record_is_left_out_of_summary_and_every_table_file_with_a_note(
    tmp_path, capsys, caplog
):
    """summary.csv and the per-dataset tables of 'run' and 'merge' printed a record edited
    by hand (90.00) while the paper tables of the same run left it out with a log line only;
    the table files said nothing, and a '-' stood where the caption means 'not published'."""
    m = _manifest()
    rng = np.random.default_rng(4)
    a = save_simulated_record(tmp_path, m, "alpha", 0.7, rng)
    save_simulated_record(tmp_path, m, "beta", 0.6, rng)
    record = tmp_path / "records" / f"{a.cell}.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "accuracy": 90.0}))
    assert main(["merge", "--out", str(tmp_path)]) == 0
    assert "1 record(s) (1 left out, named above) ->" in capsys.readouterr().out
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary["method"]) == ["beta"]
    assert f"left out of summary.csv and the tables: alpha ({a.cell})" in caplog.text
    fb.write_summary(tmp_path)  # as run does after every cell: named once, not per rebuild
    assert caplog.text.count(f"left out of summary.csv and the tables: alpha ({a.cell})") == 1
    table = (tmp_path / "tables" / "toy__frozen.md").read_text()
    assert "| alpha" not in table.split("\n\n")[0] and "| beta" in table
    assert f"Left out: alpha ({a.cell}): the per-query rows of {a.cell}" in table
    only = tmp_path / "only"  # a table whose every record is refused says so
    save_simulated_record(only, m, "alpha", 0.7, rng)
    (rec,) = (only / "records").glob("*.json")
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "accuracy": 90.0}))
    assert main(["merge", "--out", str(only)]) == 0
    text = (only / "tables" / "toy__frozen.md").read_text()
    assert text.startswith("toy, frozen track, seed protocol: no record can be shown.")
    out = tmp_path / "t1.md"
    assert (
        main(["table", "1", "--runs", str(tmp_path), "--stand-in", "toy", "--out", str(out)]) == 0
    )
    assert "left out of this table (a '-' may stand for it): alpha in toy" in out.read_text()


def test_a_damaged_newest_copy_of_a_cell_gives_way_to_an_older_copy_the_rows_give(tmp_path, capsys):
    """merge, summary.csv and the paper tables took the newest copy of a cell (shards,
    re-runs) before checking its rows: a hand-edited newest copy took the cell off every
    output although an older copy in another shard was sound."""
    m = _manifest()
    rng = np.random.default_rng(12)
    old = save_simulated_record(tmp_path / "s0", m, "alpha", 0.7, rng)
    new = save_simulated_record(tmp_path / "s1", m, "alpha", 0.7, rng)
    save_simulated_record(tmp_path / "s0", m, "beta", 0.6, rng)
    assert old.cell == new.cell and old.created < new.created
    path = tmp_path / "s1" / "records" / f"{new.cell}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accuracy": 90.0}))
    assert main(["merge", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    named = (
        f"the copy in s1 (created {new.created}) is not given by its per-query rows (the "
        f"per-query rows of {new.cell}"
    )
    assert named in out and f"the copy in s0 (created {old.created}) is used" in out
    assert "2 record(s) ->" in out
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("method")
    assert summary.loc["alpha", "accuracy"] == pytest.approx(old.accuracy)
    left_out: list[str] = []
    entries = {e.system: e for e in load_entries(tmp_path, left_out=left_out, verify_rows=True)}
    assert entries["alpha"].accuracy == pytest.approx(old.accuracy)
    assert len(left_out) == 1 and named in left_out[0]  # named under the tables that show it
    table1 = build_table(load_table(1), list(entries.values()), stand_in="toy", left_out=left_out)
    assert any(named in note for note in table1.notes)
    # run hands the per-dataset tables every record of the folder, copies included
    write_summary_tables(tmp_path, load_records(tmp_path))
    table = (tmp_path / "tables" / "toy__frozen.md").read_text()
    assert f"| alpha    | {fixed(old.accuracy)} ± {fixed(old.ci95)}" in table
    assert named in table
    # with no sound copy left, the cell is left out and named, as before
    path = tmp_path / "s0" / "records" / f"{old.cell}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accuracy": 91.0}))
    assert main(["merge", "--out", str(tmp_path)]) == 0
    assert "1 record(s) (1 left out, named above) ->" in capsys.readouterr().out
    assert list(pd.read_csv(tmp_path / "summary.csv")["method"]) == ["beta"]


def test_a_table_names_only_the_left_out_records_it_would_have_shown(tmp_path):
    """Every paper table listed every record of the folder that was left out, also those
    it has no row or column for (an OTAM record under the SGTM ablation of Table 3)."""
    m = _manifest()
    rng = np.random.default_rng(13)
    bad = save_simulated_record(tmp_path, m, "otam", 0.7, rng)
    save_simulated_record(tmp_path, m, "sgtm-otam", 0.8, rng)
    path = tmp_path / "records" / f"{bad.cell}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accuracy": 90.0}))
    (tmp_path / "records" / "broken.json").write_text("{")  # no entry: under every table
    texts = {}
    for number in ("1", "3"):
        out = tmp_path / f"t{number}.md"
        args = ["table", number, "--runs", str(tmp_path), "--stand-in", "toy", "--out", str(out)]
        assert main(args) == 0
        texts[number] = out.read_text()
    note = "left out of this table (a '-' may stand for it): otam in toy"
    assert note in texts["1"] and note not in texts["3"]
    assert all("broken.json" in text for text in texts.values())
    left_out: list[str] = []
    entries = load_entries(tmp_path, left_out=left_out, verify_rows=True)
    kwargs = dict(source="both", stand_in="toy", left_out=left_out)
    assert note in "\n".join(build_table(load_table(1), entries, **kwargs).notes)
    assert note not in "\n".join(build_table(load_table(3), entries, **kwargs).notes)
    assert note not in "\n".join(build_table(load_table(1), entries, stand_in="toy").notes)


@pytest.mark.parametrize("value", [float("nan"), None, "71.5"])
def test_a_record_whose_accuracy_is_not_a_number_is_left_out(tmp_path, capsys, value):
    """A hand-edited NaN accuracy passed the rows check (a comparison with NaN is False):
    the leaderboard ranked it first and Table 1 printed 'nan' and bolded the wrong run."""
    m = _manifest()
    rng = np.random.default_rng(14)
    bad = save_simulated_record(tmp_path, m, "otam", 0.6, rng)
    save_simulated_record(tmp_path, m, "trx", 0.7, rng)
    path = tmp_path / "records" / f"{bad.cell}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accuracy": value}))
    left_out: list[str] = []
    entries = load_entries(tmp_path, left_out=left_out, verify_rows=True)
    # NaN: its rows give another number; null or a string: the file cannot be read
    why = "otam in toy" if value != value else f"{bad.cell}.json cannot be read (its 'accuracy'"
    assert [e.system for e in entries] == ["trx"] and why in " ".join(left_out)
    assert main(["merge", "--out", str(tmp_path)]) == 0
    assert list(pd.read_csv(tmp_path / "summary.csv")["method"]) == ["trx"]
    assert main(["leaderboard", "--runs", str(tmp_path), "--bootstrap", "40"]) == 0
    out = capsys.readouterr()
    assert "| otam" not in out.out and why in out.err


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("per_class_accuracy", {"brush_hair": "x"}, "its per_class_accuracy['brush_hair'] is 'x'"),
        ("skipped_videos", ["a.avi", 3], "its skipped_videos[1] is 3"),
        ("stale_accepted", [None], "its stale_accepted[0] is None"),
    ],
)
def test_a_record_field_of_the_wrong_contents_is_unreadable(tmp_path, field, value, named):
    """Only a field's container was checked: a per-class accuracy edited to text loaded and
    stopped a report that used it with a TypeError."""
    rec = save_simulated_record(tmp_path, _manifest(), "otam", 0.6, np.random.default_rng(17))
    path = tmp_path / "records" / f"{rec.cell}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    with pytest.raises(UnreadableRecordError, match=re.escape(named)):
        load_record(path)


def test_a_seed_left_out_takes_its_entry_out_of_the_summary_tables_too(tmp_path):
    """With one training seed's rows lost, merge's per-dataset table pooled the two seeds
    left (n=2) while the paper tables and the leaderboard left the entry out: one folder,
    two answers for one system."""
    m = _manifest()
    rng = np.random.default_rng(15)
    seeds = [save_simulated_record(tmp_path, m, "otam", 0.6, rng, train_seed=s) for s in (0, 1, 2)]
    save_simulated_record(tmp_path, m, "trx", 0.7, rng)
    (tmp_path / "records" / f"{seeds[2].cell}.queries.csv.gz").unlink()
    assert main(["merge", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "tables" / "toy__frozen.md").read_text()
    assert "| otam" not in table and "| trx" in table
    assert "): the record of training seed 2 is left out (above), so the entry is too" in table
    summary = pd.read_csv(tmp_path / "summary.csv")  # one row per record: the two kept seeds
    assert sorted(summary.loc[summary["method"] == "otam", "train_seed"]) == [0, 1]
    left_out: list[str] = []
    entries = load_entries(tmp_path, left_out=left_out, verify_rows=True)
    assert [e.system for e in entries] == ["trx"]


def test_queries_counted_wrong_for_nan_logits_are_named_under_every_output(tmp_path, capsys):
    """A record made with --nonfinite count_wrong (its method returned NaN for 120 of 600
    queries) was ranked, tabulated and compared without a word; only summary.csv had it."""
    m = _manifest()
    rng = np.random.default_rng(16)
    bad = save_simulated_record(tmp_path, m, "otam", 0.6, rng)
    save_simulated_record(tmp_path, m, "trx", 0.7, rng)
    path = tmp_path / "records" / f"{bad.cell}.json"
    edit = {"nonfinite_policy": "count_wrong", "nonfinite_queries": 120}
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    note = "NaN/inf logits counted as wrong answers (--nonfinite count_wrong): 120 of 3000"
    runs = ["--runs", str(tmp_path)]
    assert main(["merge", "--out", str(tmp_path)]) == 0
    assert note in (tmp_path / "tables" / "toy__frozen.md").read_text()
    capsys.readouterr()
    for argv in (
        ["table", "1", *runs, "--stand-in", "toy"],
        ["leaderboard", *runs, "--bootstrap", "40"],
        ["compare", "otam", "trx", *runs, "--bootstrap", "40"],
    ):
        assert main(argv) == 0
        assert note in capsys.readouterr().out.replace("\n", " "), argv[0]


def test_reports_refuse_a_file_for_runs_and_say_when_a_folder_has_no_records(tmp_path, capsys):
    """'table 1 --runs summary.csv' or an empty folder printed the published rows alone,
    exit 0, with no word (a missing folder was already refused)."""
    path = tmp_path / "summary.csv"
    path.write_text("method\n")
    for command in ("table", "leaderboard", "compare", "figures", "report"):
        argv = {"table": ["table", "1"], "compare": ["compare", "a", "b"]}.get(command, [command])
        with pytest.raises(SystemExit):
            main([*argv, "--runs", str(path)])
        assert "is a file, not a results folder" in capsys.readouterr().err, command
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["table", "1", "--runs", str(empty)]) == 0
    assert f"note: no records under {empty} yet: published rows only" in capsys.readouterr().err


def test_a_pipe_in_a_system_name_does_not_shift_markdown_columns(tmp_path, capsys):
    """'protonet[metric=cos|l2]' split its row of every Markdown table into one more column:
    its accuracy was read under the next header."""
    m = _manifest()
    rng = np.random.default_rng(17)
    name = "protonet[metric=cos|l2]"
    save_simulated_record(tmp_path, m, name, 0.7, rng)
    save_simulated_record(tmp_path, m, "cos|net", 0.65, rng)  # a plain name: a Table 1 row
    save_simulated_record(tmp_path, m, "trx", 0.6, rng)

    def columns(line: str) -> int:
        return len(re.split(r"(?<!\\)\|", line))

    def check(text: str, what: str) -> None:
        rows = [line for line in text.splitlines() if line.startswith("|")]
        assert rows and any("cos\\|" in line for line in rows), what
        assert len({columns(line) for line in rows}) == 1, what

    assert main(["merge", "--out", str(tmp_path)]) == 0
    check((tmp_path / "tables" / "toy__frozen.md").read_text(), "summary table")
    runs = ["--runs", str(tmp_path)]
    capsys.readouterr()
    for argv in (
        ["table", "1", *runs, "--stand-in", "toy"],
        ["leaderboard", *runs, "--bootstrap", "40", "--include-variants"],
        ["compare", name, "trx", *runs, "--bootstrap", "40"],
    ):
        assert main(argv) == 0
        check(capsys.readouterr().out, argv[0])


def test_an_outside_record_is_never_taken_for_a_copy_of_an_own_one(tmp_path):
    """A bundle's record has the cell id of an own run of its method: a hand-edited own
    record was dropped as a damaged 'copy' and the tables lost its left-out note."""
    m = _manifest()
    rng = np.random.default_rng(18)
    own = save_simulated_record(tmp_path, m, "alpha", 0.7, rng)
    outside = save_simulated_record(
        tmp_path / "external" / "b", m, "alpha", 0.8, rng, tags={OUTSIDE_TAG: "b"}
    )
    assert outside.cell == own.cell
    path = tmp_path / "records" / f"{own.cell}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accuracy": 99.0}))
    left_out: list[str] = []
    load_entries(tmp_path, left_out=left_out, verify_rows=True)
    assert len(left_out) == 1 and left_out[0].startswith("alpha in toy")
    assert "copy" not in left_out[0]


def test_copies_of_one_record_are_not_read_to_choose_between_them(tmp_path, monkeypatch):
    """Every load of a folder read the rows of every cell copied into shard folders (the
    same record, one 'created' stamp) to choose a copy: 0.6 s -> 4.8 s at 200 cells."""
    import shutil

    from fsarbench.report import records as records_mod

    m = _manifest()
    rng = np.random.default_rng(19)
    for name in ("alpha", "beta"):
        save_simulated_record(tmp_path / "s0", m, name, 0.7, rng)
    shutil.copytree(tmp_path / "s0", tmp_path / "s1")
    read = []
    original = records_mod._rows_verdict
    monkeypatch.setattr(
        records_mod, "_rows_verdict", lambda d, r: read.append(r.cell) or original(d, r)
    )
    assert {e.system for e in load_entries(tmp_path)} == {"alpha", "beta"}
    assert read == []


def test_compare_names_settings_only_one_system_has(tmp_path, capsys):
    """A shard run with other --episodes dropped its setting from compare's Holm family
    with nothing said."""
    rng = np.random.default_rng(8)
    _save(tmp_path, _manifest(300), "A", 0.8, rng)
    _save(tmp_path, _manifest(300), "B", 0.6, rng)
    _save(tmp_path, _manifest(300, dataset="other"), "A", 0.8, rng, dataset="other")
    _save(tmp_path, _manifest(100, dataset="other"), "B", 0.6, rng, dataset="other")
    assert main(["compare", "A", "B", "--runs", str(tmp_path), "--bootstrap", "200"]) == 0
    err = capsys.readouterr().err
    assert "note: left out other 5-way 1-shot (300 episodes, 2 queries/class): only A" in err
    assert "note: left out other 5-way 1-shot (100 episodes, 2 queries/class): only B" in err


def test_merged_summaries_do_not_depend_on_the_shard_folders(tmp_path):
    rng = np.random.default_rng(9)
    m = _manifest()
    for folder, seed in (("s1", 0), ("s0", 1)):  # train seed 1 in the first folder
        _save(tmp_path / "x" / folder, m, "A", 0.8, rng, train_seed=seed)
        _save(tmp_path / "y" / folder, m, "A", 0.8, rng, train_seed=1 - seed)
    x = pd.read_csv(fb.write_summary(tmp_path / "x"))
    y = pd.read_csv(fb.write_summary(tmp_path / "y"))
    assert list(x["train_seed"]) == list(y["train_seed"]) == [0, 1]


def test_run_refuses_abbreviated_flags():
    """'--launch local' was taken as --launcher, and every job failed: the launcher strips
    the exact flag names from the jobs' command lines."""
    with pytest.raises(SystemExit):
        main(["run", "--launch", "local", "--method", "protonet"])


def test_compare_says_a_setting_holds_several_configurations_of_a_name(tmp_path, capsys):
    """Where 'alpha' has two configurations in a setting, compare said "only beta has
    records there", which is false; a configuration is named 'alpha @<label>' in every
    setting, and the plain name says which there are."""
    m = _manifest()
    rng = np.random.default_rng(8)
    save_simulated_record(tmp_path, m, "alpha", 0.7, rng, hparams={"t": 1})
    save_simulated_record(tmp_path, m, "alpha", 0.7, rng, hparams={"t": 5})
    save_simulated_record(tmp_path, m, "beta", 0.6, rng)
    other = _manifest(dataset="other")
    save_simulated_record(tmp_path, other, "alpha", 0.7, rng, dataset="other")
    save_simulated_record(tmp_path, other, "beta", 0.6, rng, dataset="other")
    runs = ["--runs", str(tmp_path), "--bootstrap", "100"]
    # three configurations (t=1, t=5 on toy; the default on other): each has its own name
    assert main(["compare", "alpha", "beta", *runs]) == 2
    err = capsys.readouterr().err
    assert "alpha has 3 configurations in these records (alpha @" in err
    plain = next(e.system for e in load_entries(tmp_path) if e.setting.dataset == "other")
    assert main(["compare", plain, "beta", *runs]) == 0
    err = capsys.readouterr().err
    assert (
        "toy 5-way 1-shot (300 episodes, 2 queries/class): alpha has 2 other configuration(s)"
        in err
    )
    assert "only beta has records there" not in err


def test_paper_tables_say_when_run_cells_have_fewer_episodes_or_lost_test_videos(tmp_path):
    """A run over 1,000 episodes and without 4 of HMDB51's listed test videos was printed in
    Table 1 beside the published 10,000-episode numbers without a word on either."""
    m = _manifest()
    rng = np.random.default_rng(18)
    lost = ["test/fencing_1: missing", "test/pour_2: too short: 2 frames"]
    save_simulated_record(tmp_path, m, "otam", 0.6, rng, skipped_videos=lost)
    save_simulated_record(tmp_path, m, "trx", 0.7, rng, skipped_videos=lost)
    entries = load_entries(tmp_path)
    notes = "\n".join(build_table(load_table(1), entries, stand_in="toy").notes)
    assert (
        "run cells on toy: cells over 300 test episodes (the published protocol: 10,000)" in notes
    )
    assert "2 listed test video(s) left out as missing, unreadable or too short" in notes
    assert "(fencing_1, pour_2;" in notes
    (table,) = summary_tables(load_records(tmp_path)).values()  # the per-dataset table too
    assert "run cells on toy: 2 listed test video(s) left out" in table


def test_leaderboard_and_compare_say_when_runs_left_test_videos_out(tmp_path, capsys):
    """The tables and the report named the left-out test videos; the leaderboard and compare
    ranked and gave verdicts over part of the test split without a word."""
    m = _manifest()
    rng = np.random.default_rng(18)
    lost = ["test/fencing_1: missing", "test/pour_2: too short: 2 frames"]
    save_simulated_record(tmp_path, m, "otam", 0.6, rng, skipped_videos=lost)
    save_simulated_record(tmp_path, m, "trx", 0.7, rng, skipped_videos=lost)
    said = "run cells on toy: 2 listed test video(s) left out as missing, unreadable or too short"
    assert main(["leaderboard", "--runs", str(tmp_path), "--bootstrap", "200"]) == 0
    out = capsys.readouterr()
    assert said in out.err and said in (tmp_path / "leaderboard.md").read_text()
    assert main(["compare", "otam", "trx", "--runs", str(tmp_path), "--bootstrap", "200"]) == 0
    assert f"Note: {said}" in capsys.readouterr().out
    assert main(["compare", "otam", "otam", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "compare needs two systems; both are 'otam'" in err and "traceback" not in err


def test_records_of_a_plugin_that_is_not_installed_say_so(tmp_path):
    """A colleague without the plugin installed saw its records as '‡stale: made by other
    code ... re-run these cells', and bundle said 're-run its cell': a re-run fails on an
    unknown method. The package is named as not installed, with what to do."""
    from fsarbench.bundles.format import BundleError, bundle_members
    from fsarbench.report.tables import stale_note
    from fsarbench.results import stale_reasons

    manifest = fb.make_manifest(np.repeat(np.arange(6), 4), way=5, shot=1, episodes=20)
    code = {"packages": {"fsar_absent_plugin_xyz": "0123456789abcdef"}}
    record = save_simulated_record(
        tmp_path,
        manifest,
        "absent",
        0.7,
        np.random.default_rng(0),
        provenance={"code": code},
        dataset="synth",  # a registered dataset: a bundle leaves others out
    )
    assert stale_reasons(record) == ["code:fsar_absent_plugin_xyz (not installed)"]
    note = stale_note(load_entries(tmp_path))
    assert "fsar_absent_plugin_xyz cannot be imported here: install the method package" in note
    with pytest.raises(BundleError, match="fsar_absent_plugin_xyz cannot be imported here"):
        bundle_members(tmp_path, "absent")


def test_ours_whose_comparison_has_no_p_value_is_counted_as_untested(tmp_path):
    """A NaN p (one episode) was left out of Holm's family but counted in "Holm over N
    cells", and its cell without * read as tested and not significant."""
    rng = np.random.default_rng(8)
    one = _manifest(1, "kinetics100")
    _save(tmp_path, one, "sgtm-otam", 0.9, rng, dataset="kinetics100")
    _save(tmp_path, one, "trx", 0.5, rng, dataset="kinetics100")
    table = build_table(load_table(1), load_entries(tmp_path), source="runs")
    assert mark_significant(table, tmp_path) == 0
    assert not any("Holm over" in n for n in table.notes)
    assert any(
        n.startswith("1 run cell(s) of ours not tested: the paired ttest gives no p-value")
        for n in table.notes
    )


def test_a_paper_table_mixing_intervals_names_them(tmp_path):
    """'eval --interval t' beside run's 1.96·std/√n: compare and the leaderboard named the
    mix, the paper tables and the run's per-dataset tables printed both under one label."""
    from fsarbench.results import rewrite_record
    from fsarbench.stats.intervals import INTERVALS

    rng, m = np.random.default_rng(9), _manifest(300, "kinetics100")
    _save(tmp_path, m, "sgtm-otam", 0.8, rng, dataset="kinetics100")
    trx = _save(tmp_path, m, "trx", 0.6, rng, dataset="kinetics100")
    trx.spread = INTERVALS["t"]  # as 'eval --interval t' records it
    rewrite_record(tmp_path, trx)
    table = build_table(load_table(1), load_entries(tmp_path), source="runs")
    (note,) = [n for n in table.notes if n.startswith("± is not one interval throughout")]
    assert "trx: 95% CI half-width, t(0.975, n-1)" in note and "sgtm-otam: 95% CI" in note
    text = "\n".join(summary_tables(load_records(tmp_path)).values())
    assert "± is not one interval throughout (sgtm-otam: " in text


def test_a_runs_only_table_does_not_say_its_cells_sit_beside_published_ones(tmp_path):
    rng = np.random.default_rng(10)
    _save(tmp_path, _manifest(100, "kinetics100"), "otam", 0.7, rng, dataset="kinetics100")
    runs = " ".join(build_table(load_table(1), load_entries(tmp_path), source="runs").notes)
    both = " ".join(build_table(load_table(1), load_entries(tmp_path)).notes)
    assert "sit beside published" not in runs
    assert "run cells of the frozen track: the paper's numbers are finetune-track ones" in runs
    assert "frozen track sit beside published finetune" in both


def test_a_run_names_its_printed_records_that_another_run_replaced_meanwhile(tmp_path, capsys):
    """Two runs with other recipes into one folder: the one whose cells the other superseded
    printed its own numbers, then tables holding the other's, without a word."""
    from fsarbench.cli import run_cmd
    from fsarbench.results import supersede

    rng, m = np.random.default_rng(11), _manifest(300)
    mine = _save(tmp_path, m, "protonet", 0.6, rng, hparams={"steps": 10})
    kept = _save(tmp_path, m, "otam", 0.7, rng)
    run_cmd._printed_record(mine)
    run_cmd._printed_record(kept)
    theirs = _save(tmp_path, m, "protonet", 0.8, rng, hparams={"steps": 20})
    supersede(tmp_path, mine)
    capsys.readouterr()
    run_cmd._warn_replaced_meanwhile(load_records(tmp_path))
    out = capsys.readouterr().out
    assert f"warning: {mine.cell} ({fixed(mine.accuracy)}" in out
    assert f"the tables below show protonet {fixed(theirs.accuracy)}" in out
    assert "otam" not in out and not run_cmd._PRINTED
