"""What a record's training recipe changed from the one ``run`` uses by default.

``--recipe`` and ``--option`` values enter a record's config hash but not its method name, so
a run with them replaces that cell's default record in its folder and tables would show the
number under the plain name. :func:`recipe_changes` recomputes the default recipe of the
record's method, dataset, track and protocol (at the record's own training way and shot) and
returns the fields that differ, for the tables to name. :func:`feature_changes` does the same
for a frozen-track record's frame features against its dataset's preset (``--features``, or a
grid's ``features:``), which also enter the config hash but not the name.
:func:`recipe_changes_text` also names the cells whose test episodes (``--episodes``,
``--seed``, queries per class) are not those of most of the table's cells
(:mod:`fsarbench.report.episode_protocol`): merged shards run with other flags sit side by
side, and their numbers are not comparable cell by cell.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from fsarbench.config import ConfigError
from fsarbench.report.episode_protocol import (
    episode_changes,
    mixes_protocols,
    reference_protocol,
)
from fsarbench.report.records import base_method_of, group_entries
from fsarbench.results import ResultRecord
from fsarbench.stats.bounds import interval_caveat

__all__ = [
    "feature_changes",
    "recipe_changes",
    "recipe_changes_text",
    "episodes_note",
    "nonfinite_note",
    "zero_frames_note",
    "degenerate_interval_note",
]


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


@functools.lru_cache(maxsize=256)
def _default_identity(
    method: str, dataset: str, track: str, protocol: str, way: int, shot: int
) -> tuple[tuple[str, Any], ...] | None:
    """The default recipe identity at ``shot`` and ``way`` (0: the recipe's own), flattened;
    ``None`` where it cannot be recomputed (a method or dataset this installation does not
    know, a track without recipes)."""
    from fsarbench.training.finetune_recipe import finetune_recipe
    from fsarbench.training.recipe import frozen_recipe

    try:
        if track == "finetune":
            full = finetune_recipe(method, dataset, protocol=protocol)
            unit = dataclasses.replace(full, recipe=full.recipe.at_shot(shot, way))
        elif track == "frozen":
            unit = frozen_recipe(method, dataset=dataset).at_shot(shot, way)
        else:
            return None
    except (ConfigError, KeyError, ValueError):
        return None
    return tuple(sorted(_flat(unit.identity()).items()))


def recipe_changes(record: ResultRecord) -> dict[str, Any]:
    """``{field: value}`` of ``record``'s recipe that differ from the default recipe of its
    cell: the recipe's own way, at the cell's shot, as ``run`` trains one model per shot
    (nested fields dotted: ``options.short``). A model trained at another way (``--recipe
    way=10``) or shot (``--share-model-across-shots``) shows as ``way``/``shot`` changes: the
    default recomputed at the record's own training way and shot hid both. ``{}`` when it is
    the default, records no recipe, or the default cannot be recomputed."""
    recorded = _flat(record.recipe or {})
    inner = "recipe." if record.track == "finetune" else ""
    way, shot = recorded.get(f"{inner}way"), recorded.get(f"{inner}shot")
    if not recorded or not isinstance(way, int) or not isinstance(shot, int):
        return {}
    default = _default_identity(
        base_method_of(record.method), record.dataset, record.track, record.protocol, 0, record.shot
    )
    if default is None:
        return {}
    want = dict(default)
    changed = {
        k: v
        for k, v in recorded.items()
        if (want[k] != v if k in want else _set_though_omitted(k, v))
    }
    # a field the default sets and the record leaves out: unset by the user
    # (``--option color_jitter=false`` under ``--protocol hyrsm``)
    changed.update(
        {k: _unset_value(k) for k, v in want.items() if k not in recorded and _omissible(k)}
    )
    return dict(sorted(changed.items()))


def _omissible(key: str) -> bool:
    """A field left out of recipe dicts while unset (``OMITTED_WHEN_UNSET`` of the recipe,
    ``OPTIONS_OMITTED_WHEN_UNSET`` of the finetune options)."""
    from fsarbench.training.finetune_recipe import OPTIONS_OMITTED_WHEN_UNSET
    from fsarbench.training.recipe import OMITTED_WHEN_UNSET

    section, _, name = key.rpartition(".")
    omitted = OPTIONS_OMITTED_WHEN_UNSET if section == "options" else OMITTED_WHEN_UNSET
    return name in omitted


def _set_though_omitted(key: str, value: Any) -> bool:
    """A field the default leaves out while unset (empty, zero or its default), set here:
    ``--recipe train_shot=1`` on a recipe without one was no change to the note."""
    return _omissible(key) and bool(value) and value != _field_default(key)


def _unset_value(key: str) -> Any:
    """The value an omitted field has while unset (its dataclass default), as recorded."""
    value = _field_default(key)
    return list(value) if isinstance(value, tuple) else value


def _field_default(key: str) -> Any:
    """The dataclass default of a recipe field (``options.X``: of the finetune options)."""
    from fsarbench.training.finetune_recipe import FinetuneOptions
    from fsarbench.training.recipe import Recipe

    section, _, name = key.rpartition(".")
    cls = FinetuneOptions if section == "options" else Recipe
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


#: Frozen-track feature fields a run can set apart from the dataset's preset.
_PRESET_FIELDS = ("backbone", "weights", "resolution", "num_frames", "train_views", "tiny")


def feature_changes(record: ResultRecord) -> dict[str, Any]:
    """``{field: value}`` of a frozen-track record's frame features that differ from its
    dataset's preset (``run --features``, or a grid's ``features:`` such as the CLIP grid's);
    ``{}`` for the preset's own features, the finetune track, or a record that does not say."""
    from fsarbench.experiments.features import feature_preset

    made = record.features or {}
    if record.track != "frozen" or "backbone" not in made:
        return {}
    try:
        preset = dataclasses.asdict(feature_preset(record.dataset))
    except (ConfigError, KeyError, ValueError):
        return {}
    made = {"tiny": False, **made}  # recorded only when set
    return {k: made[k] for k in _PRESET_FIELDS if k in made and made[k] != preset[k]}


def recipe_changes_text(records: list[ResultRecord]) -> str:
    """A note naming the systems whose records changed the default recipe or the dataset's
    feature preset and how, e.g. ``"Recipe changed from the default (--recipe/--option):
    lr=0.01 for protonet."`` (``"every method"`` when all share the change), and those
    evaluated on other test episodes than most of ``records`` (:func:`episodes_note`), and
    those with NaN/inf logits counted wrong (:func:`nonfinite_note`), all-zero test frames
    (:func:`zero_frames_note`) or a "±" that is not a 95% interval
    (:func:`degenerate_interval_note`); ``""`` when none did."""
    notes = [
        _note(records, recipe_changes, "Recipe changed from the default (--recipe/--option)"),
        _note(
            records,
            feature_changes,
            "Frame features changed from the dataset's preset (--features or the grid)",
        ),
        episodes_note(records),
        nonfinite_note(records),
        zero_frames_note(records),
        degenerate_interval_note(records),
    ]
    return " ".join(n for n in notes if n)


def zero_frames_note(records: list[ResultRecord]) -> str:
    """``"Test videos with all-zero frame features (padding?): 3 in toy."``, per dataset
    whose records counted such videos (:func:`fsarbench.guards.zero_frame_videos`): a
    number made partly on frames with no direction is named where it is shown; ``""``
    when none counted any."""
    found: dict[str, int] = {}
    for r in records:
        if r.zero_frame_videos:
            found[r.dataset] = max(found.get(r.dataset, 0), r.zero_frame_videos)
    if not found:
        return ""
    parts = ", ".join(f"{n} in {d}" for d, n in sorted(found.items()))
    return f"Test videos with all-zero frame features (padding?): {parts}."


def degenerate_interval_note(records: list[ResultRecord]) -> str:
    """``"Not a 95% interval: otam (toy 5-way 1-shot): every one of its 40 episodes was
    perfect, ..."``, for each table cell (a record, or its training seeds pooled as the
    tables pool them) whose accuracy sits where its ``±`` says nothing
    (:func:`fsarbench.stats.bounds.interval_caveat`); ``""`` when none does."""
    parts = []
    entries = sorted(
        group_entries(records),
        key=lambda e: (e.system, e.setting.dataset, e.setting.way, e.setting.shot),
    )
    for e in entries:
        first = e.records[0]
        caveat = interval_caveat(e.accuracy, e.ci95, first.std, first.episodes, len(e.records))
        if caveat:
            one_seed = len(e.records) == 1 and first.train_seed is not None
            seed = f", train seed {first.train_seed}" if one_seed else ""
            where = f"{e.setting.dataset} {e.setting.way}-way {e.setting.shot}-shot{seed}"
            parts.append(f"{e.system} ({where}): {caveat}")
    return f"Not a 95% interval: {'; '.join(parts)}." if parts else ""


def nonfinite_note(records: list[ResultRecord]) -> str:
    """``"NaN/inf logits counted as wrong answers (--nonfinite count_wrong): 120 of 1500
    queries of protonet (toy 5-way 1-shot)."``, naming every record evaluated so that has
    such queries; ``""`` when none has (the number was ranked and tabulated without a word
    that part of it is a method's NaN output)."""
    hit = [r for r in records if r.nonfinite_queries]
    if not hit:
        return ""
    parts = [
        f"{r.nonfinite_queries} of {r.episodes * r.way * r.queries} queries of {r.method} "
        f"({r.dataset} {r.way}-way {r.shot}-shot"
        + (f", train seed {r.train_seed})" if r.train_seed is not None else ")")
        for r in sorted(hit, key=lambda r: (r.method, r.dataset, r.way, r.shot))
    ]
    return (
        "NaN/inf logits counted as wrong answers (--nonfinite count_wrong): "
        + "; ".join(parts)
        + "."
    )


def episodes_note(records: list[ResultRecord]) -> str:
    """``"Mixed test episodes, ...: cells use 10000 episodes, ... except: episodes=2000 for
    trx."``: where ``records`` mix test protocols (:func:`~fsarbench.report.episode_protocol.
    mixes_protocols`), the records whose test episodes (count, episode seed, queries per
    class) are not the ones most of them share, named as :func:`recipe_changes_text` names a
    changed recipe; ``""`` when they do not mix."""
    reference = reference_protocol(records)
    if reference is None or not mixes_protocols(records):
        return ""
    return _note(
        records,
        functools.partial(episode_changes, reference=reference),
        "Mixed test episodes, not comparable cell by cell (run --episodes/--seed): cells use "
        f"{reference.label} except",
    )


def _note(records: list[ResultRecord], changes_of, what: str) -> str:
    """One sentence: each change and whom it applies to, a method where all its records
    have it, else the method's settings that do (a row can mix a re-run cell with default
    ones)."""
    changed: dict[str, list[ResultRecord]] = {}
    for r in records:
        changes = changes_of(r)
        if changes:
            text = ", ".join(f"{k}={_show(v)}" for k, v in changes.items())
            changed.setdefault(text, []).append(r)
    if not changed:
        return ""
    everyone = {r.method for r in records}
    parts = []
    for text, recs in sorted(changed.items()):
        names = {r.method for r in recs}
        if names == everyone and len(recs) == len(records):
            parts.append(f"{text} for every method")
            continue
        whom = []
        for name in sorted(names):
            own = [r for r in recs if r.method == name]
            if len(own) == sum(r.method == name for r in records):
                whom.append(name)
            else:
                whom.append(f"{name} ({', '.join(_settings(own, records))})")
        parts.append(f"{text} for {', '.join(whom)}")
    return f"{what}: " + "; ".join(parts) + "."


def _settings(own: list[ResultRecord], records: list[ResultRecord]) -> list[str]:
    """``"5-way 1-shot"`` per setting of ``own``, led by the dataset where ``records`` span
    several (a paper table's columns are datasets) and followed by the episode seed where
    they hold several."""
    datasets = len({r.dataset for r in records}) > 1
    seeds = len({r.seed for r in records}) > 1
    found = sorted({(r.dataset, r.way, r.shot, r.seed) for r in own})
    return [
        f"{f'{d} ' if datasets else ''}{w}-way {k}-shot{f' on episode seed {s}' if seeds else ''}"
        for d, w, k, s in found
    ]


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)
