"""Figures from result records (matplotlib, Agg backend), each saved as PNG and PDF.

- accuracy vs N-way with 95% CI bands (the seed paper's Table 6),
- accuracy vs masking ratio (Figure 4; records carry ``tags["mask_ratio"]``),
- per-class accuracy bars (Figure 2; from ``record.per_class_accuracy``),
- forest plot of paired differences with bootstrap CIs (from :mod:`fsarbench.report.compare`).
"""

from __future__ import annotations

import io
import math
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fsarbench.io import atomic_write_bytes
from fsarbench.report.compare import SettingComparison
from fsarbench.report.episode_protocol import (
    cell_marker,
    protocol_of,
    reference_protocol,
)
from fsarbench.report.records import Entry, base_method_of, overrides_of

__all__ = [
    "save_figure",
    "plot_accuracy_vs_way",
    "plot_mask_ratio",
    "plot_per_class",
    "plot_forest",
    "mask_ratio_of",
]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, imported when a figure is drawn (at module
    level it cost every CLI command about a second before parsing its arguments)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


SYNTH_NOTE = "synthetic features: not comparable with published numbers"
MIXED_NOTE = "mixed test episodes: a [marked] line used other episodes than the rest"


def save_figure(fig, out_dir: str | Path, name: str) -> list[Path]:
    """Save ``fig`` as ``out_dir/name.png`` (150 dpi) and ``.pdf``, each written atomically
    (a run killed mid-write leaves the previous figure, never a truncated one); close it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path, options in zip(paths, ({"dpi": 150}, {})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=path.suffix[1:], bbox_inches="tight", **options)
        atomic_write_bytes(path, buffer.getvalue())
    pyplot().close(fig)
    return paths


def note_not_drawn(fig, missing: list[Entry], unpaired: Sequence[str] = ()) -> None:
    """A line under ``fig`` naming the ``missing`` entries (left out of the reports, each
    with its reason in their left-out notes) and the ``unpaired`` comparisons (a setting
    whose two records are over other test episodes), so that a point or bar absent from it
    is not read as never run."""
    lines = []
    if missing:
        names = sorted({f"{e.system} in {e.setting.label}" for e in missing})
        lines.append("Not drawn (left out; the left-out notes say why): " + "; ".join(names))
    if unpaired:
        lines.append("Not compared: " + "; ".join(unpaired))
    if lines:
        text = "\n".join(textwrap.fill(line, 110) for line in lines)
        fig.text(0.0, -0.01, text, fontsize=7, va="top", ha="left")


def _legend_outside(ax, fontsize: int = 8) -> None:
    """The legend right of the axes, so it never covers lines, bars or error bars."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _ci_label(label: str, ax, cis) -> str:
    """``label`` plus, when the 95% CIs are too small to see at the axis's scale (under 1%
    of its span), how wide they are — so a reader knows the bands are there, not missing."""
    cis = [c for c in cis if c == c]
    low, high = ax.get_ylim()
    if cis and max(cis) < 0.01 * (high - low):
        # rounded up (a bound, never below the widest), after float noise: 0.12 * 100 is
        # 12.000000000000002, which would print 0.13
        bound = math.ceil(round(max(cis) * 100, 9)) / 100
        return f"{label}\n(95% CIs ≤ ±{bound:.2f} pp: too narrow to see here)"
    return label


def _title(text: str, entries: list[Entry]) -> str:
    """``text`` plus the track(s) the numbers come from, and the notes on synthetic data and
    on test episodes that differ between the entries shown."""
    tracks = sorted({e.setting.track for e in entries})
    text += f" [{', '.join(tracks)} track]" if tracks else ""
    text += f"\n({SYNTH_NOTE})" if any(e.synthetic for e in entries) else ""
    return text + (f"\n({MIXED_NOTE})" if _several_protocols(entries) else "")


def _several_protocols(entries: list[Entry]) -> bool:
    """Whether ``entries`` were evaluated on more than one set of test episodes (count, seed
    or queries per class)."""
    return len({protocol_of(r) for e in entries for r in e.records}) > 1


def _line_names(entries: list[Entry], name) -> dict[int, str]:
    """``id(entry) -> line name``: ``name(entry)`` plus, where the entries mix test episodes
    (``run --episodes/--seed``), the marker of those apart from the most common (``" [2000
    episodes]"``), and where they mix tracks or frame protocols, each one's, so that points
    of two protocols are never joined into one line."""
    records = [r for e in entries for r in e.records]
    reference = reference_protocol(records) if _several_protocols(entries) else None
    tracks = len({(e.setting.track, e.setting.protocol) for e in entries}) > 1
    return {
        id(e): name(e)
        + (_track_marker(e.setting) if tracks else "")
        + cell_marker(e.records, reference)
        for e in entries
    }


def _track_marker(setting) -> str:
    """``" [finetune track]"`` (and a protocol other than seed's): points of two tracks or
    frame protocols are never joined into one line."""
    protocol = "" if setting.protocol == "seed" else f", {setting.protocol} protocol"
    return f" [{setting.track} track{protocol}]"


def plot_accuracy_vs_way(entries: list[Entry], dataset: str, shot: int):
    """Accuracy (± 95% CI band) vs way for every system with at least two ways; or ``None``."""
    series: dict[str, list[Entry]] = defaultdict(list)
    here = [e for e in entries if e.setting.dataset == dataset and e.setting.shot == shot]
    names = _line_names(here, lambda e: e.system)
    for e in here:
        series[names[id(e)]].append(e)
    series = {k: sorted(v, key=lambda e: e.setting.way) for k, v in series.items() if len(v) > 1}
    if not series:
        return None
    fig, ax = pyplot().subplots(figsize=(6, 4))
    for name, es in sorted(series.items()):
        x = np.array([e.setting.way for e in es])
        y = np.array([e.accuracy for e in es])
        ci = np.array([e.ci95 for e in es])
        (line,) = ax.plot(x, y, marker="o", label=name)
        ax.fill_between(x, y - ci, y + ci, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set(xlabel="N (way)", ylabel="accuracy (%)")
    ax.set_xticks(sorted({e.setting.way for es in series.values() for e in es}))
    ax.set_title(
        _title(
            f"{dataset}: N-way {shot}-shot (bands: 95% CI over episodes)",
            [e for es in series.values() for e in es],
        ),
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    cis = [e.ci95 for es in series.values() for e in es]
    ax.set_ylabel(_ci_label("accuracy (%)", ax, cis))
    fig.tight_layout()
    return fig


#: Masking ratio of a record whose hyper-parameters carry ``mask_ratio: None``: the seed paper
#: masks 50% of the frames unless told otherwise (Sec. 4.3.6).
DEFAULT_MASK_RATIO = 0.5


def mask_ratio_of(entry: Entry) -> float | None:
    """The share of frames an entry's run masks, as Figure 4's x: the ratio asked
    (``tags["mask_ratio"]``, a ``mask_ratio=`` override in its name such as
    ``"sgtm-otam[mask_ratio=0.25]"``, or its recorded ``hparams``: ``mask_ratio``, else
    ``2k`` frames when ``k`` is set, else :data:`DEFAULT_MASK_RATIO`), turned into the frames
    SGTM masks of the record's ``num_frames`` where known (at 6 frames, 25% and 37.5% both
    mask 2: two points of one masking were drawn apart); ``None`` for methods without one and
    for runs that mask nothing (``mask: none``)."""
    record = entry.records[0]
    hparams = record.hparams
    asked = entry.tags.get("mask_ratio", overrides_of(entry.method).get("mask_ratio"))
    if asked is None and "mask_ratio" not in hparams:
        return None
    if hparams.get("mask") == "none" and asked is None:
        return None
    k = hparams.get("k") if asked is None else None
    asked = hparams.get("mask_ratio") if asked is None else asked
    frames = (record.features or {}).get("num_frames")
    if not frames:
        return float(asked) if asked is not None else DEFAULT_MASK_RATIO
    from fsarbench_sgtm.masks import num_masked_frames

    try:
        masked = num_masked_frames(int(frames), k, None if asked is None else float(asked))
    except ValueError:  # a ratio SGTM would refuse at this frame count: as asked
        return float(asked) if asked is not None else DEFAULT_MASK_RATIO
    return masked / int(frames)


def _ratio_lines(
    entries: list[Entry], dataset: str
) -> dict[tuple[int, int], dict[str, list[Entry]]]:
    """(way, shot) -> line name -> entries sorted by ratio, for base methods run at two or
    more ratios in that setting. A method's stale (or variant) points form lines of their own,
    kept even when such a line holds one ratio: dropping it hid a lone current point."""
    lines: dict[tuple[int, int], dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    here = [
        e
        for e in entries
        if e.setting.dataset == dataset
        and mask_ratio_of(e) is not None
        and not set(overrides_of(e.method)) - {"mask_ratio"}  # not e.g. a λ sweep point
    ]
    names = _line_names(here, _ratio_line_name)
    for e in here:
        lines[(e.setting.way, e.setting.shot)][names[id(e)]].append(e)
    out = {}
    for key, by_name in lines.items():
        ratios: dict[str, set] = defaultdict(set)
        for es in by_name.values():
            for e in es:
                ratios[base_method_of(e.method)].add(mask_ratio_of(e))
        kept = {
            name: sorted(es, key=mask_ratio_of)
            for name, es in by_name.items()
            if len(ratios[base_method_of(es[0].method)]) > 1
        }
        if kept:
            out[key] = kept
    return out


def _ratio_line_name(entry: Entry) -> str:
    """A masking-ratio line's name: the base method, plus the label of a variant (e.g. an
    untrained ``eval``) and the mark of a stale (or outside) system, which never join the
    method's own line: points of older code are never drawn as one line with current ones."""
    variant = entry.tags.get("variant_label")
    name = base_method_of(entry.method)
    name += f" [{variant}]" if variant else ""
    return f"{name} {entry.mark}" if entry.mark else name


def plot_mask_ratio(entries: list[Entry], dataset: str):
    """Accuracy ± CI vs masking ratio, one panel per way/shot, one line per base method that was
    run at two or more ratios (Figure 4); or ``None``."""
    panels = _ratio_lines(entries, dataset)
    if not panels:
        return None
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    shown = []
    for ax, ((way, shot), lines) in zip(axes[0], sorted(panels.items())):
        for name, line in sorted(lines.items()):
            x = [100 * mask_ratio_of(e) for e in line]
            ax.errorbar(
                x,
                [e.accuracy for e in line],
                yerr=[e.ci95 for e in line],
                marker="o",
                capsize=3,
                label=name,
            )
            shown += line
        ax.set(xlabel="masking ratio (%)", ylabel="accuracy (%)", title=f"{way}-way {shot}-shot")
        ax.set_xticks(sorted({100 * mask_ratio_of(e) for es in lines.values() for e in es}))
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(alpha=0.3)
        _legend_outside(ax, 7)
        ax.set_ylabel(_ci_label("accuracy (%)", ax, [e.ci95 for e in shown]))
    title = f"{dataset}: accuracy vs masking ratio (bars: 95% CI)"
    fig.suptitle(_title(title, shown), fontsize=9)
    fig.tight_layout()
    return fig


def _class_ci(entry: Entry, acc: np.ndarray) -> np.ndarray:
    """Approximate 95% CI half-widths (percentage points) of per-class accuracies: binomial
    over the class's query slots, ``episodes · way · queries / classes`` on average (a query
    video recurs across episodes, so the true interval is somewhat wider)."""
    r = entry.records[0]
    slots = r.episodes * r.way * r.queries * len(entry.records) / max(1, len(r.per_class_accuracy))
    p = np.clip(acc / 100.0, 0.0, 1.0)
    return 196.0 * np.sqrt(p * (1 - p) / max(1.0, slots))


def plot_per_class(entries: list[Entry], max_systems: int = 4):
    """Grouped bars of per-class accuracy of the ``entries`` (one setting; Figure 2): the
    ``max_systems`` most accurate that have per-class numbers."""
    entries = sorted(
        (e for e in entries if e.records[0].per_class_accuracy), key=lambda e: -e.accuracy
    )[:max_systems]
    if not entries:
        return None
    classes = sorted(
        {c for e in entries for c in e.records[0].per_class_accuracy}, key=lambda c: (len(c), c)
    )
    width = 0.8 / len(entries)
    x = np.arange(len(classes))
    width_in = min(14, max(6, 0.18 * len(classes) * len(entries) + 2))
    fig, ax = pyplot().subplots(figsize=(width_in, 4))
    for i, e in enumerate(entries):
        acc = np.array(
            [np.mean([r.per_class_accuracy.get(c, np.nan) for r in e.records]) for c in classes]
        )
        err = _class_ci(e, acc)
        pos = x + (i - (len(entries) - 1) / 2) * width
        ax.bar(pos, acc, width, yerr=err, error_kw={"elinewidth": 0.6}, label=e.system)
    ax.set_xticks(x, classes, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="accuracy (%) ± approx. 95% CI", ylim=(0, 100))
    ax.set_title(_title(f"per-class accuracy, {entries[0].setting.label}", entries), fontsize=9)
    _legend_outside(ax)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_forest(comparisons: list[SettingComparison]):
    """Forest plot: per comparison the difference A − B with its bootstrap 95% CI at the
    level its verdict rests on (``diff_ci``: over seeds then episodes with several training
    seeds, else over episodes); filled markers are significant after Holm adjustment.
    ``None`` when there is nothing to plot."""
    if not comparisons:
        return None
    n = len(comparisons)
    fig, ax = pyplot().subplots(figsize=(7, 0.45 * n + 1.4))
    y = np.arange(n)[::-1]
    for yi, c in zip(y, comparisons):
        sig = c.adjusted[c.test] <= c.alpha
        low, high = c.stats.diff_ci
        ax.errorbar(
            c.stats.diff,
            yi,
            xerr=[[c.stats.diff - low], [high - c.stats.diff]],
            fmt="o",
            color="C0",
            mfc="C0" if sig else "white",
            capsize=3,
        )
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(
        y, [f"{c.a.system} − {c.b.system} | {c.setting.label}" for c in comparisons], fontsize=7
    )
    seeds = any(c.stats.seed_level is not None for c in comparisons)
    ax.set_xlabel(
        "accuracy difference (percentage points), 95% bootstrap CI"
        + (" (over seeds, then episodes, where there are several seeds)" if seeds else "")
    )
    entries = [e for c in comparisons for e in (c.a, c.b)]
    ax.set_title(
        _title(
            f"paired differences (filled: Holm-adjusted {comparisons[0].test} "
            f"p ≤ {comparisons[0].alpha})",
            entries,
        ),
        fontsize=9,
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
