"""Verify a bundle: regenerate each record's official manifest, check the predictions cover
exactly its episodes and queries, and recompute every number from the predictions.

A bundle passes only when, for every record: its test list is the official one (md5), the
regenerated manifest's hash is the recorded one, the per-query rows are exactly that
manifest's (episode, query) pairs with its labels and classes, and accuracy, CI, std,
per-class accuracy and non-finite count recomputed with the evaluator's own code equal the
recorded ones (to the digits records keep). Anything else is refused, naming what differs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsarbench.bundles.errors import BundleVerificationError
from fsarbench.bundles.format import Bundle, BundledRecord, read_bundle
from fsarbench.bundles.pools import TestPool, official_pool, skipped_test_videos
from fsarbench.episode_streams import draw_test_manifest_fast
from fsarbench.episodes import MAX_EPISODES, Manifest, ManifestError
from fsarbench.evaluate import EvalResult, summarise_predictions
from fsarbench.guards import NONFINITE
from fsarbench.results import ResultRecord, record_config_hash
from fsarbench.stats.intervals import INTERVALS

__all__ = ["VerifiedRecord", "VerifiedBundle", "verify_bundle", "MAX_LISTED"]

#: Differences listed in a refusal's message (all are in ``error.differences``).
MAX_LISTED = 20
#: Per-column query mismatches named per record before "and N more".
_PER_COLUMN = 3
#: Digits records keep: accuracy, ci95 and std to 6 decimals, per-class accuracy to 4.
_TOLERANCE = {"accuracy": 1.01e-6, "ci95": 1.01e-6, "std": 1.01e-6, "per_class": 1.01e-4}


@dataclass
class VerifiedRecord:
    """A record that passed, its regenerated manifest and the recomputed result."""

    record: ResultRecord
    manifest: Manifest
    result: EvalResult


@dataclass
class VerifiedBundle:
    """``notes``: what passed but a reader should know (identical training seeds)."""

    bundle: Bundle
    records: list[VerifiedRecord]
    notes: list[str] = dataclasses.field(default_factory=list)


class _Regenerator:
    """Official pools and manifests, each built once per verification."""

    def __init__(self, splits_dir: Path | None) -> None:
        self.splits_dir = splits_dir
        self.pools: dict[tuple, TestPool] = {}
        self.manifests: dict[tuple, Manifest] = {}

    def pool(self, r: ResultRecord) -> TestPool:
        key = (r.dataset, r.split_variant, str(r.features.get("split_md5")))
        if key not in self.pools:
            self.pools[key] = official_pool(r, self.splits_dir)
        return self.pools[key]

    def manifest(self, r: ResultRecord) -> tuple[Manifest, list[str]]:
        """The manifest ``run`` draws for ``r`` and the test class names."""
        pool, skipped = self.pool(r), skipped_test_videos(r)
        key = (pool.variant, pool.md5, tuple(sorted(skipped)), r.way, r.shot, r.queries)
        key += (r.episodes, r.seed)
        if key not in self.manifests:
            self.manifests[key] = draw_test_manifest_fast(
                pool.kept(skipped, r.cell),
                split_variant=r.split_variant,
                way=r.way,
                shot=r.shot,
                queries=r.queries,
                episodes=r.episodes,
                seed=r.seed,
                class_names=pool.class_names,
            )
        return self.manifests[key], pool.class_names


def _interval_of(record: ResultRecord) -> str | None:
    return next((name for name, text in INTERVALS.items() if text == record.spread), None)


def _column_diffs(
    cell: str, field: str, expected: np.ndarray, found: np.ndarray, nq: int, what: str
) -> list[str]:
    """One line per (episode, query) where ``found`` differs (first few, then a count)."""
    bad = np.flatnonzero(expected != found)
    out = [
        f"{cell}: episode {i // nq} query {i % nq}: field {field}: {what} {expected[i]}, "
        f"bundle {found[i]}"
        for i in bad[:_PER_COLUMN]
    ]
    if len(bad) > _PER_COLUMN:
        out.append(f"{cell}: field {field}: and {len(bad) - _PER_COLUMN} more queries differ")
    return out


def _check_layout(cell: str, q: dict[str, np.ndarray], m: Manifest) -> list[str]:
    """The rows are exactly the manifest's (episode, query) pairs, in order."""
    e, nq = m.query.shape
    if len(q["episode"]) != e * nq:
        return [
            f"{cell}: per-query rows: the official manifest has {e} episodes x {nq} queries "
            f"= {e * nq} rows, the bundle has {len(q['episode'])}"
        ]
    diffs = []
    for field, expected in (
        ("episode", np.repeat(np.arange(e), nq)),
        ("query", np.tile(np.arange(nq), e)),
    ):
        diffs += _column_diffs(cell, field, expected, q[field], nq, "manifest order")
    return diffs


def _check_labels(cell: str, q: dict[str, np.ndarray], m: Manifest) -> list[str]:
    """Query labels and classes are the manifest's; predictions are labels of the episode."""
    nq = m.query.shape[1]
    true = np.ascontiguousarray(m.query_labels)
    true_class = m.classes[np.arange(m.episodes)[:, None], true]
    diffs = _column_diffs(cell, "true_label", true.ravel(), q["true_label"], nq, "manifest")
    diffs += _column_diffs(cell, "true_class", true_class.ravel(), q["true_class"], nq, "manifest")
    out_of_range = (q["predicted_label"] < -1) | (q["predicted_label"] >= m.way)
    for i in np.flatnonzero(out_of_range)[:_PER_COLUMN]:
        diffs.append(
            f"{cell}: episode {i // nq} query {i % nq}: field predicted_label: "
            f"{q['predicted_label'][i]} is not a label of a {m.way}-way episode (or -1)"
        )
    return diffs


def _recompute(q: dict[str, np.ndarray], m: Manifest, interval: str) -> EvalResult:
    """The evaluator's summary of the bundle's predictions (-1: a non-finite logit)."""
    predicted = q["predicted_label"].reshape(m.query.shape).astype(np.int64)
    predicted = np.where(predicted == -1, NONFINITE, predicted)
    return summarise_predictions(predicted, m, interval, 0.0)


def _number_diffs(
    r: ResultRecord, q: dict[str, np.ndarray], res: EvalResult, names: list[str], nq: int
) -> list[str]:
    """Recorded numbers and per-query columns against those recomputed from predictions."""
    diffs = []
    for field in ("predicted_class", "correct"):
        diffs += _column_diffs(
            r.cell, field, res.records[field], q[field], nq, "the predictions give"
        )
    for field in ("accuracy", "ci95", "std"):
        got, stored = round(getattr(res, field), 6), getattr(r, field)
        if not isinstance(stored, int | float) or not abs(got - stored) <= _TOLERANCE[field]:
            diffs.append(
                f"{r.cell}: field {field}: the predictions give {got:.6f}, the record says {stored}"
            )
    for field, got in (
        ("episodes", res.episodes),
        ("nonfinite_queries", res.extra["nonfinite_queries"]),
    ):
        stored = getattr(r, field)
        if stored != got:
            diffs.append(
                f"{r.cell}: field {field}: the predictions give {got}, the record says {stored}"
            )
    per_class = {names[c]: round(a, 4) for c, a in res.per_class_accuracy.items()}
    for name in sorted(set(per_class) | set(r.per_class_accuracy)):
        got, stored = per_class.get(name, math.nan), r.per_class_accuracy.get(name, math.nan)
        if not abs(got - float(stored)) <= _TOLERANCE["per_class"]:
            diffs.append(
                f"{r.cell}: field per_class_accuracy[{name!r}]: the predictions give {got}, "
                f"the record says {stored}"
            )
    return diffs


def _field_diffs(r: ResultRecord, method: str) -> list[str]:
    """Fields that must hold before any episode is drawn."""
    diffs = []
    if r.method != method:
        diffs.append(f"{r.cell}: field method: bundle of {method!r}, record of {r.method!r}")
    if r.split != "test":
        diffs.append(f"{r.cell}: field split: {r.split!r}; official episodes are test episodes")
    if _interval_of(r) is None:
        diffs.append(f"{r.cell}: field spread: {r.spread!r} is none of the evaluator's intervals")
    own = record_config_hash(r.hparams, r.recipe, r.features, r.train_seed, r.track)
    if r.config_hash != own:
        diffs.append(
            f"{r.cell}: field config_hash: its hyper-parameters, recipe, features, training "
            f"seed and track give {own}, the record says {r.config_hash}"
        )
    return diffs


def _count_diffs(r: ResultRecord, q: dict[str, np.ndarray]) -> list[str]:
    """The record's episode count against the evaluator's cap and its own rows, before any
    episode is drawn: 'episodes: 1000000000' drew until memory ran out."""
    if not 1 <= r.episodes <= MAX_EPISODES:
        return [f"{r.cell}: field episodes: {r.episodes} is outside 1..{MAX_EPISODES}"]
    rows = r.episodes * r.way * r.queries
    if len(q["episode"]) != rows:
        return [
            f"{r.cell}: per-query rows: its {r.episodes} episodes x {r.way} way x "
            f"{r.queries} queries are {rows} rows, the bundle has {len(q['episode'])}"
        ]
    return []


def _identical_seeds(items: list[BundledRecord]) -> list[str]:
    """Notes on records of one cell and configuration, filed under several training seeds,
    whose predictions are the same query for query: their seed spread is 0 by construction
    (a method that does not train, or one evaluation filed under several seeds)."""
    groups: dict[tuple, list[BundledRecord]] = {}
    for item in items:
        r = item.record
        config = record_config_hash(r.hparams, r.recipe, r.features, None, r.track)
        groups.setdefault((r.dataset, r.way, r.shot, r.manifest_hash, config), []).append(item)
    notes = []
    for group in groups.values():
        first = group[0].queries["predicted_label"]
        same = [i for i in group[1:] if np.array_equal(i.queries["predicted_label"], first)]
        if same:
            r = group[0].record
            seeds = sorted(str(i.record.train_seed) for i in [group[0], *same])
            notes.append(
                f"{r.dataset} {r.way}-way {r.shot}-shot: training seeds {', '.join(seeds)} "
                "predict the same label for every query: their spread over seeds is 0 (a "
                "method that does not train, or one evaluation filed under several seeds)"
            )
    return notes


def _verify_record(
    item: BundledRecord, method: str, regen: _Regenerator
) -> tuple[VerifiedRecord | None, list[str]]:
    r, q = item.record, item.queries
    diffs = _field_diffs(r, method) or _count_diffs(r, q)
    if diffs:
        return None, diffs
    try:
        m, names = regen.manifest(r)
    except BundleVerificationError as err:
        return None, [str(err)]
    except ManifestError as err:
        return None, [f"{r.cell}: the official test list cannot serve its episodes: {err}"]
    diffs = [
        f"{r.cell}: field {field}: the official manifest's hash is {m.hash}, the record says "
        f"{found}"
        for field, found in (
            ("manifest_hash", r.manifest_hash),
            ("provenance.manifest_hash", r.provenance.get("manifest_hash", m.hash)),
        )
        if found != m.hash
    ]
    diffs = diffs or _check_layout(r.cell, q, m)
    if diffs:
        return None, diffs
    diffs = _check_labels(r.cell, q, m)
    if diffs:
        return None, diffs
    result = _recompute(q, m, _interval_of(r))
    diffs = _number_diffs(r, q, result, names, m.query.shape[1])
    return (None if diffs else VerifiedRecord(r, m, result)), diffs


def verify_bundle(
    bundle: Bundle | str | Path, *, splits_dir: str | Path | None = None
) -> VerifiedBundle:
    """Verify every record of ``bundle`` (a path is read first).

    Raises:
        BundleFormatError: not a readable bundle of a supported version.
        BundleVerificationError: some episode or number differs; ``differences`` lists
            each (record, field, official/recomputed value, bundle value).
    """
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle)
    regen = _Regenerator(Path(splits_dir) if splits_dir is not None else None)
    verified, diffs = [], []
    for item in bundle.records:
        ok, found = _verify_record(item, bundle.method, regen)
        diffs += found
        if ok is not None:
            verified.append(ok)
    if diffs:
        listed = "\n  - ".join(diffs[:MAX_LISTED])
        more = f"\n  (and {len(diffs) - MAX_LISTED} more)" if len(diffs) > MAX_LISTED else ""
        raise BundleVerificationError(
            f"bundle of {bundle.method!r} refused: {len(diffs)} difference(s) between its "
            f"records and what their predictions give on the official episodes:\n  - "
            f"{listed}{more}",
            diffs,
        )
    return VerifiedBundle(bundle, verified, _identical_seeds(bundle.records))
