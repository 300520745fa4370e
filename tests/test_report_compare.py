"""compare and leaderboard on records written by fsarbench.evaluate + save_result."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fsarbench.cli.main import main
from fsarbench.episodes import make_manifest
from fsarbench.evaluate import evaluate
from fsarbench.registry import create_method
from fsarbench.report.compare import compare_systems, verdict
from fsarbench.report.demo import DemoSystem, demo_features, write_demo_records
from fsarbench.report.leaderboard import _assign_ranks, build_leaderboard
from fsarbench.report.records import UnpairedError, episode_accuracy, load_entries
from fsarbench.results import load_records, make_record, save_result

SYSTEMS = [
    DemoSystem("protonet"),
    DemoSystem("protonet-twin", noise=0.05),  # nearly the same predictions
    DemoSystem("weak", noise=3.0, train_seeds=(0, 1)),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    write_demo_records(out, SYSTEMS, settings=[(5, 1), (5, 5), (6, 1)], episodes=150)
    return out


def test_episode_accuracy_matches_record(runs) -> None:
    entries = load_entries(runs)
    for e in entries:
        assert 100 * episode_accuracy(runs, e).mean() == pytest.approx(e.accuracy, abs=1e-4)
    weak = [e for e in entries if e.system == "weak"][0]
    assert weak.seeds is not None and weak.seeds.n == 2


def test_compare_verdicts_and_holm(runs) -> None:
    comps = compare_systems(runs, load_entries(runs), "protonet", "weak")
    assert len(comps) == 3
    raw = [c.stats.p_value("p_ttest") for c in comps]  # with seeds: max(episode, seed level)
    order = np.argsort(raw)
    assert comps[order[0]].adjusted["ttest"] == pytest.approx(min(1.0, 3 * raw[order[0]]))
    assert all(c.adjusted["ttest"] >= c.stats.p_ttest for c in comps)
    assert all(c.verdict == "protonet better" for c in comps)
    reverse = compare_systems(runs, load_entries(runs), "weak", "protonet")
    assert all(c.verdict == "protonet better" for c in reverse)
    assert reverse[0].stats.diff == pytest.approx(-comps[0].stats.diff)


def test_compare_uses_scipy_on_per_episode_rows(runs) -> None:
    entries = load_entries(runs)
    comp = compare_systems(runs, entries, "protonet", "protonet-twin")[0]
    a = [e for e in entries if e.system == "protonet" and e.setting == comp.setting][0]
    b = [e for e in entries if e.system == "protonet-twin" and e.setting == comp.setting][0]
    ea, eb = episode_accuracy(runs, a), episode_accuracy(runs, b)
    if np.any(ea != eb):
        assert comp.stats.p_ttest == pytest.approx(stats.ttest_rel(ea, eb).pvalue)
    assert comp.verdict == "no significant difference"


def test_verdict_rule() -> None:
    assert verdict(1.0, 0.01, 0.05, "A", "B") == "A better"
    assert verdict(-1.0, 0.01, 0.05, "A", "B") == "B better"
    assert verdict(1.0, 0.2, 0.05) == "no significant difference"
    assert verdict(1.0, float("nan"), 0.05) == "not tested (no p-value for this test here)"


def test_compare_refuses_unpaired(tmp_path) -> None:
    feats, labels = demo_features()
    method = create_method("protonet", feature_dim=feats.shape[-1], seq_len=feats.shape[1])
    for name, manifest_seed in (("a", 0), ("b", 1)):
        # Same setting in the record (dataset, way, shot, seed 0) but other episodes.
        manifest = make_manifest(
            labels, way=5, shot=1, episodes=40, seed=manifest_seed, dataset="synth"
        )
        result = evaluate(method, feats, manifest, progress=False)
        record = make_record(
            result, method=name, dataset="synth", split_variant="synth", manifest=manifest
        )
        record.seed = 0
        save_result(tmp_path, record, result)
    entries = load_entries(tmp_path)
    with pytest.raises(UnpairedError, match="different episodes"):
        compare_systems(tmp_path, entries, "a", "b")
    assert main(["compare", "a", "b", "--runs", str(tmp_path)]) == 2


def test_compare_unknown_and_disjoint(runs, capsys) -> None:
    with pytest.raises(ValueError, match="no records for 'nope'; systems with records: "):
        compare_systems(runs, load_entries(runs), "nope", "weak")
    # a folder without records said "systems with records: " with nothing after it
    with pytest.raises(ValueError, match="this results folder holds none .* --runs"):
        compare_systems(runs, [], "nope", "weak")
    assert main(["compare", "protonet", "weak", "--runs", str(runs), "--shot", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("protonet better") == 2  # the two 1-shot settings
    assert "Holm" in out and "Training seeds" in out


def test_assign_ranks_rule() -> None:
    # leader, not sig. vs leader, sig. vs leader but not vs the one above (which is rank 1)
    assert _assign_ranks([False, False, True], [False, False, False]) == [1, 1, 3]
    # chain below the leader group ties with the one above
    assert _assign_ranks([False, True, True, True], [False, False, False, True]) == [1, 2, 2, 4]
    assert _assign_ranks([False, True, True], [False, False, True]) == [1, 2, 3]
    # below a system that differs from the leader, ranks never return to 1 (was 1, 2, 1)
    assert _assign_ranks([False, True, False], [False, False, False]) == [1, 2, 2]
    assert _assign_ranks([False, True, False], [False, False, True]) == [1, 2, 3]


def test_leaderboard_ranks_and_files(runs, capsys) -> None:
    entries = load_entries(runs)
    board = build_leaderboard(runs, entries)
    for standings in board.values():
        names = [s.entry.system for s in standings]
        ranks = {s.entry.system: s.rank for s in standings}
        assert ranks[names[0]] == 1
        assert ranks["protonet"] == ranks["protonet-twin"] == 1
        assert ranks["weak"] == 3
    assert main(["leaderboard", "--runs", str(runs), "--shot", "1", "--way", "5"]) == 0
    out = capsys.readouterr().out
    assert "## synth 5-way 1-shot" in out and "6-way" not in out
    frame = pd.read_csv(runs / "leaderboard.csv")
    assert set(frame["method"]) == {"protonet", "protonet-twin", "weak"}
    written = (runs / "leaderboard.md").read_text()
    assert written.startswith("# Leaderboard")
    # the folder's board now holds one setting: it says which filters made it
    assert "- Filtered: --way 5 --shot 1 (a 'leaderboard' without filters" in written


def test_leaderboard_csv_gives_p_as_printed_beside_the_number(runs) -> None:
    """leaderboard.csv wrote p = 0.0 where a p-value underflowed; md and HTML print
    "<1e-300". The CSV keeps the number and adds the printed text."""
    import dataclasses

    from fsarbench.report.leaderboard import leaderboard_frame

    board = build_leaderboard(runs, load_entries(runs))
    underflowed = {
        s: [dataclasses.replace(st, p_leader_adjusted=0.0) if st.vs_leader else st for st in sts]
        for s, sts in board.items()
    }
    frame = leaderboard_frame(underflowed)
    leaders = frame["diff_vs_leader"].isna()
    assert set(frame.loc[~leaders, "p_vs_leader_holm_text"]) == {"<1e-300"}
    assert set(frame.loc[leaders, "p_vs_leader_holm_text"]) == {""}
    assert (frame.loc[~leaders, "p_vs_leader_holm"] == 0.0).all()


def test_records_written_by_core_are_what_we_read(runs) -> None:
    assert len(load_records(runs)) == 3 * (1 + 1 + 2)


def test_filters_matching_nothing_name_what_the_runs_hold() -> None:
    import argparse

    from fsarbench.report.cli_args import filter_entries
    from fsarbench.report.records import Entry, Setting

    entry = Entry.__new__(Entry)
    object.__setattr__(entry, "setting", Setting("synth", "frozen", 5, 1, 0))
    args = argparse.Namespace(
        dataset="kinetics100", way=None, shot=None, track=None, protocol=None, runs="RUNS"
    )
    with pytest.raises(ValueError, match="no records match --dataset kinetics100 under RUNS; "):
        filter_entries([entry], args)
    args.dataset = "synth"
    assert filter_entries([entry], args) == [entry]
    trx = Entry.__new__(Entry)
    object.__setattr__(trx, "setting", Setting("synth", "finetune", 5, 1, 0, protocol="trx"))
    args.protocol = "trx"
    assert filter_entries([entry, trx], args) == [trx]
    args.track = "frozen"
    with pytest.raises(ValueError, match=r"--track frozen, --protocol trx .*protocol: seed, trx"):
        filter_entries([entry, trx], args)


@pytest.mark.parametrize(
    ("method", "tags", "variant"),
    [
        ("sgtm-otam", {}, False),
        ("sgtm-otam-enc", {}, True),  # registered with variant_of (Table 3 rung)
        ("sgtm-otam[lambda_recon=0.1]", {}, True),  # a hyper-parameter override
        ("otam", {"variant_label": "x"}, True),
        ("my-unregistered-head", {}, False),
    ],
)
def test_leaderboard_variants_are_overrides_tags_and_registered_variants(method, tags, variant):
    from types import SimpleNamespace

    from fsarbench.report.records import Entry

    entry = Entry(method, None, [SimpleNamespace(method=method, tags=tags)])
    assert entry.is_variant is variant


def test_rows_edited_after_a_first_read_are_checked_again(tmp_path) -> None:
    """The per-query cache was keyed on the record alone: a process that had read a cell's
    rows kept using them after the rows file was edited."""
    import gzip
    import os

    from fsarbench.report.records import QueryRowsError

    write_demo_records(tmp_path, SYSTEMS[:1], settings=[(5, 1)], episodes=40)
    (entry,) = load_entries(tmp_path)
    first = episode_accuracy(tmp_path, entry)
    (rows,) = (tmp_path / "records").glob("*.queries.csv.gz")
    frame = pd.read_csv(rows)
    frame.loc[0, "correct"] = not frame.loc[0, "correct"]  # one query flipped
    stamp = rows.stat().st_mtime_ns
    rows.write_bytes(gzip.compress(frame.to_csv(index=False).encode()))
    os.utime(rows, ns=(stamp + 1_000_000, stamp + 1_000_000))
    with pytest.raises(QueryRowsError, match="give"):
        episode_accuracy(tmp_path, entry)
    assert first.shape == (40,)


def test_features_files_without_ids_or_test_list_are_said_to_pair_by_position():
    """Two features files with no video ids (one a shuffled copy) were compared as paired
    (p 4e-52) with nothing saying the pairing rests on the row order alone."""
    from collections import namedtuple
    from types import SimpleNamespace

    from fsarbench.report.compare import paired_by_position as _paired_by_position
    from fsarbench.report.leaderboard import ranking_caveats
    from fsarbench.report.records import EpisodesKey

    def entry(features: dict, md5: str = ""):
        key = EpisodesKey("m", md5, ())
        return SimpleNamespace(records=[SimpleNamespace(features=features)], episodes_key=key)

    a, b = entry({"file_md5": "1"}), entry({"file_md5": "2"})
    assert _paired_by_position(a, b)
    assert not _paired_by_position(a, entry({"file_md5": "1"}))  # one file: one order
    assert not _paired_by_position(entry({"file_md5": "1"}, "md5"), entry({"file_md5": "2"}, "md5"))
    assert not _paired_by_position(entry({"cache_key": "k"}), b)  # a cache names its videos
    # the leaderboard ranked such pairs silently, and single-seed ranks without a caveat
    setting = namedtuple("Setting", "label")("toy 5-way 1-shot")
    for e in (a, b):
        e.outside = False
    (seeds, blind) = ranking_caveats(
        {setting: [SimpleNamespace(entry=a), SimpleNamespace(entry=b)]}
    )
    assert seeds.startswith("Ranks of systems with one training seed rest on episode variance")
    assert blind.startswith("Paired by position only in toy 5-way 1-shot:")
    c = entry({"cache_key": "k"})
    c.outside, c.records = False, c.records * 2  # two seeds, on a cache
    assert ranking_caveats({setting: [SimpleNamespace(entry=c)]}) == []


def test_a_column_mixing_intervals_is_named():
    """'eval --interval t' records sat beside 1.96·std/√n ones in one '± 95% CI' column."""
    from types import SimpleNamespace

    from fsarbench.report.tables import interval_note
    from fsarbench.stats.intervals import INTERVALS

    def entry(name: str, kind: str):
        return SimpleNamespace(system=name, records=[SimpleNamespace(spread=INTERVALS[kind])])

    assert interval_note([entry("a", "normal"), entry("b", "normal")]) == ""
    note = interval_note([entry("a", "normal"), entry("b", "t")])
    assert note.startswith("± is not one interval throughout (a: 95% CI half-width, 1.96")
    assert "b: 95% CI half-width, t(0.975, n-1)" in note


def _mark_stale(run_dir, pattern: str, **edits) -> None:
    """Make the records matching ``pattern`` another code's (``‡stale``), with ``edits``."""
    import json

    for path in (run_dir / "records").glob(pattern):
        data = json.loads(path.read_text())
        data["provenance"] = {"code": {"harness": "deadbeef"}}
        data.update(edits)
        path.write_text(json.dumps(data))


def test_a_name_against_its_own_stale_records_never_pairs_an_entry_with_itself(
    tmp_path, capsys
) -> None:
    """Where otam had only a stale record, 'compare otam "otam ‡stale"' paired that record
    with itself ("no significant difference") and counted it in Holm's family."""
    write_demo_records(tmp_path, [DemoSystem("otam")], settings=[(5, 1), (5, 5)], episodes=60)
    _mark_stale(tmp_path, "otam__*5w5s*.json")
    assert main(["compare", "otam", "otam ‡stale", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "5-way 5-shot" in err and "otam ‡stale is both sides there" in err
    assert "nothing to compare" in err
    notes: list[str] = []
    entries = load_entries(tmp_path)
    with pytest.raises(ValueError, match="nothing to compare"):
        compare_systems(tmp_path, entries, "otam", "otam ‡stale", one_sided=notes, stale_too=True)


def test_a_bad_stale_stand_in_is_left_out_not_the_whole_comparison(tmp_path, capsys) -> None:
    """compare verified the two typed names' rows only: an edited stale record standing in
    for one of them stopped every setting's verdict."""
    systems = [DemoSystem("a"), DemoSystem("b", noise=1.0)]
    write_demo_records(tmp_path, systems, settings=[(5, 1), (5, 5)], episodes=60)
    _mark_stale(tmp_path, "b__*5w1s*.json", accuracy=99.0)
    assert main(["compare", "a", "b", "--runs", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "5-way 5-shot" in out and "5-way 1-shot" not in out
    assert "b's record there was left out (the note above says why)" in err


def test_one_unpaired_setting_is_left_out_with_a_note(tmp_path, capsys) -> None:
    """Records of one setting evaluated on other episodes stopped every other verdict."""
    feats, labels = demo_features()
    method = create_method("protonet", feature_dim=feats.shape[-1], seq_len=feats.shape[1])
    for name, seeds in (("a", {1: 0, 5: 0}), ("b", {1: 0, 5: 1})):
        for shot, manifest_seed in seeds.items():
            manifest = make_manifest(
                labels, way=5, shot=shot, episodes=40, seed=manifest_seed, dataset="synth"
            )
            result = evaluate(method, feats, manifest, progress=False)
            record = make_record(
                result, method=name, dataset="synth", split_variant="synth", manifest=manifest
            )
            record.seed = 0
            save_result(tmp_path, record, result)
    assert main(["compare", "a", "b", "--runs", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "5-way 1-shot" in out and "5-way 5-shot" not in out.split("Verdicts")[0]
    assert "5-way 5-shot" in err and "different episodes" in err
    assert "the 1 setting(s) compared" in out
