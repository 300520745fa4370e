"""Provenance of one reported number, flattened into rows a page can show on click."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fsarbench.report.records import Entry
from fsarbench.results import ResultRecord, stale_reasons
from fsarbench.stats.rounding import fixed

__all__ = ["Provenance", "entry_provenance", "as_text"]


@dataclass(frozen=True)
class Provenance:
    """What made one number: ``fields`` shared by its records (``(name, text)`` rows) and one
    row per training seed (``(train seed, accuracy, config hash, code digest, created)``)."""

    title: str
    fields: list[tuple[str, str]]
    seeds: list[tuple[str, str, str, str, str]]


def as_text(value: Any) -> str:
    """``value`` as one line: mappings and lists as compact sorted JSON."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)
    return str(value)


def _weights(r: ResultRecord) -> str:
    backbone = r.features.get("backbone")
    weights = r.features.get("weights", r.provenance.get("weights"))
    parts = [str(p) for p in (backbone, weights) if p not in (None, "")]
    return " / ".join(parts)


def _shared(r: ResultRecord, entry: Entry) -> list[tuple[str, Any]]:
    seeds = [s.train_seed for s in entry.records]
    stale = sorted({why for rec in entry.records for why in stale_reasons(rec)})
    return [
        ("system", entry.system),
        ("method", r.method),
        ("dataset", f"{r.dataset} (split variant {r.split_variant}, {r.split} split)"),
        ("track", r.track),
        ("protocol", r.protocol),
        ("protocol details", r.provenance.get("protocol")),
        ("episodes", f"{r.episodes} × {r.way}-way {r.shot}-shot, {r.queries} query/class"),
        ("episode seed", r.seed),
        ("manifest hash", r.manifest_hash),
        ("config hash", r.config_hash if len(entry.records) == 1 else "per seed, below"),
        ("code digest", r.code_digest),
        ("code version", r.code_version),
        ("backbone / weights", _weights(r)),
        ("trained at", f"{r.train_way}-way {r.train_shot}-shot" if r.train_shot else ""),
        ("training seeds", ", ".join("-" if s is None else str(s) for s in seeds)),
        ("hyper-parameters", r.hparams),
        ("recipe", r.recipe),
        ("skipped videos", len(r.skipped_videos) or ""),
        ("stale", ", ".join(stale)),
        ("tags", r.tags),
    ]


def entry_provenance(entry: Entry) -> Provenance:
    """Provenance rows of ``entry`` (empty values left out)."""
    r = entry.records[0]
    fields = [(k, as_text(v)) for k, v in _shared(r, entry) if v not in (None, "", {}, [])]
    seeds = [
        (
            "-" if s.train_seed is None else str(s.train_seed),
            f"{fixed(s.accuracy)} ± {fixed(s.ci95)}",
            s.config_hash[:16],
            s.code_digest or "-",
            s.created,
        )
        for s in entry.records
    ]
    return Provenance(f"{entry.system} — {entry.setting.label}", fields, seeds)
