"""The test episodes a record was evaluated on, and where a set of records mixes several.

A record's cell key (:attr:`~fsarbench.results.ResultRecord.cell`) holds the dataset, track,
way, shot and episode seed; the number of test episodes (``run --episodes``) and queries per
class are not in it, and tables lay out records of several episode seeds side by side. Shards
of one grid run with other ``--episodes``/``--seed`` (or on a machine that lost other test
videos) therefore merge into one folder without a word. This module names what defines a
record's test episodes (:class:`EpisodeProtocol`, plus the manifest of the videos drawn:
:func:`~fsarbench.report.records.episodes_key`), finds the records of a set that do not share
them (:func:`protocol_mismatches`, which ``merge`` refuses on) and says, for a table, which
cells used which (:func:`episode_changes`, :func:`cell_marker`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import NamedTuple

from fsarbench.report.records import EpisodesKey, episodes_key
from fsarbench.results import ResultRecord

__all__ = [
    "EpisodeProtocol",
    "protocol_of",
    "reference_protocol",
    "episode_changes",
    "cell_marker",
    "protocol_mismatches",
    "mixes_protocols",
    "Mismatch",
    "MixedEpisodesError",
]


class EpisodeProtocol(NamedTuple):
    """What ``run`` flags set about a record's test episodes beyond its setting's dataset,
    way and shot: ``--episodes``, ``--seed`` (the episode seed) and the queries per class."""

    episodes: int
    seed: int
    queries: int

    @property
    def label(self) -> str:
        """``"10000 episodes, episode seed 0, 1 query/class"``."""
        per_class = "query" if self.queries == 1 else "queries"
        return (
            f"{self.episodes} episodes, episode seed {self.seed}, {self.queries} {per_class}/class"
        )

    def changes_from(self, other: EpisodeProtocol) -> dict[str, int]:
        """``{field: value}`` of ``self`` that differ from ``other`` (``episodes``,
        ``episode_seed``, ``queries``); ``{}`` when equal."""
        names = {"episodes": "episodes", "seed": "episode_seed", "queries": "queries"}
        return {names[k]: v for k, v in self._asdict().items() if v != getattr(other, k)}


def protocol_of(record: ResultRecord) -> EpisodeProtocol:
    """The :class:`EpisodeProtocol` ``record`` was evaluated under."""
    return EpisodeProtocol(int(record.episodes), int(record.seed), int(record.queries))


def reference_protocol(records: list[ResultRecord]) -> EpisodeProtocol | None:
    """The protocol most of ``records`` share (ties: more episodes, then the lower episode
    seed, then fewer queries); ``None`` for no records. Tables mark the cells apart from it."""
    counts = Counter(protocol_of(r) for r in records)
    if not counts:
        return None
    return min(counts, key=lambda p: (-counts[p], -p.episodes, p.seed, p.queries))


def episode_changes(record: ResultRecord, reference: EpisodeProtocol | None) -> dict[str, int]:
    """``{field: value}`` of ``record``'s test episodes apart from ``reference`` (see
    :meth:`EpisodeProtocol.changes_from`); ``{}`` without a reference."""
    return {} if reference is None else protocol_of(record).changes_from(reference)


def cell_marker(records: list[ResultRecord], reference: EpisodeProtocol | None) -> str:
    """The marker a table cell of ``records`` (one entry: one protocol) carries when its test
    episodes are not ``reference``'s, e.g. ``" [2000 episodes, episode seed 3]"``; ``""``
    otherwise (and without a reference: a table that does not mix protocols)."""
    changes = episode_changes(records[0], reference) if records else {}
    words = {"episodes": "{} episodes", "episode_seed": "episode seed {}", "queries": "{} q/class"}
    return f" [{', '.join(words[k].format(v) for k, v in changes.items())}]" if changes else ""


class Mismatch(NamedTuple):
    """One way a set of records mixes test episodes: a sentence, and the records it names
    (by the protocol or pool they stand for)."""

    text: str
    groups: dict[str, list[ResultRecord]]


class MixedEpisodesError(ValueError):
    """Records to be reported together were evaluated on different test episodes."""


def _model_position(r: ResultRecord) -> tuple:
    """A record's place in the grid apart from its test episodes: the system (method and
    config) and setting (dataset, split, track, protocol, way, shot) and training seed."""
    return (
        r.method,
        r.config_hash,
        r.dataset,
        r.split_variant,
        r.track,
        r.protocol,
        r.way,
        r.shot,
        r.train_seed,
    )


def _protocol_sets(records: list[ResultRecord]) -> Mismatch | None:
    """Where grid positions were evaluated under different sets of protocols (a shard run
    with other ``--episodes``/``--seed``); ``None`` when every position has the same set (one
    protocol, or deliberately several episode seeds for every cell)."""
    sets: dict[tuple, set[EpisodeProtocol]] = defaultdict(set)
    for r in records:
        sets[_model_position(r)].add(protocol_of(r))
    kinds = {frozenset(s) for s in sets.values()}
    if len(kinds) < 2:
        return None
    groups: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in records:
        groups[" + ".join(p.label for p in sorted(sets[_model_position(r)]))].append(r)
    return Mismatch(
        "the cells were evaluated under different test protocols (run --episodes/--seed, "
        "queries per class)",
        dict(sorted(groups.items(), key=lambda kv: -len(kv[1]))),
    )


def mixes_protocols(records: list[ResultRecord]) -> bool:
    """Whether some of ``records``' grid positions were evaluated under other test protocols
    than the rest (not when every position has the same ones: deliberately several episode
    seeds for every cell are laid out in labelled columns, one protocol each)."""
    return _protocol_sets(records) is not None


def _pools(records: list[ResultRecord]) -> list[Mismatch]:
    """Settings (with their protocol) whose records drew their episodes from other videos:
    another manifest, test list or left-out test videos (data that differs between machines)."""
    by_setting: dict[tuple, dict[EpisodesKey, list[ResultRecord]]] = defaultdict(dict)
    for r in records:
        key = (r.dataset, r.split_variant, r.track, r.protocol, r.way, r.shot, protocol_of(r))
        by_setting[key].setdefault(episodes_key(r), []).append(r)
    out = []
    for (ds, _, track, _, way, shot, proto), pools in sorted(by_setting.items(), key=str):
        if len(pools) < 2:
            continue
        largest_first = sorted(pools.items(), key=lambda kv: -len(kv[1]))
        (first, _), (second, _) = largest_first[:2]
        groups = {f"pool {k.manifest_hash[:8]}": recs for k, recs in largest_first}
        out.append(
            Mismatch(
                f"{ds} {way}-way {shot}-shot [{track}] ({proto.label}) drew its episodes from "
                f"other videos in different records ({first.differences(second)})",
                groups,
            )
        )
    return out


def protocol_mismatches(records: list[ResultRecord]) -> list[Mismatch]:
    """Every way ``records`` mix test episodes that matters when their numbers stand side by
    side: grid positions evaluated under other protocols than the rest, and settings whose
    records drew the same protocol's episodes from other videos. Empty when consistent."""
    records = [r for r in records if r.split == "test"]  # e.g. an eval of a val cache
    mixed = _protocol_sets(records)
    return ([mixed] if mixed else []) + _pools(records)
