"""An accuracy where the normal interval says nothing (every episode perfect, or the interval
running past 100%) is printed with the convention's "±" and a caveat naming a bound that holds."""

from __future__ import annotations

import numpy as np
import pytest
from report_fixtures import save_simulated_record

import fsarbench as fb
from fsarbench.cli.run_cmd import _print_record
from fsarbench.experiments.summary_tables import summary_tables
from fsarbench.report.recipe_changes import degenerate_interval_note, recipe_changes_text
from fsarbench.stats.bounds import interval_caveat
from fsarbench.stats.intervals import mean_and_halfwidth


def _caveat_of(values: np.ndarray) -> str:
    mean, half, std = mean_and_halfwidth(values)
    return interval_caveat(100 * mean, 100 * half, 100 * std, len(values))


def test_every_episode_perfect_names_the_rule_of_three_bound():
    text = _caveat_of(np.ones(40))
    assert "every one of its 40 episodes was perfect" in text
    assert "below 7.5% at 95% confidence" in text  # 300 / 40


def test_every_episode_wrong_and_equal_scores_are_named():
    assert "no query of its 200 episodes was right" in _caveat_of(np.zeros(200))
    assert "below 1.5%" in _caveat_of(np.zeros(200))
    # 0.8 repeated averages to a std of ~1e-17, not 0: still "± 0", still named
    same = np.full(3000, 0.8)
    assert "scored the same" in _caveat_of(same)


def test_an_interval_past_the_bound_is_named_and_a_plain_one_is_not():
    rng = np.random.default_rng(0)
    near = np.where(rng.random(30) < 0.95, 1.0, 0.6)  # 97.x ± 2.x runs past 100
    mean, half, _ = mean_and_halfwidth(near)
    assert 100 * (mean + half) > 100
    assert "runs past 100%" in _caveat_of(near)
    assert "runs past 0%" in _caveat_of(1 - near)
    assert "normal" not in _caveat_of(near)  # also said of an 'eval --interval t' record
    assert _caveat_of(rng.random(10_000)) == ""
    assert _caveat_of(np.ones(1)) == ""  # one episode: the half-width is NaN already
    assert "not bounded by 3 episodes" in _caveat_of(np.ones(3))  # not "below 1e+02%"
    assert "below 75%" in _caveat_of(np.ones(4))


@pytest.mark.parametrize("episodes", [4, 5, 9, 20, 40, 200, 6_100, 10_000])
def test_the_printed_bound_holds(episodes):
    """At the error rate the caveat prints as its bound, all ``E`` episodes are perfect with
    probability at most 5%, even when an episode's queries fail together (the per-query
    error rate is at most the chance that an episode has an error)."""
    import re

    said = re.search(r"below ([0-9.e+-]+)% at 95%", _caveat_of(np.ones(episodes)))
    bound = float(said.group(1)) / 100
    assert bound >= 3 / episodes - 1e-12  # rounded up when printed, never below 3/E
    assert (1 - bound) ** episodes <= 0.05


def test_tables_and_the_run_line_name_a_perfect_cell(tmp_path, capsys):
    m = fb.make_manifest(np.repeat(np.arange(10), 6), way=5, shot=1, queries=1, episodes=40)
    rng = np.random.default_rng(0)
    perfect = save_simulated_record(tmp_path, m, "otam", 1.0, rng)
    plain = save_simulated_record(tmp_path, m, "trx", 0.6, rng)
    assert f"{perfect.accuracy:.2f} ± {perfect.ci95:.2f}" == "100.00 ± 0.00"
    note = degenerate_interval_note([perfect, plain])
    assert note.startswith("Not a 95% interval: otam (toy 5-way 1-shot): every one of its 40")
    assert "trx" not in note
    assert note in recipe_changes_text([perfect, plain])
    assert degenerate_interval_note([plain]) == ""
    tables = summary_tables([perfect, plain])
    assert any("Not a 95% interval: otam" in t for t in tables.values())
    _print_record(perfect)
    _print_record(plain)
    lines = capsys.readouterr().out.splitlines()
    assert "100.00 ± 0.00" in lines[0] and "rule of three" in lines[1]
    assert len(lines) == 3


def test_a_pooled_row_past_100_is_named(tmp_path):
    """A two-seed row printed "98.00 ± 12.76" with no note: each seed's own ± was checked,
    not the pooled one the table shows."""
    m = fb.make_manifest(np.repeat(np.arange(10), 6), way=5, shot=1, queries=1, episodes=40)
    rng = np.random.default_rng(1)
    seeds = [
        save_simulated_record(tmp_path, m, "otam", p, rng, train_seed=s)
        for s, p in ((0, 0.995), (1, 0.93))
    ]
    note = degenerate_interval_note(seeds)
    assert "otam (toy 5-way 1-shot): its '±' pooled over 2 training seeds runs past 100%" in note
    assert degenerate_interval_note(seeds[1:]) == ""  # one seed alone: a plain interval
