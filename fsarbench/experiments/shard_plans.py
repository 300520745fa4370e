"""What each ``run --shard I/N`` set out to do, so that ``merge`` can tell a missing shard.

A shard writes ``shards/I-of-N.json`` under its ``--out`` before it trains anything (its
cells, when it started) and marks it finished (or failed) at the end. ``merge`` reads every
such plan below its folder: a shard of N that left no plan, one that never finished, and
planned cells with no record are named, where before the merged tables just had fewer rows.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fsarbench.experiments.cells import Cell
from fsarbench.io import atomic_write_json
from fsarbench.results import ResultRecord

__all__ = ["SHARDS_DIR", "mark_shard_done", "shard_gaps", "write_shard_plan"]

SHARDS_DIR = "shards"
#: Planned cells named per shard in a gap's line (the count names them all).
EXAMPLES = 3


def _plan_path(out: Path, spec: str) -> Path:
    i, n = spec.split("/")
    return Path(out) / SHARDS_DIR / f"{i}-of-{n}.json"


def _setting(method, dataset, track, protocol, way, shot, seed, train_seed) -> str:
    """One cell's setting as records name it (method with overrides, data, episode and
    training seeds)."""
    return (
        f"{method} {dataset} {track}/{protocol} {way}-way {shot}-shot seed {seed} "
        f"train {train_seed}"
    )


def _cell_setting(c: Cell) -> str:
    return _setting(c.name, c.dataset, c.track, c.protocol, c.way, c.shot, c.seed, c.train_seed)


def _record_setting(r: ResultRecord) -> str:
    return _setting(r.method, r.dataset, r.track, r.protocol, r.way, r.shot, r.seed, r.train_seed)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_shard_plan(out: Path, spec: str, cells: Iterable[Cell], argv: list[str]) -> None:
    """Record that shard ``spec`` (``"I/N"``) of a run into ``out`` starts ``cells``."""
    settings = sorted({_cell_setting(c) for c in cells})
    plan = {"shard": spec, "cells": settings, "argv": argv, "started": _now(), "finished": None}
    atomic_write_json(_plan_path(out, spec), plan)


def mark_shard_done(out: Path, spec: str, *, failed: bool) -> None:
    """Stamp shard ``spec``'s plan in ``out`` as finished (``failed``: stopped by an error)."""
    path = _plan_path(out, spec)
    plan = _read(path)
    if plan is None:  # removed meanwhile: nothing to stamp
        return
    plan.update(finished=_now(), failed=failed)
    atomic_write_json(path, plan)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) and isinstance(plan.get("cells"), list) else None


def shard_gaps(out: Path, records: list[ResultRecord]) -> list[str]:
    """A line per gap among the shard plans below ``out``: shards of N with no plan, plans
    never finished or finished by an error, unreadable plans, and planned cells with no
    record among ``records``. ``[]`` where no shard left a plan (a plain run's folder)."""
    plans: dict[int, dict[int, list[tuple[Path, dict | None]]]] = {}
    for path in sorted(Path(out).rglob(f"{SHARDS_DIR}/*-of-*.json")):
        try:
            i, n = (int(x) for x in path.stem.split("-of-"))
        except ValueError:
            continue
        plans.setdefault(n, {}).setdefault(i, []).append((path, _read(path)))
    recorded = {_record_setting(r) for r in records}
    lines: list[str] = []
    for n, shards in sorted(plans.items()):
        absent = [f"{i}/{n}" for i in range(n) if i not in shards]
        if absent:
            lines.append(
                f"no plan of shard(s) {', '.join(absent)} below {out}: not run, or their "
                f"folder not copied here; their cells are missing from the tables"
            )
        for i, copies in sorted(shards.items()):
            for path, plan in copies:
                lines.extend(_plan_gaps(Path(out), path, plan, f"{i}/{n}", recorded))
    return lines


def _plan_gaps(out: Path, path: Path, plan: dict | None, spec: str, recorded: set[str]) -> list:
    where = path.relative_to(out).as_posix()
    if plan is None:
        return [f"shard {spec}'s plan {where} is unreadable"]
    lines = []
    if not plan.get("finished"):
        lines.append(f"shard {spec} ({where}) started {plan.get('started')} and has not finished")
    elif plan.get("failed"):
        lines.append(f"shard {spec} ({where}) stopped with an error at {plan['finished']}")
    lost = [c for c in plan["cells"] if c not in recorded]
    if lost:
        more = f", +{len(lost) - EXAMPLES} more" if len(lost) > EXAMPLES else ""
        lines.append(
            f"{len(lost)} of shard {spec}'s {len(plan['cells'])} planned cell(s) have no "
            f"record: {'; '.join(lost[:EXAMPLES])}{more}"
        )
    return lines
