"""What a record's training recipe changed from the one ``run`` uses by default.

``--recipe`` and ``--option`` values enter a record's config hash but not its method name, so
a run with them replaces that cell's default record in its folder and tables would show the
number under the plain name. :func:`recipe_changes` recomputes the default recipe of the
record's method, dataset, track and protocol (at the record's own training way and shot) and
returns the fields that differ, for the tables to name. :func:`feature_changes` does the same
for a frozen-track record's frame features against its dataset's preset (``--features``, or a
grid's ``features:``), which also enter the config hash but not the name.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from fsarbench.config import ConfigError
from fsarbench.report.records import base_method_of
from fsarbench.results import ResultRecord

__all__ = ["feature_changes", "recipe_changes", "recipe_changes_text"]


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
    """The default recipe identity, flattened; ``None`` where it cannot be recomputed (a
    method or dataset this installation does not know, a track without recipes)."""
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
    """``{field: value}`` of ``record``'s recipe that differ from the default recipe (nested
    fields dotted: ``options.short``); ``{}`` when it is the default, records no recipe, or
    the default cannot be recomputed."""
    recorded = _flat(record.recipe or {})
    inner = "recipe." if record.track == "finetune" else ""
    way, shot = recorded.get(f"{inner}way"), recorded.get(f"{inner}shot")
    if not recorded or not isinstance(way, int) or not isinstance(shot, int):
        return {}
    default = _default_identity(
        base_method_of(record.method), record.dataset, record.track, record.protocol, way, shot
    )
    if default is None:
        return {}
    want = dict(default)
    return {k: v for k, v in sorted(recorded.items()) if k in want and want[k] != v}


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
    lr=0.01 for protonet."`` (``"every method"`` when all share the change); ``""`` when none
    did."""
    notes = [
        _note(records, recipe_changes, "Recipe changed from the default (--recipe/--option)"),
        _note(
            records,
            feature_changes,
            "Frame features changed from the dataset's preset (--features or the grid)",
        ),
    ]
    return " ".join(n for n in notes if n)


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
                settings = sorted({(r.way, r.shot) for r in own})
                whom.append(f"{name} ({', '.join(f'{w}-way {k}-shot' for w, k in settings)})")
        parts.append(f"{text} for {', '.join(whom)}")
    return f"{what}: " + "; ".join(parts) + "."


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)
