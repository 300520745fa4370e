"""Result records grouped for reporting: one :class:`Entry` per system and setting.

A *setting* is what makes records comparable (dataset, track, way, shot, episode seed); a
*system* is a method name plus, for ablation variants, the ``tags["variant_label"]`` of its
records. Records of one system and setting that differ only in ``train_seed`` form one entry.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fsarbench.data.datasets import is_synthetic
from fsarbench.interrupts import raise_if_interrupted
from fsarbench.io import stable_hash
from fsarbench.results import (
    OUTSIDE_TAG,
    ResultRecord,
    created_time,
    load_queries,
    load_records,
    query_rows_problem,
    record_folders,
    rows_give_record,
    stale_reasons,
)
from fsarbench.stats.intervals import pooled_halfwidth
from fsarbench.stats.rounding import fixed
from fsarbench.stats.seeds import SeedSpread, seed_mean_std

__all__ = [
    "Entry",
    "Setting",
    "UnpairedError",
    "QueryRowsError",
    "group_entries",
    "load_entries",
    "verified_entries",
    "records_given_by_rows",
    "given_copies",
    "LeftOut",
    "left_out_entry",
    "entry_text",
    "system_of",
    "mark_of",
    "config_key",
    "config_label",
    "episode_accuracy",
    "query_correct",
    "seed_matrix",
    "base_method_of",
    "overrides_of",
    "setting_of",
    "EpisodesKey",
    "episodes_key",
    "test_list_md5",
    "OUTSIDE_MARK",
    "STALE_MARK",
    "OUTSIDE_TAG",
]

log = logging.getLogger(__name__)


class UnpairedError(ValueError):
    """Two entries of one setting were evaluated on different episodes."""


class QueryRowsError(UnpairedError):
    """A record's per-query rows are unreadable or do not give its own accuracy (a kill
    between writing them and the record, a hand-edited file): no paired test reads them."""


@dataclass(frozen=True, order=True)
class Setting:
    """What makes two records comparable episode by episode."""

    dataset: str
    track: str
    way: int
    shot: int
    seed: int
    queries: int = 1
    episodes: int = 0
    protocol: str = "seed"

    @property
    def label(self) -> str:
        extra = "" if self.track == "frozen" else f" [{self.track}]"
        extra += "" if self.protocol == "seed" else f" [{self.protocol} protocol]"
        seed = "" if self.seed == 0 else f", episode seed {self.seed}"
        queries = "" if self.queries == 1 else f", {self.queries} queries/class"
        return (
            f"{self.dataset} {self.way}-way {self.shot}-shot{extra} "
            f"({self.episodes} episodes{queries}{seed})"
        )


#: Suffix of an outside result's system name (added from a result bundle): such records are
#: never grouped, pooled or confused with this folder's own runs of the method.
OUTSIDE_MARK = "†outside"
#: Suffix of the system name of a record made by other code than the installed one (or kept
#: with ``run --reuse-stale``): never pooled as a training seed with current records, and
#: marked wherever its number is printed. ``run`` refreshes such cells.
STALE_MARK = "‡stale"


def system_of(record: ResultRecord) -> str:
    """Name a record's system: ``tags["system"]``, else the method (+ ``[variant_label]``).
    An outside record is named from its method, whatever tags its bundle carried, plus
    :data:`OUTSIDE_MARK`; a stale one of this folder gets :data:`STALE_MARK`."""
    mark = mark_of(record)
    if record.tags.get("system") and mark != OUTSIDE_MARK:
        name = str(record.tags["system"])
    else:
        variant = record.tags.get("variant_label")
        name = f"{record.method} [{variant}]" if variant else record.method
    return f"{name} {mark}" if mark else name


def mark_of(record: ResultRecord) -> str:
    """The mark :func:`system_of` gives a record's name: :data:`OUTSIDE_MARK` for an outside
    record, else :data:`STALE_MARK` for a stale one, else ``""``."""
    if record.tags.get(OUTSIDE_TAG):
        return OUTSIDE_MARK
    return STALE_MARK if stale_reasons(record) else ""


def setting_of(record: ResultRecord) -> Setting:
    return Setting(
        record.dataset,
        record.track,
        record.way,
        record.shot,
        record.seed,
        record.queries,
        record.episodes,
        record.protocol,
    )


_OVERRIDES = re.compile(r"^(?P<base>[^\[]+)\[(?P<body>.*)\]$")


def base_method_of(name: str) -> str:
    """``"sgtm-otam[lambda_recon=0.1]"`` -> ``"sgtm-otam"`` (runner names carry overrides)."""
    m = _OVERRIDES.match(name)
    return m.group("base") if m else name


def overrides_of(name: str) -> dict[str, str]:
    """``"m[a=1,b=x]"`` -> ``{"a": "1", "b": "x"}``; ``{}`` for a plain method name."""
    m = _OVERRIDES.match(name)
    if not m:
        return {}
    pairs = (kv.split("=", 1) for kv in m.group("body").split(",") if "=" in kv)
    return {k.strip(): v.strip() for k, v in pairs}


@dataclass
class Entry:
    """One system in one setting, over one or more training seeds.

    Attributes:
        accuracy: mean accuracy in percent (mean over training seeds).
        ci95: 95% CI half-width in percent (pooled over seeds and episodes when several).
        seeds: spread over training seeds, or ``None`` with a single record.
    """

    system: str
    setting: Setting
    records: list[ResultRecord] = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.records[0].method

    @property
    def manifest_hash(self) -> str:
        return self.records[0].manifest_hash

    @property
    def episodes_key(self) -> EpisodesKey:
        """What makes two entries' episodes the same videos (:func:`episodes_key`)."""
        return episodes_key(self.records[0])

    @property
    def accuracy(self) -> float:
        return float(np.mean([r.accuracy for r in self.records]))

    @property
    def ci95(self) -> float:
        """Episode CI of the one record; with several training seeds, the pooled half-width
        from the seed and episode variance components (records' per-episode std), never a
        mean of per-seed CIs: ``sqrt(t(0.975, S-1)² var(seed accs)/S + t(0.975, E-1)²
        mean(std²)/E)`` (:func:`~fsarbench.stats.intervals.pooled_halfwidth`; the seed term
        has only ``S - 1`` degrees of freedom: ``1.96 * sqrt(...)`` covered the truth 80% of
        the time with 2 seeds, 87% with 3)."""
        if len(self.records) == 1:
            return float(self.records[0].ci95)
        accs = np.array([r.accuracy for r in self.records])
        episodes = self.setting.episodes  # one episode has no episode variance: NaN below
        seed_term = float(np.var(accs, ddof=1)) / len(accs)
        episode_term = float(np.mean([r.std**2 for r in self.records])) / episodes
        return pooled_halfwidth([(seed_term, len(accs) - 1), (episode_term, episodes - 1)])

    @property
    def seeds(self) -> SeedSpread | None:
        if len(self.records) < 2:
            return None
        return seed_mean_std([r.accuracy for r in self.records])

    @property
    def synthetic(self) -> bool:
        return any(r.tags.get("synthetic") or is_synthetic(r.dataset) for r in self.records)

    @property
    def mark(self) -> str:
        """The mark its system name carries (:func:`mark_of`): ``"‡stale"``, ``"†outside"``
        or ``""``."""
        return mark_of(self.records[0])

    @property
    def stale(self) -> bool:
        """Made by other code than the installed one, or kept with ``run --reuse-stale``
        (its system name carries :data:`STALE_MARK`)."""
        return any(mark_of(r) == STALE_MARK for r in self.records)

    @property
    def outside(self) -> bool:
        """Added from a verified bundle (``leaderboard --add``), not run in this folder."""
        return any(r.tags.get(OUTSIDE_TAG) for r in self.records)

    @property
    def tags(self) -> dict:
        return self.records[0].tags

    @property
    def is_variant(self) -> bool:
        """An hyper-parameter override, a tagged ablation variant, or a method registered as
        a variant of another (``register_method(..., variant_of=...)``, e.g. SGTM's Table 3/4
        rungs): left out of the leaderboard unless asked for."""
        if overrides_of(self.method) or "variant_label" in self.tags:
            return True
        from fsarbench.registry import UnknownMethodError, method_info

        try:
            return method_info(base_method_of(self.method)).variant_of is not None
        except UnknownMethodError:
            return False


class LeftOut(str):
    """Why an entry was left out of a report (the text), with that ``entry``, so that a
    table can name under it only what it would have shown; ``entry`` is ``None`` where
    no entry could be formed (an unreadable record file)."""

    entry: Entry | None

    def __new__(cls, text: str, entry: Entry | None = None) -> LeftOut:
        obj = super().__new__(cls, text)
        obj.entry = entry
        return obj


def left_out_entry(reason: str) -> Entry | None:
    """The entry a left-out ``reason`` names (a :class:`LeftOut`'s), or ``None`` for a plain
    reason (an unreadable record file: it may belong to any table or setting)."""
    return reason.entry if isinstance(reason, LeftOut) else None


def entry_text(e: Entry, decimals: int = 2) -> str:
    """``"acc ± ci"``, plus ``" (seeds ± std, n=S)"`` with several training seeds."""
    text = f"{fixed(e.accuracy, decimals)} ± {fixed(e.ci95, decimals)}"
    if e.seeds is not None:
        text += f" (seeds ± {fixed(e.seeds.std, decimals)}, n={e.seeds.n})"
    return text


def _dedupe_seeds(records: list[ResultRecord]) -> list[ResultRecord]:
    """One record per training seed (the newest), sorted by seed."""
    by_seed: dict[int | None, ResultRecord] = {}
    for r in sorted(records, key=created_time):
        if r.train_seed in by_seed:
            log.warning(
                "several records of %s for train_seed %s; using the newest (%s)",
                r.cell,
                r.train_seed,
                r.created,
            )
        by_seed[r.train_seed] = r
    return [by_seed[k] for k in sorted(by_seed, key=lambda s: (s is None, s or 0))]


def config_key(record: ResultRecord) -> str:
    """8 hex digits of what configures a record's system apart from its training seed:
    hyper-parameters, recipe, features, track, protocol and the way and shot its model was
    trained at. Records with different keys are different systems, never pooled as seeds of
    one. (The protocol was read from ``provenance``, which ``eval`` records do not carry: an
    eval of a run's own model split the run's seed pool into two systems.)"""
    return stable_hash(_configuration(record), 8)


def _configuration(record: ResultRecord) -> dict[str, Any]:
    return {
        "hparams": record.hparams,
        "recipe": record.recipe,
        "features": record.features,
        "track": record.track,
        "protocol": record.protocol,
        "trained at": [record.train_way, record.train_shot],
    }


#: Fields of a record's configuration that a run sets from the dataset's files (feature
#: cache keys, split-list md5s, the videos left out): left out of :func:`config_label`.
_FILE_FIELDS = ("cache_keys", "split_md5", "skipped_videos")
#: Fields a run sets from the cell's shot: :func:`config_label` writes ``"=shot"`` where
#: they equal it (a model trained at the cell's shot), else their value (one shared).
_SHOT_FIELDS = ("shot", "val_shot")


def config_label(record: ResultRecord) -> str:
    """8 hex digits naming a record's configuration the same in every column of a table:
    its :func:`config_key` fields with the dataset's file identities left out and the
    shot-decided ones (``shot``, ``val_shot``, the training shot, ``queries`` taken from
    ``queries_by_shot``) written relative to the record's shot. A system with several
    configurations is shown as ``name @<config label>`` in every setting (named apart only
    where it had several, one configuration was split over two rows of a table: ``otam @1a2b``
    at 1-shot beside a plain ``otam`` at 5-shot, which was one of the two). Two different
    configurations never share a label in one column; across columns a label is shared only
    by configurations that train the same way at their own shot."""
    config = _configuration(record)
    config["trained at"] = [record.train_way, _relative(record.train_shot, record.shot)]
    for key in ("recipe", "features"):
        config[key] = _shot_free(config[key], record.shot)
    return stable_hash(config, 8)


def _relative(value: Any, shot: int) -> Any:
    return "=shot" if value == shot else value


def _shot_free(value: Any, shot: int) -> Any:
    """``value`` (a recipe or features mapping, nested) for :func:`config_label`."""
    if not isinstance(value, dict):
        return value
    by_shot = value.get("queries_by_shot")
    out = {}
    for k, v in value.items():
        if k in _FILE_FIELDS:
            continue
        if k in _SHOT_FIELDS:
            v = _relative(v, shot)
        elif k == "queries" and isinstance(by_shot, list) and 0 < shot <= len(by_shot):
            v = "=queries_by_shot" if v == by_shot[shot - 1] else v
        out[k] = _shot_free(v, shot)
    return out


def left_out_test_videos(record: ResultRecord) -> tuple[str, ...]:
    """Ids of the test videos ``record``'s run left out (missing, unreadable, too short),
    sorted: its manifest indexes the remaining videos in split order. Entries read
    ``"test/<id>"`` or ``"test/<id>: <cause>"``."""
    out = set()
    for item in record.skipped_videos:
        split, _, rest = str(item).partition("/")
        if split == "test":
            out.add(rest.split(": ", 1)[0])
    return tuple(sorted(out))


def test_list_md5(record: ResultRecord) -> str:
    """md5 of the test split list ``record`` was evaluated on (``features.split_md5.test``,
    else ``provenance.data.split_md5.test``); ``""`` when the record does not say."""
    for source in (record.features, (record.provenance or {}).get("data") or {}):
        md5s = source.get("split_md5") if isinstance(source, dict) else None
        if isinstance(md5s, dict) and md5s.get("test"):
            return str(md5s["test"])
    return ""


class EpisodesKey(NamedTuple):
    """What makes two records' test episodes the same videos (:func:`episodes_key`)."""

    manifest_hash: str
    test_list_md5: str
    left_out: tuple[str, ...]

    def differences(self, other: EpisodesKey) -> str:
        """How ``self`` and ``other`` differ, in words (``""`` when equal)."""
        parts = []
        if self.manifest_hash != other.manifest_hash:
            parts.append(f"manifest hash {self.manifest_hash} vs {other.manifest_hash}")
        if self.test_list_md5 != other.test_list_md5:
            mine, theirs = self.test_list_md5 or "unrecorded", other.test_list_md5 or "unrecorded"
            parts.append(f"test list md5 {mine} vs {theirs}")
        if self.left_out != other.left_out:
            mine, theirs = ", ".join(self.left_out) or "none", ", ".join(other.left_out) or "none"
            parts.append(f"left-out test videos {mine} vs {theirs}")
        return "; ".join(parts)


def episodes_key(record: ResultRecord) -> EpisodesKey:
    """``(manifest hash, test list md5, left-out test videos)``. The manifest hash covers
    the class ids of the usable videos, not which videos they are: runs on another test
    list with the same class layout, or that each lost another video of one class, drew
    the same indices over other videos, so equal hashes alone do not make episodes paired."""
    return EpisodesKey(record.manifest_hash, test_list_md5(record), left_out_test_videos(record))


def group_entries(records: list[ResultRecord], *, left_out: list[str] | None = None) -> list[Entry]:
    """Group records into entries, sorted by setting then system. A system is a name plus its
    :func:`config_key`; where one name has records of several configs in a setting, each gets
    its own entry named ``"<name> @<config key>"``.

    Args:
        left_out: when given, an entry whose training seeds saw different manifests is left
            out and the reason appended here (so one bad entry does not stop a report of
            every other); without it, such an entry raises.

    Raises:
        UnpairedError: the training seeds of one entry saw different manifests (only
            without ``left_out``).
    """
    groups: dict[tuple[str, Setting, str], list[ResultRecord]] = {}
    for r in records:
        groups.setdefault((system_of(r), setting_of(r), config_key(r)), []).append(r)
    names = _config_names(groups)
    entries = []
    for (system, setting, key), recs in sorted(groups.items(), key=lambda kv: kv[0][1::-1]):
        recs = _dedupe_seeds(recs)
        name = names[(system, setting, key)]
        keys = sorted({episodes_key(r) for r in recs})
        if len(keys) > 1:
            reason = (
                f"{name} in {setting.label}: training seeds were evaluated on different "
                f"episodes ({keys[0].differences(keys[1])}); re-evaluate them on one manifest "
                "over one test pool"
            )
            if left_out is None:
                raise UnpairedError(reason)
            left_out.append(LeftOut(reason, Entry(name, setting, recs)))  # caller says so
            continue
        entries.append(Entry(name, setting, recs))
    return entries


def _config_names(groups: dict[tuple[str, Setting, str], list[ResultRecord]]) -> dict:
    """The entry name of each ``(system, setting, config key)`` group: the system where it
    has one configuration in every setting, else ``system @<config label>`` in every setting
    (:func:`config_label`); where two configurations of one setting differ only in what the
    shot decides (a model shared across shots beside one trained at the shot), their config
    keys tell them apart."""
    per_setting = Counter((system, setting) for system, setting, _ in groups)
    several = {system for (system, _), n in per_setting.items() if n > 1}
    labels = {g: config_label(recs[0]) for g, recs in groups.items() if g[0] in several}
    twins = Counter((system, setting, label) for (system, setting, _), label in labels.items())
    names = {
        g: f"{g[0]} @{label if twins[(*g[:2], label)] == 1 else g[2]}"
        for g, label in labels.items()
    }
    return {g: names.get(g, g[0]) for g in groups}


def load_entries(
    run_dir: str | Path, *, left_out: list[str] | None = None, verify_rows: bool = False
) -> list[Entry]:
    """Every entry of the records under ``run_dir`` (empty when there are none);
    ``left_out`` as in :func:`group_entries`, and it also receives the record files that
    cannot be read (without it they are left out with a log warning only). With
    ``verify_rows`` (``left_out`` required), entries whose records their per-query rows do
    not give are left out too (:func:`verified_entries`)."""
    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"results folder {path} does not exist")
    records, dropped = given_copies(path, load_records(path, unreadable=left_out))
    if left_out is not None:
        left_out += dropped
    entries = group_entries(records, left_out=left_out)
    if verify_rows:
        if left_out is None:
            raise ValueError("verify_rows needs a left_out list to report to")
        entries = verified_entries(path, entries, left_out)
    return entries


def verified_entries(run_dir: str | Path, entries: list[Entry], left_out: list[str]) -> list[Entry]:
    """``entries`` whose every record is given by its per-query rows (accuracy, ``±``, std,
    episode count); the others are left out with the reason appended to ``left_out``. For
    reports that print records' own numbers without pairing them (tables): a hand-edited
    record, or rows of another evaluation, is not printed as if it were checked."""
    kept = []
    for entry in entries:
        problems = [p for p in (_rows_verdict(run_dir, r) for r in entry.records) if p]
        if problems:
            left_out.append(
                LeftOut(f"{entry.system} in {entry.setting.label}: {problems[0]}", entry)
            )
            continue
        kept.append(entry)
    return kept


def records_given_by_rows(
    run_dir: str | Path, records: list[ResultRecord]
) -> tuple[list[ResultRecord], list[tuple[ResultRecord, str]]]:
    """``(kept, refused)``: the ``records`` their per-query rows give (accuracy, ``±``, std,
    episode count), and the others with the reason, for outputs that list records one by one
    (``summary.csv``, the per-dataset tables): a hand-edited record is never listed there
    while the paper tables and the report leave it out."""
    kept, refused = [], []
    for record in records:
        problem = _rows_verdict(run_dir, record)
        if problem:
            refused.append((record, f"{record.method} ({record.cell}): {problem}"))
        else:
            kept.append(record)
    return kept, refused


def given_copies(
    run_dir: str | Path, records: list[ResultRecord]
) -> tuple[list[ResultRecord], list[LeftOut]]:
    """``(kept, dropped)``: ``records`` less each copy of a cell (shards, re-runs: other
    ``created`` stamps) that its per-query rows do not give while another copy of the cell
    is given, so that the newest copy the rows give is used rather than the cell left out;
    and a :class:`LeftOut` per dropped copy, naming both copies' folders. Copies of one
    record (one stamp: a shard folder's copy of a file) are not checked, and an own record
    and an outside (bundle) one are never copies of each other. A cell with no given copy
    keeps its copies (the callers leave it out and say why)."""
    by_cell: dict[tuple[str, bool], list[ResultRecord]] = {}
    for r in records:
        by_cell.setdefault((r.cell, bool(r.tags.get(OUTSIDE_TAG))), []).append(r)
    dropped: dict[int, LeftOut] = {}
    for copies in by_cell.values():
        if len({r.created for r in copies}) < 2:
            continue
        verdicts = [_rows_verdict(run_dir, r) for r in copies]
        if all(verdicts) or not any(verdicts):
            continue
        used = max((r for r, v in zip(copies, verdicts) if not v), key=created_time)
        for r, why in zip(copies, verdicts):
            if why:
                note = (
                    f"{r.method} ({r.cell}): the copy in {_folder_of(run_dir, r)} (created "
                    f"{r.created}) is not given by its per-query rows ({why}); the copy in "
                    f"{_folder_of(run_dir, used)} (created {used.created}) is used"
                )
                dropped[id(r)] = LeftOut(note, Entry(system_of(r), setting_of(r), [r]))
    return [r for r in records if id(r) not in dropped], list(dropped.values())


def _folder_of(run_dir: str | Path, record: ResultRecord) -> str:
    """The results sub-folder holding ``record`` (``.`` for ``run_dir`` itself)."""
    folders = record_folders(run_dir, record)
    return str(folders[0].parent.relative_to(Path(run_dir))) if folders else "?"


def _rows_verdict(run_dir: str | Path, record: ResultRecord) -> str:
    """Why ``record``'s rows do not give it (``""`` when they do), kept per process under
    :func:`_query_arrays`' key without the arrays: past :data:`_QUERY_CACHE_SIZE` records
    the arrays' cache missed on every pass, and ``run`` rebuilds ``summary.csv`` after each
    cell (10 s a pass at 335 records)."""
    key = _query_key(run_dir, record)
    if key not in _VERDICT_CACHE:
        try:
            _query_arrays(run_dir, record)
            _VERDICT_CACHE[key] = ""
        except (QueryRowsError, FileNotFoundError) as err:
            _VERDICT_CACHE[key] = str(err)
    return _VERDICT_CACHE[key]


_VERDICT_CACHE: dict[tuple, str] = {}


_QUERY_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_QUERY_CACHE_SIZE = 256
_ROWS_FILES: dict[tuple, list[Path]] = {}


def _rows_signature(run_dir: str | Path, record: ResultRecord, where: tuple) -> tuple:
    """(path, size, mtime, inode) of each per-query rows file beside ``record``: rows
    edited or rewritten after a first read are read and checked again (the cache kept the
    first read's verdict for the life of the process)."""
    if where not in _ROWS_FILES:
        _ROWS_FILES[where] = [
            folder / f"{record.cell}.queries.csv.gz" for folder in record_folders(run_dir, record)
        ]
    signature = []
    for path in _ROWS_FILES[where]:
        try:
            st = path.stat()
            signature.append((str(path), st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            signature.append((str(path), None))
    return tuple(signature)


def _query_arrays(run_dir: str | Path, record: ResultRecord) -> tuple[np.ndarray, np.ndarray]:
    """``([E] episode accuracy, [Q] correctness)`` of one record, in (episode, query) order.

    The rows must hold every (episode, query) key of the record once
    (:func:`~fsarbench.results.query_rows_problem`) and give its numbers
    (:func:`~fsarbench.results.rows_give_record`), else :class:`QueryRowsError`. With the
    keys checked, position ``i`` of every record of one setting is the same query (episode
    ``i // Q``, query ``i % Q``), so the paired tests' positional pairing (McNemar) is
    pairing by key.

    Cached, as a leaderboard compares each record with several others; the record's
    ``created`` stamp, the numbers checked against the rows and the rows files' size and
    times are part of the key, so a re-written or edited record or rows file is read and
    checked again.
    """
    key = _query_key(run_dir, record)
    if key not in _QUERY_CACHE:
        frame = _read_query_rows(run_dir, record)
        problem = query_rows_problem(frame, record)
        if problem:
            raise QueryRowsError(
                f"the per-query rows of {record.cell} under {run_dir} are not one row per "
                f"query with a True/False `correct` ({problem}): a row was lost, moved or "
                f"edited; {_remedy(record)}"
            )
        episode = frame.groupby("episode", sort=True)["correct"].mean().to_numpy(float)
        if not rows_give_record(episode, record):
            raise QueryRowsError(
                f"the per-query rows of {record.cell} under {run_dir} give "
                f"{100 * episode.mean():.4f}% (episode std {100 * episode.std():.4f}) over "
                f"{len(episode)} episodes, its record {record.accuracy:.4f}% ± "
                f"{record.ci95:.4f} (std {record.std:.4f}) over {record.episodes}: the record "
                f"was edited or the rows belong to another evaluation; {_remedy(record)}"
            )
        if len(_QUERY_CACHE) >= _QUERY_CACHE_SIZE:
            _QUERY_CACHE.pop(next(iter(_QUERY_CACHE)))
        _QUERY_CACHE[key] = (episode, frame["correct"].to_numpy(bool))
    return _QUERY_CACHE[key]


def _query_key(run_dir: str | Path, record: ResultRecord) -> tuple:
    """What a cached reading of ``record``'s rows is valid for (see :func:`_query_arrays`)."""
    checked = (record.episodes, record.accuracy, record.ci95, record.std, record.spread)
    where = (str(Path(run_dir).resolve()), record.cell, record.created)
    return (*where, *checked, _rows_signature(run_dir, record, where))


def _read_query_rows(run_dir: str | Path, record: ResultRecord):
    """``record``'s per-query rows sorted by (episode, query); unreadable ones raise
    :class:`QueryRowsError` naming the cell."""
    import gzip
    import zlib

    import pandas as pd

    try:
        frame = load_queries(run_dir, record)
        return frame.sort_values(["episode", "query"], kind="stable")
    except (EOFError, gzip.BadGzipFile, zlib.error, pd.errors.ParserError, KeyError) as err:
        raise_if_interrupted()  # pandas' parser reports a Ctrl-C inside it as ParserError
        cause = f"{type(err).__name__}: {err}"
    except pd.errors.EmptyDataError:
        cause = "empty file"
    raise QueryRowsError(
        f"the per-query rows of {record.cell} under {run_dir} are unreadable ({cause}); "
        f"{_remedy(record)}"
    )


def _remedy(record: ResultRecord) -> str:
    """What to do about a record whose rows do not give it: re-run an own cell; an outside
    result cannot be re-run here, but its bundle can be added again."""
    mark = record.tags.get(OUTSIDE_TAG)
    if mark:
        name = mark.get("bundle", "BUNDLE") if isinstance(mark, dict) else "BUNDLE"
        return (
            f"it is an outside result, which cannot be re-run here: move its external/ folder "
            f"away and add its bundle ({name}, kept in that folder) again with 'python -m "
            "fsarbench leaderboard --runs RUNS --add BUNDLE', which verifies it"
        )
    return "re-run the cell (run re-evaluates it)"


def episode_accuracy(run_dir: str | Path, entry: Entry) -> np.ndarray:
    """``[E]`` per-episode accuracy (fraction) of ``entry``, averaged over its training seeds."""
    return np.mean(np.stack([_query_arrays(run_dir, r)[0] for r in entry.records]), axis=0)


def seed_matrix(run_dir: str | Path, entry: Entry) -> np.ndarray:
    """``[S, E]`` per-episode accuracy (fraction) of each training seed of ``entry``."""
    return np.stack([_query_arrays(run_dir, r)[0] for r in entry.records])


def query_correct(run_dir: str | Path, entry: Entry) -> list[np.ndarray]:
    """Per training seed, ``[Q]`` per-query correctness in (episode, query) order."""
    return [_query_arrays(run_dir, r)[1] for r in entry.records]
