"""Printed numbers are rounded half-up on their decimal value, the same way everywhere: an
exact tie such as 72.845 (72,845 right of 100,000 queries) printed as 72.84, since the
binary float nearest to it lies just below."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import fsarbench as fb
from fsarbench.cli.main import main
from fsarbench.evaluate import summarise_predictions
from fsarbench.results import make_record, save_result
from fsarbench.stats.rounding import difference, fixed, rounded


def _half_up(value: Fraction, places: int) -> str:
    """The obviously correct rounding: on the exact fraction."""
    scaled = value * 10**places
    whole = int(scaled + Fraction(1, 2)) if scaled >= 0 else -int(-scaled + Fraction(1, 2))
    sign = "-" if whole < 0 else ""
    digits = str(abs(whole)).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


@pytest.mark.parametrize("queries", [100_000, 70_000, 80_000, 50_000, 49_865])
def test_fixed_rounds_every_accuracy_of_a_query_count_as_the_exact_fraction(queries):
    """Every k/N accuracy (as a record keeps it, to 6 places) prints as its exact value
    rounded half-up; f-strings disagree on about half of the ties."""
    rng = np.random.default_rng(queries)
    ks = np.unique(np.concatenate([rng.integers(0, queries + 1, 3000), [queries, 0]]))
    ties = [k for k in range(queries + 1) if (Fraction(100 * k, queries) * 1000) % 10 == 5]
    for k in [*ks.tolist(), *ties[:2000]]:
        exact = Fraction(100 * k, queries)
        recorded = round(float(exact), 6)
        assert fixed(recorded) == _half_up(exact, 2), (k, recorded)
        assert rounded(recorded) == float(_half_up(exact, 2))


def test_fixed_signs_and_special_values():
    assert fixed(72.845) == "72.85" and f"{72.845:.2f}" == "72.84"
    assert fixed(72.895) == "72.90" and fixed(80.125, 1) == "80.1"
    assert fixed(72.84499999999999) == "72.85"  # float noise of a mean over seeds
    assert fixed(0.3449997) == "0.34" and fixed(0.0049996) == "0.00"  # not rounded twice
    assert fixed(0.5, sign=True) == "+0.50" and fixed(-0.005) == "-0.01"
    assert fixed(float("nan")) == "nan" and fixed(float("inf"), sign=True) == "+inf"
    assert difference(1.005, -0.125, 2.5) == "+1.01 [-0.13, +2.50]"
    assert difference(-0.004, -0.3, 0.004) == "+0.00 [-0.30, +0.00]"  # printed "-0.00"
    assert fixed(-0.004) == "0.00" and fixed(-0.0) == "0.00"


def _save_exact(out, manifest, method: str, right: int):
    """A record of ``method`` whose first ``right`` queries (episode by episode) are right."""
    true = manifest.query_labels
    hit = (np.arange(true.size) < right).reshape(true.shape)
    predicted = np.where(hit, true, (true + 1) % manifest.way)
    result = summarise_predictions(predicted, manifest, "normal", 0.0)
    record = make_record(
        result, method=method, dataset="toy", split_variant="toy", manifest=manifest
    )
    save_result(out, record, result)
    return record


def test_a_tied_accuracy_prints_half_up_in_every_output(tmp_path, capsys):
    """A record of exactly 72.845 (14,569 of 20,000 queries) printed 72.84 in the summary
    table, the leaderboard and compare."""
    manifest = fb.make_manifest(
        np.repeat(np.arange(10), 6), way=5, shot=1, queries=2, episodes=2000, seed=0, dataset="toy"
    )
    assert _save_exact(tmp_path, manifest, "A", 14_569).accuracy == 72.845
    _save_exact(tmp_path, manifest, "B", 13_000)
    assert main(["merge", "--out", str(tmp_path)]) == 0
    assert "| A        | 72.85 ± " in (tmp_path / "tables" / "toy__frozen.md").read_text()
    capsys.readouterr()
    assert main(["leaderboard", "--runs", str(tmp_path)]) == 0
    assert "72.85 ± " in capsys.readouterr().out
    assert main(["compare", "A", "B", "--runs", str(tmp_path), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "72.85 ± " in out and "+7.85 [" in out  # 72.845 - 65.000
