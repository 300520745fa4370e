"""Shards run with other test flags (--episodes, --seed) or on other test videos: merge
printed one table of both sets of numbers, and the paper tables, the leaderboard and the
report placed them side by side, with nothing saying they were other episodes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from report_fixtures import save_simulated_record

import fsarbench as fb
from fsarbench.cli.main import main
from fsarbench.report.episode_protocol import (
    EpisodeProtocol,
    MixedEpisodesError,
    mixes_protocols,
    protocol_mismatches,
)
from fsarbench.report.published import load_table
from fsarbench.report.records import load_entries
from fsarbench.report.render import render
from fsarbench.report.tables import build_table
from fsarbench.results import load_records

NOTE = "Mixed test episodes, not comparable cell by cell"


def _manifest(episodes: int, seed: int = 0, videos: int = 6):
    classes = np.repeat(np.arange(10), videos)
    return fb.make_manifest(
        classes, way=5, shot=1, queries=1, episodes=episodes, seed=seed, dataset="synth"
    )


def _shards(root: Path, *, episodes: int = 40, seed: int = 0, videos: int = 6) -> Path:
    """Shard 0: otam and trx at 40 episodes, episode seed 0; shard 1: protonet with the
    given flags (the defaults: the same protocol)."""
    rng = np.random.default_rng(0)
    for method in ("otam", "trx"):
        save_simulated_record(root / "shard0", _manifest(40), method, 0.7, rng, dataset="synth")
    other = _manifest(episodes, seed, videos)
    save_simulated_record(root / "shard1", other, "protonet", 0.7, rng, dataset="synth")
    return root


@pytest.mark.parametrize(
    ("flags", "differs"),
    [
        ({"episodes": 20}, "20 episodes, episode seed 0"),
        ({"seed": 3}, "40 episodes, episode seed 3"),
    ],
)
def test_merge_refuses_shards_run_with_other_test_flags(tmp_path, capsys, flags, differs):
    _shards(tmp_path, **flags)
    assert main(["merge", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "mixed test episodes" in err and "shard1" in err and differs in err
    assert "40 episodes, episode seed 0, 1 query/class: 2 record(s) in shard0" in err
    assert "--allow-mixed-episodes" in err and "Re-run the odd shard(s)" in err
    assert not (tmp_path / "summary.csv").exists() and not (tmp_path / "tables").exists()
    with pytest.raises(MixedEpisodesError, match="protonet__synth"):
        main(["-v", "merge", "--out", str(tmp_path)])


def test_merge_refuses_one_protocol_drawn_from_other_test_videos(tmp_path, capsys):
    """Same --episodes and --seed, but shard 1's machine saw other test videos: its
    episodes are other videos under the same label."""
    _shards(tmp_path, videos=7)
    assert main(["merge", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "drew its episodes from other videos" in err and "manifest hash" in err


def test_merge_accepts_one_protocol_and_every_cell_at_several_seeds(tmp_path, capsys):
    _shards(tmp_path)
    assert main(["merge", "--out", str(tmp_path)]) == 0
    (table,) = (tmp_path / "tables").glob("*.md")
    assert NOTE not in table.read_text()
    # deliberately two episode seeds for every cell: one labelled column each, no mix
    rng = np.random.default_rng(1)
    for method in ("otam", "trx", "protonet"):
        manifest = _manifest(40, seed=1)
        save_simulated_record(tmp_path / "seed1", manifest, method, 0.7, rng, dataset="synth")
    assert not mixes_protocols(load_records(tmp_path))
    assert main(["merge", "--out", str(tmp_path)]) == 0
    text = table.read_text()
    assert "episode seed 1" in text and NOTE not in text
    assert "mixed" not in capsys.readouterr().out


def test_allowed_mix_is_named_in_every_table(tmp_path, capsys):
    _shards(tmp_path, episodes=20)
    assert main(["merge", "--out", str(tmp_path), "--allow-mixed-episodes"]) == 0
    assert "warning: merging records over different test episodes" in capsys.readouterr().out
    (summary,) = (tmp_path / "tables").glob("*.md")
    assert (
        f"{NOTE} (run --episodes/--seed): cells use 40 episodes, episode seed 0, 1 query/class "
        "except: episodes=20 for protonet." in summary.read_text()
    )
    table = build_table(load_table(1), load_entries(tmp_path), source="runs")
    cells = {r.labels[0]: r.cells[0] for r in table.rows}
    assert cells["protonet"].text.endswith("± 9.23 [20 episodes]")
    assert not cells["OTAM [4]"].text.endswith("]")
    assert cells["protonet"].mark == ""  # not ranked against the 40-episode cells
    markdown, latex = render(table, "md"), render(table, "latex")
    for text in (markdown, latex):
        assert "[20 episodes]" in text and NOTE in text and "episodes=20 for protonet" in text
    rows = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    filled = {r["row"]: r["episodes"] for r in rows if r["value"]}
    assert filled == {"OTAM [4]": "40", "TRX [24]": "40", "protonet": "20"}


def test_leaderboard_and_report_name_the_mix(tmp_path, capsys):
    from fsarbench.report.page.collect import collect_report

    _shards(tmp_path, seed=3)
    assert main(["leaderboard", "--runs", str(tmp_path), "--bootstrap", "50"]) == 0
    board = (tmp_path / "leaderboard.md").read_text()
    assert f"{NOTE} (run --episodes/--seed)" in board and "episode_seed=3 for protonet" in board
    data = collect_report(tmp_path, figures=False, n_boot=50)
    assert any("episode_seed=3 for protonet" in n for n in data.board_notes)
    (paper,) = [t for t in data.tables if t.number == 1]
    assert any(c.text.endswith("[episode seed 3]") for r in paper.rows for c in r.cells)


def test_protocol_groups_put_the_most_records_first(tmp_path):
    _shards(tmp_path, episodes=10)
    (mismatch,) = protocol_mismatches(load_records(tmp_path))
    first, second = mismatch.groups
    assert first == EpisodeProtocol(40, 0, 1).label == "40 episodes, episode seed 0, 1 query/class"
    assert [r.method for r in mismatch.groups[second]] == ["protonet"]


def test_run_into_a_folder_of_other_episodes_warns_on_the_console(tmp_path, monkeypatch, capsys):
    """A run with another --episodes into the --out of an earlier run put a note in the
    tables only; the console, where the user reads the numbers, said nothing."""
    from test_run_torchrun import ARGV, ToyProvider

    import fsarbench.experiments.features as features_mod

    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", ToyProvider)
    argv = [a for a in ARGV if a != "otam"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert "mixed test episodes" not in capsys.readouterr().out
    argv[argv.index("--episodes") + 1] = "30"
    assert main([*argv, "--shots", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "warning: mixed test episodes in this folder: the cells were evaluated under " in out
    assert "30 episodes, episode seed 0, 1 query/class: 1 record(s)" in out


def test_run_warning_leaves_eval_variants_out(tmp_path, capsys):
    """An `eval` variant (here untrained) made with another --episodes in a run's --out is
    kept out of the tables; run's console warning counted it as a mix all the same."""
    import dataclasses

    from fsarbench.cli.run_cmd import _warn_mixed_episodes

    _shards(tmp_path, episodes=20)
    records = load_records(tmp_path)
    _warn_mixed_episodes(records)
    assert "mixed test episodes" in capsys.readouterr().out
    tagged = [
        dataclasses.replace(r, tags={**r.tags, "variant_label": "untrained"})
        if r.method == "protonet"
        else r
        for r in records
    ]
    _warn_mixed_episodes(tagged)
    assert "mixed test episodes" not in capsys.readouterr().out


def test_run_notes_training_seeds_the_tables_pool_beyond_the_runs_own(tmp_path, capsys):
    """`run --train-seeds 0` into a folder holding seeds 0-2 printed the seed-0 cell while
    its tables showed the three-seed pool (labelled n=3), without a word on the console."""
    from fsarbench.cli.run_cmd import _note_other_seeds
    from fsarbench.experiments.cells import Cell

    rng = np.random.default_rng(5)
    for seed in (0, 1, 2):
        save_simulated_record(tmp_path, _manifest(40), "otam", 0.7, rng, train_seed=seed)
    save_simulated_record(tmp_path, _manifest(40), "trx", 0.7, rng, train_seed=0)
    records = load_records(tmp_path)
    cell = Cell("otam", "toy", 5, 1, train_seed=0)
    _note_other_seeds(records, [cell, Cell("trx", "toy", 5, 1, train_seed=0)])
    out = capsys.readouterr().out
    assert "note: the tables pool every training seed this folder holds" in out
    assert "otam toy 5-way 1-shot: seeds 0, 1, 2 (this run: 0)" in out and "trx" not in out
    _note_other_seeds(records, [Cell("otam", "toy", 5, 1, train_seed=s) for s in (0, 1, 2)])
    assert "note:" not in capsys.readouterr().out
    # seeds of another configuration are another row of the tables, not pooled with this run
    other = tmp_path / "other"
    save_simulated_record(other, _manifest(40), "trx", 0.7, rng, train_seed=0)
    save_simulated_record(other, _manifest(40), "trx", 0.7, rng, train_seed=1, recipe={"lr": 1})
    _note_other_seeds(load_records(other), [Cell("trx", "toy", 5, 1, train_seed=0)])
    assert "note:" not in capsys.readouterr().out


def test_merge_counts_and_names_an_unreadable_record(tmp_path, capsys):
    """A truncated record file was named only in a stderr warning; the result line said
    '3 record(s)' with no word of one left out."""
    _shards(tmp_path)
    (path,) = (tmp_path / "shard1" / "records").glob("*.json")
    path.write_text(path.read_text()[:100])
    assert main(["merge", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"note: record {path} cannot be read" in out
    assert "2 record(s) (1 left out, named above)" in out


def test_an_unreadable_record_is_warned_about_once_per_process(tmp_path, caplog):
    """run reads the folder after every cell, and warned about one truncated record file
    once per cell."""
    _shards(tmp_path)
    (path,) = (tmp_path / "shard1" / "records").glob("*.json")
    path.write_text(path.read_text()[:99])
    unreadable: list[str] = []
    for _ in range(3):
        load_records(tmp_path, unreadable=unreadable)
    assert len(unreadable) == 3  # each reader is told
    said = [r for r in caplog.records if f"record {path} cannot be read" in r.getMessage()]
    assert len(said) == 1


def test_a_shard_counted_from_one_is_refused_with_how_they_count():
    from fsarbench.cli.run_cmd import _shard

    with pytest.raises(ValueError, match=r"got 2/2: shards count from 0 \(0/2, 1/2\)"):
        _shard([], "2/2", {}, False)


def test_merge_names_a_setting_recorded_under_two_configurations(tmp_path, capsys):
    """Shards run with another --recipe were merged without a word: two rows of one setting,
    'otam @0d75ce5d' and 'otam @11b69e8d', and nothing said which was which."""
    rng = np.random.default_rng(0)
    for shard, steps in (("shard0", 4), ("shard1", 5)):
        save_simulated_record(
            tmp_path / shard, _manifest(40), "otam", 0.7, rng, dataset="synth",
            recipe={"steps": steps},
        )  # fmt: skip
    for seed in (0, 1):  # training seeds of one configuration are not a mix
        save_simulated_record(
            tmp_path / "shard0", _manifest(40), "trx", 0.7, rng, dataset="synth", train_seed=seed
        )
    assert main(["merge", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "warning: otam synth 5-way 1-shot is recorded under 2 configurations, differing in " \
        "recipe.steps" in out  # fmt: skip
    assert "1 record(s) in shard0" in out and "1 record(s) in shard1" in out
    assert "trx" not in out.split("warning:", 1)[1].split("\n")[0]
