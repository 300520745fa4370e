"""The leaderboard as sortable rows: one section per setting, shared ranks flagged."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fsarbench.report.compare import verdict_level
from fsarbench.report.leaderboard import Standing, build_leaderboard, untested_note
from fsarbench.report.page.provenance import Provenance, entry_provenance
from fsarbench.report.recipe_changes import recipe_changes_text
from fsarbench.report.records import Entry, Setting
from fsarbench.report.tables import stale_note
from fsarbench.stats.paired import DEFAULT_BOOTSTRAP, format_p
from fsarbench.stats.rounding import difference, fixed

__all__ = ["BoardRow", "BoardSection", "collect_leaderboard"]


@dataclass(frozen=True)
class BoardRow:
    """One system in one setting; ``accuracy``, ``diff`` and ``p`` are the numbers the page
    sorts on (``p`` is NaN for the leader)."""

    rank: int
    tied: bool
    system: str
    accuracy: float
    accuracy_text: str
    seeds_text: str
    diff: float
    diff_text: str
    p: float
    p_text: str
    train_seeds: int
    level: str
    provenance: Provenance


@dataclass(frozen=True)
class BoardSection:
    setting: str
    synthetic: bool
    rows: list[BoardRow]

    @property
    def ties(self) -> bool:
        return any(r.tied for r in self.rows)


def _row(st: Standing, shared: bool) -> BoardRow:
    e, c = st.entry, st.vs_leader
    return BoardRow(
        rank=st.rank,
        tied=shared,
        system=e.system,
        accuracy=e.accuracy,
        accuracy_text=f"{fixed(e.accuracy)} ± {fixed(e.ci95)}",
        seeds_text=f"{fixed(e.seeds.mean)} ± {fixed(e.seeds.std)} (n={e.seeds.n})"
        if e.seeds
        else "-",
        diff=c.diff if c else 0.0,
        diff_text=difference(c.diff, *c.diff_ci) if c else "leader",
        p=st.p_leader_adjusted if c else math.nan,
        p_text=format_p(st.p_leader_adjusted) if c else "-",
        train_seeds=len(e.records),
        level=verdict_level(c) if c else "-",
        provenance=entry_provenance(e),
    )


def collect_leaderboard(
    run_dir: str | Path,
    entries: list[Entry],
    *,
    alpha: float = 0.05,
    test: str = "ttest",
    n_boot: int = DEFAULT_BOOTSTRAP,
) -> tuple[list[BoardSection], list[str]]:
    """Standings of the plain (non-variant) systems in every setting, as the leaderboard
    command ranks them; a setting whose systems saw different episodes is left out, named in
    the notes returned beside the sections, as are the change notes of the ranked systems'
    own records (another recipe, features or test episodes than most) and the comparisons
    without a ``test`` p-value, counted as ties (:func:`untested_note`)."""
    unranked: list[str] = []
    untested: dict[Setting, list[str]] = {}
    held: list[str] = []
    board = build_leaderboard(
        run_dir,
        [e for e in entries if not e.is_variant],
        left_out=unranked,
        untested=untested,
        held=held,
        alpha=alpha,
        test=test,
        n_boot=n_boot,
    )
    sections, ranked = [], []
    for setting, standings in board.items():
        group = [st.entry for st in standings]
        ranked += [r for e in group if not e.outside for r in e.records]
        counts = Counter(st.rank for st in standings)
        rows = [_row(st, counts[st.rank] > 1) for st in standings]
        sections.append(BoardSection(setting.label, any(e.synthetic for e in group), rows))
    notes = [f"not ranked: {reason}" for reason in unranked] + held
    changed = recipe_changes_text(ranked)
    tie_note = untested_note(test, untested)
    stale = stale_note([st.entry for standings in board.values() for st in standings])
    return sections, notes + [n for n in (tie_note, changed, stale) if n]
