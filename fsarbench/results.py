"""Result records: one JSON per evaluated cell plus its per-query records, written atomically.

A results directory holds ``records/<cell>.json`` (metadata and numbers),
``records/<cell>.queries.csv.gz`` (per-query rows for paired statistics) and a
``summary.csv`` rebuilt from the records. Nothing is ever parsed back out of logs.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fsarbench.evaluate import EvalResult
from fsarbench.interrupts import raise_if_interrupted
from fsarbench.io import (
    atomic_write_json,
    atomic_write_text,
    json_bytes,
    stable_hash,
    staged_write,
)
from fsarbench.provenance import stale_code
from fsarbench.stats.intervals import INTERVALS, mean_and_halfwidth
from fsarbench.version import code_version

__all__ = [
    "ResultRecord",
    "make_record",
    "record_config_hash",
    "save_result",
    "rewrite_record",
    "record_folders",
    "supersede_older_copies",
    "load_record",
    "load_records",
    "load_queries",
    "queries_match",
    "query_rows_problem",
    "rows_give_record",
    "UnreadableRecordError",
    "newest_per_cell",
    "created_time",
    "write_summary",
    "cell_id",
    "SUMMARY_COLUMNS",
    "supersede",
    "record_origin",
    "rerun_reason",
    "stale_reasons",
    "SUPERSEDED_DIR",
    "OUTSIDE_TAG",
]

#: Record tag of an outside result: added from a verified bundle (``leaderboard --add``),
#: not run in this folder; its value names the bundle (see docs/bundles.md).
OUTSIDE_TAG = "outside"

log = logging.getLogger(__name__)

#: Where records replaced by a newer record of the same setting are moved (kept, not read).
SUPERSEDED_DIR = "superseded"


@dataclass
class ResultRecord:
    """Everything that made one number, and the number.

    ``spread`` names what ``ci95`` is (a CI half-width over episodes, never a seed std);
    ``seed_std`` (when several training seeds were run) is reported separately.
    """

    method: str
    dataset: str
    split_variant: str
    split: str
    track: str
    way: int
    shot: int
    queries: int
    episodes: int
    seed: int
    accuracy: float
    ci95: float
    std: float
    spread: str
    manifest_hash: str
    config_hash: str
    code_version: str
    train_seed: int | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    per_class_accuracy: dict[str, float] = field(default_factory=dict)
    skipped_videos: list[str] = field(default_factory=list)
    seconds: float = 0.0
    created: str = ""
    tags: dict[str, Any] = field(default_factory=dict)
    code_digest: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    nonfinite_policy: str = "error"
    nonfinite_queries: int = 0
    stale_accepted: list[str] = field(default_factory=list)
    protocol: str = "seed"
    train_way: int | None = None
    train_shot: int | None = None
    compute: dict[str, Any] = field(default_factory=dict)  # fsarbench.environment
    # what the training behind the model ended with (TrainResult.summary(): steps per stage,
    # val-selected step and accuracy, loss trend); {} for a record of no training run here
    training: dict[str, Any] = field(default_factory=dict)
    # test videos whose features hold an all-zero frame (fsarbench.guards.zero_frame_videos)
    zero_frame_videos: int = 0

    @property
    def episode_shot(self) -> int | None:
        """The shot of the episodes the model was trained on: its recipe's ``train_shot``
        when set (CLIP-FSAR's 5-shot model trains on 1-shot tasks), else ``train_shot`` (the
        shot the model was trained for, which records and settings keep apart)."""
        recipe = self.recipe or {}
        inner = recipe.get("recipe") if self.track == "finetune" else recipe
        return (inner or {}).get("train_shot") or self.train_shot

    def trained_mark(self, shot: int) -> str:
        """`` [trained K-shot]`` when this record's model was trained for another shot than
        ``shot`` (shared across shots), `` [trained on K-shot episodes]`` when it was trained
        for ``shot`` on episodes of another (a recipe's ``train_shot``); ``""`` otherwise."""
        if self.train_shot is not None and self.train_shot != shot:
            return f" [trained {self.train_shot}-shot]"
        if self.episode_shot is not None and self.episode_shot != shot:
            return f" [trained on {self.episode_shot}-shot episodes]"
        return ""

    @property
    def setting(self) -> tuple:
        """What one number of a results folder answers; two records of one setting made
        with other configs never stand side by side (the older is superseded). A variant
        (``tags["variant_label"]``, e.g. an ``eval`` without a checkpoint) and another split
        answer other questions: a run never supersedes them, nor they a run's record. So
        does a model trained at another shot than the cell's (``--share-model-across-shots``):
        its 5-shot record superseded the per-shot model's, one training seed at a time."""
        shared = self.train_shot if self.train_shot not in (None, self.shot) else None
        return (
            self.method,
            self.dataset,
            self.split_variant,
            self.track,
            self.protocol,
            self.way,
            self.shot,
            self.queries,
            self.seed,
            self.train_seed,
            self.split,
            str(self.tags.get("variant_label") or ""),
            shared,
        )

    @property
    def cell(self) -> str:
        return cell_id(
            self.method, self.dataset, self.track, self.way, self.shot, self.seed, self.config_hash
        )


SUMMARY_COLUMNS = [
    "method",
    "dataset",
    "split_variant",
    "track",
    "protocol",
    "way",
    "shot",
    "train_way",
    "train_shot",
    "queries",
    "episodes",
    "seed",
    "train_seed",
    "accuracy",
    "ci95",
    "std",
    "spread",
    "manifest_hash",
    "config_hash",
    "code_digest",
    "code_version",
    "nonfinite_queries",
    "stale",
    "variant",
]


def cell_id(
    method: str, dataset: str, track: str, way: int, shot: int, seed: int, config_hash: str
) -> str:
    """File-system-safe identifier of one evaluated cell."""
    raw = f"{method}__{dataset}__{track}__{way}w{shot}s__seed{seed}__{config_hash[:8]}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", raw)


def record_config_hash(
    hparams: dict[str, Any],
    recipe: dict[str, Any],
    features: dict[str, Any],
    train_seed: int | None,
    track: str,
) -> str:
    """Hash of everything besides the episodes that made a number."""
    return stable_hash(
        {
            "hparams": hparams,
            "recipe": recipe,
            "features": features,
            "train_seed": train_seed,
            "track": track,
        }
    )


def make_record(
    result: EvalResult,
    *,
    method: str,
    dataset: str,
    split_variant: str,
    manifest,
    track: str = "frozen",
    split: str = "test",
    hparams: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    features: dict[str, Any] | None = None,
    train_seed: int | None = None,
    class_names: list[str] | None = None,
    skipped_videos: list[str] | None = None,
    tags: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    protocol: str = "seed",
    train_way: int | None = None,
    train_shot: int | None = None,
    compute: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> ResultRecord:
    """A :class:`ResultRecord` for ``result`` with the metadata that produced it
    (``train_way``/``train_shot``: the episodes the evaluated model was trained on;
    ``compute``: :func:`fsarbench.environment.compute_environment` of the device;
    ``training``: :meth:`fsarbench.training.loop.TrainResult.summary` of its model)."""
    hparams, recipe, features = hparams or {}, recipe or {}, features or {}
    config_hash = record_config_hash(hparams, recipe, features, train_seed, track)
    per_class = {
        (class_names[c] if class_names else str(c)): round(a, 4)
        for c, a in result.per_class_accuracy.items()
    }
    spec = manifest.spec
    return ResultRecord(
        method=method,
        dataset=dataset,
        split_variant=split_variant,
        split=split,
        track=track,
        way=spec.way,
        shot=spec.shot,
        queries=spec.queries,
        episodes=result.episodes,
        seed=spec.seed,
        accuracy=round(result.accuracy, 6),
        ci95=round(result.ci95, 6),
        std=round(result.std, 6),
        spread=result.spread_name,
        manifest_hash=result.manifest_hash,
        config_hash=config_hash,
        code_version=code_version(),
        train_seed=train_seed,
        hparams=hparams,
        recipe=recipe,
        features=features,
        per_class_accuracy=per_class,
        skipped_videos=list(skipped_videos or []),
        seconds=round(result.seconds, 3),
        # to the microsecond: the stamp tells copies of a cell apart (rows beside a record,
        # an old copy superseded), and a cell re-run within a second had the old one's
        created=datetime.now().astimezone().strftime("%Y-%m-%dT%H:%M:%S.%f%z"),
        tags=dict(tags or {}),
        code_digest=str((provenance or {}).get("code_digest", "")),
        provenance=dict(provenance or {}),
        nonfinite_policy=str(result.extra.get("nonfinite_policy", "error")),
        nonfinite_queries=int(result.extra.get("nonfinite_queries", 0)),
        protocol=protocol,
        train_way=train_way,
        train_shot=train_shot,
        compute=_compute(result, compute),
        training=dict(training or {}),
        zero_frame_videos=int(result.extra.get("zero_frame_videos", 0)),
    )


def _compute(result: EvalResult, compute: dict[str, Any] | None) -> dict[str, Any]:
    """What the result was computed on, the episode batch the evaluator used (it never
    changes a number; recorded so that timings can be compared) and the autocast dtype of
    evaluation (``"off"``: float32)."""
    out = dict(compute or {})
    if "batch_episodes" in result.extra:
        out["batch_episodes"] = int(result.extra["batch_episodes"])
    if "autocast" in result.extra:
        out["autocast"] = str(result.extra["autocast"])
    return out


def _queries_csv_gz(records: dict[str, np.ndarray]) -> bytes:
    import pandas as pd

    text = pd.DataFrame(records).to_csv(index=False)
    buf = io.BytesIO()
    # level 1: 40x faster than gzip's 9 on 10,000-episode records, files ~15% larger
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=1) as gz:
        gz.write(text.encode())
    return buf.getvalue()


def save_result(
    out_dir: str | Path, record: ResultRecord, result: EvalResult | None = None
) -> Path:
    """Write ``record`` (and the per-query rows of ``result``) under ``out_dir/records``; a
    record of the same cell already there is moved to ``out_dir/superseded``, with a
    warning when it was evaluated on other test episodes (the cell id does not name the
    episode count: 'eval --episodes 400' replaced a 500-episode record without a word).

    The new files are written in full before the old record moves: a write that fails (a
    full disk) leaves the old record in place (it was moved first, and the cell had none)."""
    rec_dir = Path(out_dir) / "records"
    path = rec_dir / f"{record.cell}.json"
    files = {path: json_bytes(dataclasses.asdict(record))}
    if result is not None:
        files[rec_dir / f"{record.cell}.queries.csv.gz"] = _queries_csv_gz(result.records)
    staged: dict[Path, Path] = {}
    try:
        for final, data in files.items():
            staged[final] = staged_write(final, data)
        with records_held(out_dir):
            _supersede_replaced(out_dir, record)
            for final in sorted(staged, key=lambda p: p.suffix == ".json"):  # the JSON last
                os.replace(staged.pop(final), final)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    return path


def _supersede_replaced(out_dir: str | Path, record: ResultRecord) -> None:
    path = Path(out_dir) / "records" / f"{record.cell}.json"
    try:
        old = load_record(path)
    except (OSError, UnreadableRecordError):  # none, or nothing a reader could use
        return
    if old.created == record.created:
        return
    if (old.episodes, old.queries, old.manifest_hash) != (
        record.episodes,
        record.queries,
        record.manifest_hash,
    ):
        log.warning(
            "%s replaces a record of the same cell on other test episodes (%d episodes, "
            "%.3f%%); the old one is moved to %s/",
            record.cell,
            old.episodes,
            old.accuracy,
            SUPERSEDED_DIR,
        )
    elif record_origin(old) != record_origin(record):  # an eval in a run's folder, or back
        log.warning(
            "%s: this %s record replaces the %s record of the same cell (%.3f%% ± %.3f); the "
            "old one is moved to %s/",
            record.cell,
            record_origin(record),
            record_origin(old),
            old.accuracy,
            old.ci95,
            SUPERSEDED_DIR,
        )
    _move_superseded(out_dir, old)


def record_origin(record: ResultRecord) -> str:
    """``"run"`` for a record a ``run`` wrote (its provenance holds the configuration
    ``run`` compares before reusing it), else ``"train/eval"``."""
    return "run" if "config_hash" in record.provenance else "train/eval"


def rerun_reason(stored: ResultRecord, diff: list[str]) -> str:
    """Why ``run`` evaluates a cell again whose ``stored`` record differs from what it
    would make by ``diff`` (:func:`~fsarbench.provenance.provenance_diff`): a ``train`` or
    ``eval`` record keeps no run configuration, and listing its every field as ``None ->
    ...`` read as a damaged record."""
    if record_origin(stored) != "run":
        return (
            "its record was written by `train` or `eval`, which keep no run configuration "
            "to compare with this run's; the cell is evaluated again"
        )
    return "it was made with " + "; ".join(diff)


def rewrite_record(out_dir: str | Path, record: ResultRecord) -> None:
    """Write ``record`` back where it lies (``out_dir``'s ``records/`` or a shard
    sub-folder's, beside its per-query rows) after a change to its fields (e.g.
    ``stale_accepted``). Written to ``out_dir/records`` alone, a shard's record lost its rows
    there and the next run threw it away."""
    folders = record_folders(out_dir, record) or [Path(out_dir) / "records"]
    for folder in folders:
        atomic_write_json(folder / f"{record.cell}.json", dataclasses.asdict(record))


class UnreadableRecordError(ValueError):
    """A record file that is not a record (truncated, hand-edited, another format)."""


def load_record(path: str | Path) -> ResultRecord:
    """One record file (fields this version does not know are ignored).

    Raises:
        UnreadableRecordError: naming the file.
    """
    names = {f.name for f in dataclasses.fields(ResultRecord)}
    try:
        data = json.loads(Path(path).read_text())
        record = ResultRecord(**{k: v for k, v in data.items() if k in names})
        _check_field_types(record)
        return record
    except (ValueError, TypeError, AttributeError) as err:
        raise UnreadableRecordError(f"record {path} cannot be read ({err})") from None


#: The JSON types each kind of record field holds (``bool`` is not a number here).
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "dict": (dict,),
    "list": (list,),
}


def _check_field_types(record: ResultRecord) -> None:
    """Raise ``TypeError`` naming the first field whose value is not of its declared kind
    (an accuracy edited to ``null`` or ``"71.5"`` stopped every report with a traceback)."""
    for f in dataclasses.fields(record):
        declared = str(f.type)
        value = getattr(record, f.name)
        if value is None and declared.endswith("| None"):
            continue
        kind, _, inner = declared.removesuffix(" | None").removesuffix("]").partition("[")
        _check_json_kind(repr(f.name), value, kind)
        # the contents where they are declared (`dict[str, float]`, `list[str]`)
        if kind == "dict" and inner.startswith("str, ") and inner != "str, Any":
            for key, item in value.items():
                _check_json_kind(f"{f.name}[{key!r}]", item, inner.removeprefix("str, "))
        elif kind == "list" and inner in _JSON_TYPES:
            for i, item in enumerate(value):
                _check_json_kind(f"{f.name}[{i}]", item, inner)


def _check_json_kind(name: str, value: Any, kind: str) -> None:
    """Raise ``TypeError`` where ``value`` (what ``name`` says, as printed) is not a JSON
    ``kind``."""
    types = _JSON_TYPES.get(kind)
    if types is not None and (isinstance(value, bool) or not isinstance(value, types)):
        raise TypeError(f"its {name} is {value!r}, not a JSON {kind}")


def load_records(out_dir: str | Path, *, unreadable: list[str] | None = None) -> list[ResultRecord]:
    """Every record under ``out_dir`` (searched recursively, so shards merge by themselves).
    An unreadable record file is left out with a warning naming it (a run then evaluates its
    cell again) instead of stopping every command that reads the folder; with
    ``unreadable``, the reason is also appended there, for a report to print where its reader
    looks (a comparison over fewer settings than the folder holds adjusts for fewer tests)."""
    records = []
    for path in sorted(Path(out_dir).rglob("records/*.json")):
        try:
            records.append(load_record(path))
        except UnreadableRecordError as err:
            reason = f"{err}; delete or restore it (a run re-evaluates the cell)"
            if reason not in _WARNED:  # run reads the folder after every cell: warn once
                _WARNED.add(reason)
                log.warning("%s; left out", reason)
            if unreadable is not None:
                unreadable.append(reason)
    return records


def load_queries(out_dir: str | Path, record: ResultRecord):
    """Per-query rows of ``record`` as a DataFrame (episode, query, ..., correct).

    A cell can be recorded in several sub-folders (shards, copies, re-runs); the rows read
    are those beside the JSON record written with ``record`` (same ``created`` stamp), never
    another copy's.
    """
    import pandas as pd

    for folder in record_folders(out_dir, record):
        path = folder / f"{record.cell}.queries.csv.gz"
        if path.exists():
            return pd.read_csv(path)
    copies = len(list(Path(out_dir).rglob(f"records/{record.cell}.queries.csv.gz")))
    if not copies:
        raise FileNotFoundError(f"no per-query records for {record.cell} under {out_dir}")
    raise FileNotFoundError(
        f"the per-query records of {record.cell} under {out_dir} ({copies} found) "
        f"belong to other copies of that cell, not to the one created {record.created}; "
        "re-evaluate the cell or remove the stale copies"
    )


def created_time(record: ResultRecord) -> datetime:
    """When ``record`` was made, comparable across time zones (its ``created`` stamp holds
    the writer's UTC offset); the earliest time for a record without a readable stamp."""
    for form in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):  # records before 2026-12-06
        try:
            return datetime.strptime(record.created, form)
        except ValueError:
            continue
    return datetime.min.replace(tzinfo=timezone.utc)


def queries_match(out_dir: str | Path, record: ResultRecord) -> bool:
    """Whether ``record``'s per-query rows (which every paired test reads) are present,
    readable, and give the record's accuracy (the mean over episodes of their per-episode
    accuracy, to 1e-6 %): a truncated file or a hand-edited number does not pass."""
    import pandas as pd

    for folder in record_folders(out_dir, record):
        try:
            rows = pd.read_csv(folder / f"{record.cell}.queries.csv.gz")
            if query_rows_problem(rows, record):
                return False
            per_episode = rows.groupby("episode")["correct"].mean()
        except (OSError, EOFError, ValueError, KeyError):
            raise_if_interrupted()  # pandas' parser reports a Ctrl-C inside it as ParserError
            return False
        return rows_give_record(per_episode.to_numpy(float), record)
    return False


def query_rows_problem(rows, record: ResultRecord) -> str:
    """Why per-query ``rows`` (a DataFrame with ``episode``, ``query`` and ``correct``)
    cannot be ``record``'s, in words; ``""`` when they can. They must hold each key
    ``(episode, query)`` of ``{0..E-1} x {0..Q-1}`` exactly once (``E = record.episodes``,
    ``Q = record.way * record.queries``, as the evaluator writes them) with a boolean
    ``correct``: per-episode accuracies alone passed a row moved between two all-correct
    episodes (McNemar then paired other queries) or deleted from one (paired tests
    aborted on arrays of unequal length), and a blank ``correct`` read as right."""
    missing = [c for c in ("episode", "query", "correct") if c not in rows.columns]
    if missing:
        return f"no column {', '.join(missing)}"
    if len(rows) and rows["correct"].dtype != bool:
        return "a `correct` value is blank or not True/False"
    if len(rows) and not all(rows[c].dtype.kind in "iu" for c in ("episode", "query")):
        return "an `episode` or `query` value is blank or not an integer"
    episodes, queries = int(record.episodes), int(record.way) * int(record.queries)
    ep, q = rows["episode"].to_numpy(np.int64), rows["query"].to_numpy(np.int64)
    if len(rows) != episodes * queries:
        return f"{len(rows)} rows, not {episodes} episodes x {queries} queries"
    if len(rows) and (ep.min() < 0 or ep.max() >= episodes or q.min() < 0 or q.max() >= queries):
        return f"an (episode, query) key lies outside {episodes} episodes x {queries} queries"
    if np.unique(ep * queries + q).size != len(rows):
        return "an (episode, query) key appears twice and another not at all"
    return ""


def rows_give_record(per_episode: np.ndarray, record: ResultRecord) -> bool:
    """Whether per-episode accuracies (fractions, ``[E]``) give ``record``: its episode count,
    its accuracy to 1e-6 %, its ``spread`` (one of the evaluator's intervals: every version
    has written one) and its ``ci95`` and ``std`` to 1e-5 % (records keep 6 decimals): a
    hand-edited ``± 0.50`` over rows that give ``± 5.74`` was printed, and so was one whose
    ``spread`` was edited too (the check was skipped for a text it did not know)."""
    if len(per_episode) != record.episodes:
        return False
    if not abs(100 * float(per_episode.mean()) - record.accuracy) <= 1e-6:  # NaN: refused
        return False
    interval = {text: name for name, text in INTERVALS.items()}.get(record.spread)
    if interval is None:
        return False
    _, half, std = mean_and_halfwidth(np.asarray(per_episode, dtype=np.float64), interval)
    return _same_percent(100 * half, record.ci95) and _same_percent(100 * std, record.std)


def _same_percent(rows: float, recorded: float) -> bool:
    if math.isnan(rows) or math.isnan(recorded):
        return math.isnan(rows) and math.isnan(recorded)
    return abs(rows - recorded) <= 1e-5


def newest_per_cell(records: list[ResultRecord]) -> tuple[list[ResultRecord], list[str]]:
    """One record per cell id, the newest (``created``) where a cell is recorded several
    times (shards, copies, re-runs), in the order of ``records``; and the ids seen twice."""
    newest: dict[str, ResultRecord] = {}
    for r in records:
        if r.cell not in newest or created_time(r) > created_time(newest[r.cell]):
            newest[r.cell] = r
    twice = sorted(c for c, n in Counter(r.cell for r in records).items() if n > 1)
    return [r for r in records if newest[r.cell] is r], twice


def write_summary(out_dir: str | Path, records: list[ResultRecord] | None = None) -> Path:
    """Rebuild ``out_dir/summary.csv`` (one row per record, sorted) atomically. Outside
    results (added from bundles, ``tags["outside"]``) are not this folder's runs: left out.
    So is a record its per-query rows do not give (hand-edited, or its rows lost), with a
    warning naming it, as the paper tables and the report leave it out."""
    import pandas as pd

    from fsarbench.report.records import given_copies, records_given_by_rows

    records = load_records(out_dir) if records is None else records
    records = [r for r in records if not r.tags.get(OUTSIDE_TAG)]
    records, dropped = given_copies(out_dir, records)  # a damaged copy of a cell: another
    records, _ = newest_per_cell(records)  # a cell copied into shard folders: one row
    records, refused = records_given_by_rows(out_dir, records)
    warnings = [*dropped, *(f"left out of summary.csv and the tables: {r}" for _, r in refused)]
    for text in warnings:
        if text not in _WARNED:  # run rebuilds the summary after every cell: warn once
            _WARNED.add(text)
            log.warning("%s", text)
    derived = ("stale", "variant")
    rows = [{c: getattr(r, c) for c in SUMMARY_COLUMNS if c not in derived} for r in records]
    for row, r in zip(rows, records):
        row["stale"] = ";".join(stale_reasons(r))
        row["variant"] = str(r.tags.get("variant_label") or "")  # e.g. an untrained eval
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if len(frame):
        # every field of a record's setting: shards merged in any folder order give one file
        keys = ["dataset", "track", "protocol", "way", "shot", "method", "queries", "episodes"]
        frame = frame.sort_values(
            [*keys, "seed", "train_seed", "config_hash"], kind="stable", na_position="first"
        )
    path = Path(out_dir) / "summary.csv"
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def rebuild_summary(out_dir: str | Path) -> list[ResultRecord]:
    """Read every record of ``out_dir`` and rewrite ``summary.csv`` from them, holding the
    folder's summary lock: two runs finishing together each read the records and wrote,
    and the one that read first could write last, leaving the other's record out. Returns
    the records read."""
    from fsarbench.locks import held

    with held(Path(out_dir) / "locks" / "summary.lock", what="summary.csv"):
        records = load_records(out_dir)
        write_summary(out_dir, records)
    return records


#: Records already named as left out of summary.csv in this process.
_WARNED: set[str] = set()


def stale_reasons(record: ResultRecord) -> list[str]:
    """Why ``record`` no longer matches the installed code (``"code:<package>"`` each), or
    ``"accepted-stale"`` when a run reused it with ``--reuse-stale``; empty when current."""
    reasons = [f"code:{p}" for p in stale_code(record.provenance.get("code") or {})]
    return reasons + (["accepted-stale"] if record.stale_accepted else [])


@contextmanager
def records_held(out_dir: str | Path) -> Iterator[None]:
    """Hold ``out_dir``'s records lock. A record's files are moved to ``superseded/`` (and a
    new one put in place) under it, and a run reads the folder for its closing tables under
    it: a run reading while another moved a record printed, and could leave on disk, a
    table of a half-moved record ("no per-query records")."""
    from fsarbench.locks import held

    with held(Path(out_dir) / "locks" / "records.lock", what=f"the records of {out_dir}"):
        yield


def supersede(out_dir: str | Path, old: ResultRecord) -> bool:
    """Move ``old``'s files from the ``records/`` folder that holds them (``out_dir``'s own or
    a shard sub-folder's) to ``out_dir/superseded`` (kept for the curious, never read by
    tables, summary or leaderboard); whether any was moved (another run may have)."""
    with records_held(out_dir):
        return _move_superseded(out_dir, old)


def _move_superseded(out_dir: str | Path, old: ResultRecord) -> bool:
    """:func:`supersede` for a caller holding :func:`records_held`."""
    dst = Path(out_dir) / SUPERSEDED_DIR
    dst.mkdir(parents=True, exist_ok=True)
    _keep_earlier_superseded(dst, old)
    moved = False
    for src in record_folders(out_dir, old):
        for suffix in (".json", ".queries.csv.gz"):
            path = src / f"{old.cell}{suffix}"
            if path.exists():
                path.replace(dst / path.name)
                moved = True
    return moved


def _keep_earlier_superseded(dst: Path, old: ResultRecord) -> None:
    """Rename another record of ``old``'s cell already in ``dst`` (superseded before) to a
    name of its own, ``<cell>@<its created stamp>``: the next record superseded took its
    name and the earlier one was lost (a run's record replaced by an ``eval``'s, which a
    later run replaced). A copy of ``old`` itself (a shard's) is simply replaced."""
    cell = old.cell
    try:
        stamp = load_record(dst / f"{cell}.json").created
    except (OSError, UnreadableRecordError):
        return
    if stamp == old.created:
        return
    tag = "".join(ch for ch in stamp if ch.isdigit())
    for suffix in (".json", ".queries.csv.gz"):
        path = dst / f"{cell}{suffix}"
        if path.exists():
            path.replace(dst / f"{cell}@{tag}{suffix}")


def supersede_older_copies(out_dir: str | Path, record: ResultRecord) -> int:
    """Supersede every older copy of ``record``'s cell under ``out_dir`` (a shard
    sub-folder's, left from an earlier run): re-running a cell wrote the new record to
    ``records/`` and left the old copy to be ranked beside it, and ``bundle`` refused the
    folder. An outside result (``leaderboard --add``) of the same cell is not a copy: it
    stays (it went to ``superseded/`` without a word, and could not be added again). Returns
    how many were moved."""
    moved = 0
    for path in sorted(Path(out_dir).rglob(f"records/{record.cell}.json")):
        try:
            other = load_record(path)
        except UnreadableRecordError:
            continue
        if other.tags.get(OUTSIDE_TAG):  # an added bundle's result is its lab's, not a copy
            continue
        if other.created != record.created and created_time(other) < created_time(record):
            supersede(out_dir, other)
            moved += 1
    return moved


def record_folders(out_dir: str | Path, record: ResultRecord) -> list[Path]:
    """The ``records/`` folders under ``out_dir`` (sub-folders too: shards) that hold this
    very record (same cell and ``created`` stamp)."""
    found = []
    for path in sorted(Path(out_dir).rglob(f"records/{record.cell}.json")):
        try:
            same = load_record(path).created == record.created
        except (OSError, ValueError, TypeError):
            same = False
        if same:
            found.append(path.parent)
    return found
