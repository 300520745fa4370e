"""Pairwise verdicts for the page: each of the paper's methods against every other system,
Holm-adjusted over the settings a pair shares, with the level each verdict rests on."""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from fsarbench.report.compare import TESTS, SettingComparison, compare_systems, verdict_level
from fsarbench.report.figure_set import default_forest_pairs
from fsarbench.report.records import Entry, UnpairedError
from fsarbench.stats.paired import DEFAULT_BOOTSTRAP, format_p
from fsarbench.stats.rounding import difference, fixed

__all__ = ["VerdictRow", "choose_pairs", "collect_verdicts", "MAX_PAIRS"]

log = logging.getLogger(__name__)

#: Pairs shown when no method of the paper has records (every pair of plain systems, capped).
MAX_PAIRS = 30


@dataclass(frozen=True)
class VerdictRow:
    """One pair in one setting, as printed; the ``*_value`` fields sort it (as numbers: the
    texts sorted '1.2e-28' after '0.244')."""

    setting: str
    a: str
    b: str
    acc_a: str
    acc_b: str
    diff: str
    p_raw: str
    p_holm: str
    diff_value: float
    p_holm_value: float
    verdict: str
    winner: str  # "a", "b" or "" (no significant difference)
    level: str
    acc_a_value: float = math.nan
    acc_b_value: float = math.nan
    p_raw_value: float = math.nan


def choose_pairs(entries: list[Entry], ours: set[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """The paper's methods vs every other plain system; without them, every pair of plain
    systems (at most :data:`MAX_PAIRS`). Returns the pairs and notes on the choice."""
    pairs = default_forest_pairs(entries, ours)
    if pairs:
        return pairs, ["the paper's methods against every other method with records."]
    plain = sorted({e.system for e in entries if not e.is_variant})
    pairs = list(itertools.combinations(plain, 2))
    notes = ["no method of the paper has records: every pair of methods with records."]
    if len(pairs) > MAX_PAIRS:
        notes.append(
            f"the first {MAX_PAIRS} of {len(pairs)} pairs are shown; "
            "'python -m fsarbench compare A B' compares any other."
        )
    return pairs[:MAX_PAIRS], notes


def _row(c: SettingComparison) -> VerdictRow:
    s = c.stats
    return VerdictRow(
        setting=c.setting.label,
        a=c.a.system,
        b=c.b.system,
        acc_a=f"{fixed(s.acc_a)} ± {fixed(c.a.ci95)}",
        acc_b=f"{fixed(s.acc_b)} ± {fixed(c.b.ci95)}",
        diff=difference(s.diff, *s.diff_ci),
        p_raw=format_p(s.p_value(TESTS[c.test])),
        p_holm=format_p(c.adjusted[c.test]),
        diff_value=s.diff,
        p_holm_value=c.adjusted[c.test],
        verdict=c.verdict,
        acc_a_value=s.acc_a,
        acc_b_value=s.acc_b,
        p_raw_value=s.p_value(TESTS[c.test]),
        winner=_winner(c),
        level=verdict_level(s),
    )


def _winner(c: SettingComparison) -> str:
    if c.verdict == f"{c.a.system} better":
        return "a"
    return "b" if c.verdict == f"{c.b.system} better" else ""


def collect_verdicts(
    run_dir: str | Path,
    entries: list[Entry],
    pairs: list[tuple[str, str]],
    *,
    alpha: float = 0.05,
    test: str = "ttest",
    n_boot: int = DEFAULT_BOOTSTRAP,
) -> tuple[list[VerdictRow], list[str]]:
    """Verdict rows of every pair in every setting it shares; pairs that cannot be compared
    (no shared setting, different episodes) are named in the notes instead."""
    rows, notes = [], []
    for a, b in pairs:
        try:
            comps = compare_systems(run_dir, entries, a, b, alpha=alpha, test=test, n_boot=n_boot)
        except UnpairedError as err:
            notes.append(f"{a} vs {b} not compared: {err}")
            continue
        except ValueError as err:  # no setting shared: nothing to compare
            log.info("verdicts: %s vs %s left out: %s", a, b, err)
            continue
        rows += [_row(c) for c in comps]
    return rows, notes
