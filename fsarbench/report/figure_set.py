"""Render every figure the records of a results folder support (``python -m fsarbench figures``)."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from fsarbench.report import figures
from fsarbench.report.compare import compare_systems
from fsarbench.report.published import available_tables, figure_methods, load_table
from fsarbench.report.records import OUTSIDE_MARK, Entry, Setting, left_out_entry
from fsarbench.stats.paired import DEFAULT_BOOTSTRAP

__all__ = ["render_all", "ours_methods", "default_forest_pairs"]

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-")


def ours_methods(published: str | Path | None = None) -> set[str]:
    """Method names that fill the paper's own rows of the published tables (data, not code)."""
    names: set[str] = set()
    for n in available_tables(published):
        names.update(m for row in load_table(n, published).rows if row.ours for m in row.methods)
    return names


def default_forest_pairs(entries: list[Entry], ours: set[str]) -> list[tuple[str, str]]:
    """Each system of our methods with records vs every other plain (non-variant) system.

    Systems are matched by their method, so a stale one (``sgtm-otam ‡stale``) is ours too:
    matched by name, a folder of stale records drew no forest plot and said nothing."""
    plain = [e for e in entries if not e.is_variant]
    mine = sorted({e.system for e in plain if e.method in ours and e.mark != OUTSIDE_MARK})
    others = sorted({e.system for e in plain if e.method not in ours or e.mark == OUTSIDE_MARK})
    return [(a, b) for a in mine for b in others]


def _way_figures(entries, out_dir, missing):
    paths = []
    for dataset, shot in sorted({(e.setting.dataset, e.setting.shot) for e in entries}):
        fig = figures.plot_accuracy_vs_way(entries, dataset, shot)
        if fig is not None:
            figures.note_not_drawn(
                fig, [m for m in missing if (m.setting.dataset, m.setting.shot) == (dataset, shot)]
            )
            paths += figures.save_figure(
                fig, out_dir, f"accuracy_vs_way_{_slug(dataset)}_{shot}shot"
            )
    return paths


def _mask_figures(entries, out_dir, missing):
    paths = []
    for dataset in sorted({e.setting.dataset for e in entries}):
        fig = figures.plot_mask_ratio(entries, dataset)
        if fig is not None:
            figures.note_not_drawn(
                fig,
                [
                    m
                    for m in missing
                    if m.setting.dataset == dataset and figures.mask_ratio_of(m) is not None
                ],
            )
            paths += figures.save_figure(fig, out_dir, f"mask_ratio_{_slug(dataset)}")
    return paths


def _per_class_choice(entries: list[Entry], figure2: list[str]) -> list[Entry]:
    """Entries for per-class bars: tagged ``figure: 2``; else, in 5-way 1-shot settings, the
    methods figures.yaml names for Figure 2 where present (ablation variants such as
    ``sgtm-otam-baseline`` included: the figure names them), else every plain method."""
    tagged = [e for e in entries if str(e.tags.get("figure", "")) == "2"]
    if tagged:
        return tagged
    five_one = [e for e in entries if (e.setting.way, e.setting.shot) == (5, 1)]
    # stale systems too; not eval variants ('trx [untrained]' keeps the plain method name)
    named = [e for e in five_one if e.method in figure2 and "variant_label" not in e.tags]
    named_settings = {e.setting for e in named}
    plain = [e for e in five_one if not e.is_variant and e.setting not in named_settings]
    return named + plain


def _per_class_figures(entries, out_dir, figure2, missing):
    """One per-class figure per setting (Figure 2)."""
    groups: dict = defaultdict(list)
    for e in _per_class_choice(entries, figure2):
        groups[e.setting].append(e)
    paths = []
    names = _setting_file_names(list(groups))
    # of the left-out entries, those the figure would have chosen beside the others
    left = {id(m) for m in missing}
    absent = [e for e in _per_class_choice([*entries, *missing], figure2) if id(e) in left]
    for setting, es in sorted(groups.items()):
        fig = figures.plot_per_class(es)
        if fig is not None:
            figures.note_not_drawn(fig, [m for m in absent if m.setting == setting])
            paths += figures.save_figure(fig, out_dir, f"per_class_{names[setting]}")
    return paths


def _setting_file_names(settings: list[Setting]) -> dict[Setting, str]:
    """``setting -> "synth_5w1s"``; where settings would share a name, each one's values
    that tell them apart and are not the usual ones (frozen track, seed protocol, episode
    seed 0, one query, the most episodes) are appended: ``"_finetune"``, ``"_trx"``,
    ``"_seed1"``, ``"_2q"``, ``"_300ep"`` (the per-class figure of an episode-seed-1 run
    overwrote the main one's file)."""
    base = {s: f"{_slug(s.dataset)}_{s.way}w{s.shot}s" for s in settings}
    names = {}
    for s in settings:
        clash = [o for o in settings if base[o] == base[s]]
        usual = {
            "track": "frozen",
            "protocol": "seed",
            "seed": "seed0",
            "queries": "1q",
            "episodes": f"{max(o.episodes for o in clash)}ep",
        }
        suffix = ""
        for part, default in usual.items():
            values = {_part(o, part) for o in clash}
            if len(values) > 1 and _part(s, part) != default:
                suffix += f"_{_slug(_part(s, part))}"
        names[s] = base[s] + suffix
    return names


def _part(s: Setting, part: str) -> str:
    return {
        "track": s.track,
        "protocol": s.protocol,
        "seed": f"seed{s.seed}",
        "queries": f"{s.queries}q",
        "episodes": f"{s.episodes}ep",
    }[part]


def _forest_figures(run_dir, entries, out_dir, pairs, alpha, test, n_boot, missing):
    paths = []
    for a in sorted({a for a, _ in pairs}):
        systems = {a} | {b for x, b in pairs if x == a}
        comps, unpaired = [], []
        for _, b in (p for p in pairs if p[0] == a):
            # a setting of the pair over other episodes is named; the pair's others are drawn
            others: list[Setting] = []
            try:
                comps += compare_systems(
                    run_dir, entries, a, b, alpha=alpha, test=test, n_boot=n_boot,
                    one_sided=[], unpaired=others,
                )  # fmt: skip
            except ValueError as err:  # a name without records, or no setting shared
                log.info("forest plot: skipping %s vs %s: %s", a, b, err)
            unpaired += [
                f"{a} vs {b} in {s.label}: records over other test episodes" for s in others
            ]
        fig = figures.plot_forest(comps)
        if fig is not None:
            left = _forest_missing(entries, missing, a, systems - {a})
            figures.note_not_drawn(fig, left, unpaired)
            paths += figures.save_figure(fig, out_dir, f"forest_{_slug(a)}")
    return paths


def _forest_missing(entries, missing, a: str, others: set[str]) -> list[Entry]:
    """The left-out entries of ``a`` or of its partners that would have made a point of
    ``a``'s forest plot: in a setting where the other side has an entry too."""
    every = [*entries, *missing]
    out = []
    for m in missing:
        partners = others if m.system == a else {a} if m.system in others else set()
        if any(e.system in partners and e.setting == m.setting for e in every):
            out.append(m)
    return out


def render_all(
    run_dir: str | Path,
    entries: list[Entry],
    out_dir: str | Path,
    *,
    forest_pairs: list[tuple[str, str]] | None = None,
    alpha: float = 0.05,
    test: str = "ttest",
    published: str | Path | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    left_out: Sequence[str] = (),
) -> list[Path]:
    """Every figure the ``entries`` support, written under ``out_dir``; the paths written
    (``n_boot``: bootstrap resamples behind the forest plots' CIs). ``left_out``: why
    entries were left out (:class:`~fsarbench.report.records.LeftOut` reasons name them);
    a figure that would have drawn one names it under the plot."""
    pairs = (
        forest_pairs
        if forest_pairs is not None
        else default_forest_pairs(entries, ours_methods(published))
    )
    missing = [e for r in left_out if (e := left_out_entry(r)) is not None]
    figure2 = figure_methods("figure2", published)
    return (
        _way_figures(entries, out_dir, missing)
        + _mask_figures(entries, out_dir, missing)
        + _per_class_figures(entries, out_dir, figure2, missing)
        + _forest_figures(run_dir, entries, out_dir, pairs, alpha, test, n_boot, missing)
    )
