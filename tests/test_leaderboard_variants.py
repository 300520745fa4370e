"""The leaderboard names the systems it leaves out as variants (review 38c, finding 9): a
user's method run with hyper-parameters (``my-head[temperature=5.0]``, from a grid entry or
``train --hparams``) vanished from the table, or left only "no records to rank"."""

from __future__ import annotations

import numpy as np
from report_fixtures import save_simulated_record

import fsarbench as fb
from fsarbench.cli.main import main

VARIANT = "my-head[temperature=5.0]"
NOTE = (
    f"1 system(s) with hyper-parameter overrides or ablation variants left out ({VARIANT}): "
    "--include-variants ranks them"
)


def _manifest() -> fb.Manifest:
    classes = np.repeat(np.arange(10), 6)
    return fb.make_manifest(classes, way=5, shot=1, queries=2, episodes=200, seed=0, dataset="toy")


def test_the_leaderboard_names_the_variants_it_leaves_out(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    for name, acc in (("protonet", 0.6), (VARIANT, 0.55)):
        save_simulated_record(tmp_path, _manifest(), name, acc, rng)
    runs = ["--runs", str(tmp_path), "--bootstrap", "40"]
    assert main(["leaderboard", *runs]) == 0
    out = capsys.readouterr().out
    table, notes = out.split("Notes:")
    assert "protonet" in table and VARIANT not in table
    assert NOTE in notes
    assert NOTE in (tmp_path / "leaderboard.md").read_text()

    assert main(["leaderboard", *runs, "--include-variants"]) == 0
    out = capsys.readouterr().out
    assert VARIANT in out and "left out" not in out


def test_no_records_to_rank_says_variants_were_left_out(tmp_path, capsys) -> None:
    """Only an ``eval --checkpoint`` record of a method trained with other hyper-parameters."""
    save_simulated_record(tmp_path, _manifest(), VARIANT, 0.55, np.random.default_rng(1))
    assert main(["leaderboard", "--runs", str(tmp_path), "--bootstrap", "40"]) == 2
    err = capsys.readouterr().err
    assert f"no records to rank under {tmp_path} with these filters; {NOTE}" in err
