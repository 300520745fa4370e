"""Run experiment cells: train each model once, evaluate every cell, record, summarise.

Cells already recorded in the output folder are skipped, models whose training finished are
reused, and an interrupted training or evaluation resumes where it stopped, so a killed
``run --all`` re-run gives the same ``summary.csv`` as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsarbench.environment import compute_environment
from fsarbench.episodes import Manifest, check_episode_count
from fsarbench.evaluate import POOL_KEY_PREFIX, evaluate
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.feasibility import check_cells
from fsarbench.experiments.manifest_cache import MANIFESTS_DIR, cached_test_manifest
from fsarbench.experiments.outputs import mark_outputs_out_of_date
from fsarbench.experiments.tracks import (
    DatasetFeatures,
    FinetuneTrack,
    FrozenTrack,
    TrackData,
    Trained,
    build_method,
)
from fsarbench.experiments.units import ModelUnit, unit_for
from fsarbench.io import remove_cut_writes, stable_hash
from fsarbench.locks import LockTimeout, held
from fsarbench.methods import FewShotMethod
from fsarbench.provenance import code_parts, pipeline_digest, provenance_diff
from fsarbench.results import (
    OUTSIDE_TAG,
    SUPERSEDED_DIR,
    ResultRecord,
    UnreadableRecordError,
    load_record,
    load_records,
    make_record,
    queries_match,
    rebuild_summary,
    record_config_hash,
    rerun_reason,
    rewrite_record,
    save_result,
    supersede,
    supersede_older_copies,
)

#: What a run's test-episode error tells the user, when a split turns out short only once
#: extracted (unreadable or too short videos left out): options ``run`` offers.
TEST_REMEDIES = {
    "way": "choose --ways up to {classes}",
    "videos": "choose --shots up to {max_shot} (the smallest class has {smallest} usable videos)",
    "videos_none": "the smallest class has {smallest} usable videos once unreadable or too "
    "short ones are left out: too few for any shot. Restore or replace those videos ('python "
    "-m fsarbench data check DATASET --root DIR' names each and why)",
}

#: Feature-preset fields that say how frames were sampled and transformed (the protocol).
PROTOCOL_FIELDS = ("num_frames", "resolution", "test_frames", "train_frames", "train_views")

__all__ = [
    "CellRunner",
    "DatasetFeatures",
    "FinetuneTrack",
    "FrozenTrack",
    "RunOptions",
    "build_method",
    "run_cells",
]

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    out_dir: Path
    episodes: int = 10_000
    queries: int = 1
    device: str = "cpu"
    progress: bool = True
    batch_episodes: int | None = None  # None: each head's measured best (evaluate)
    interval: str = "normal"
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    nonfinite: str = "error"
    reuse_stale: bool = False
    share_shots: bool = False

    def __post_init__(self) -> None:
        # a billion episodes filled memory while the first manifest was drawn
        check_episode_count(self.episodes, "RunOptions.episodes")


FeatureProvider = Callable[[str], DatasetFeatures]


@dataclass
class _Prepared:
    """A cell resolved against its track: the unit, recipe and untrained model."""

    track: Any
    data: TrackData
    unit: ModelUnit
    recipe: Any
    method: FewShotMethod
    slug: str


def _in_shard_folder(out_dir, record: ResultRecord) -> bool:
    """Whether ``record`` lies in a shard sub-folder's ``records/`` (not ``out_dir``'s own)."""
    return any(Path(out_dir).glob(f"*/**/records/{glob.escape(record.cell)}.json"))


class CellRunner:
    """Runs cells, keeping what later cells reuse: datasets' features, trained models (one
    per model unit) and their pair tables (one runner can serve several grids)."""

    def __init__(self, tracks: dict[str, Any] | FeatureProvider, options: RunOptions) -> None:
        if callable(tracks) and not isinstance(tracks, dict):
            provider = tracks
            tracks = {
                "frozen": FrozenTrack(
                    lambda dataset, protocol: provider(dataset),
                    recipe_overrides=options.recipe_overrides,
                    device=options.device,
                    progress=options.progress,
                )
            }
        self.tracks, self.opt = tracks, options
        self.built: dict[str, FewShotMethod] = {}
        #: records turned down for re-running (cell -> created stamp), not read back again
        self.rejected: dict[str, str] = {}
        #: (cell, created) of records whose per-query rows were checked against them
        self.verified: set[tuple[str, str]] = set()
        self.seconds: dict[str, float] = {}
        self.models: dict[str, Trained] = {}
        self.trained_units: list[ModelUnit] = []
        self.pair_tables: dict[str, dict] = {}
        self.manifests: dict[tuple, Manifest] = {}
        self.manifest_hashes: dict[int, str] = {}
        self.outputs_marked = False  # the folder's tables and report marked out of date
        # outside results (added from bundles) are never reused or superseded as own cells
        self.done = (
            {r.cell: r for r in load_records(options.out_dir) if not r.tags.get(OUTSIDE_TAG)}
            if Path(options.out_dir).exists()
            else {}
        )

    def unit_recipe(self, cell: Cell) -> tuple[Any, ModelUnit, Any]:
        """``(track, unit, recipe)`` of ``cell``: its track, the model unit it evaluates and
        the recipe that unit trains with (no data read)."""
        if cell.track not in self.tracks:
            raise ValueError(
                f"cell {cell.name} asks for track {cell.track!r}; this run has "
                f"{sorted(self.tracks)}"
            )
        track = self.tracks[cell.track]
        base = track.recipe(cell)
        way, shot = track.way_shot(base)
        unit = unit_for(cell, recipe_way=way, recipe_shot=shot, share_shots=self.opt.share_shots)
        return track, unit, track.for_unit(base, unit)

    def prepare(self, cell: Cell) -> _Prepared:
        """The unit of ``cell``, its recipe and its (untrained, cached) model."""
        track, unit, recipe = self.unit_recipe(cell)
        with self.timed("data and features"):
            data = track.data(cell)
        slug = unit.slug([recipe.identity(), data.model_info])
        if slug not in self.built:
            self.built[slug] = track.build(cell, recipe)
        return _Prepared(track, data, unit, recipe, self.built[slug], slug)

    def identify(
        self, cell: Cell, prepared: _Prepared | None = None
    ) -> tuple[_Prepared, str, dict[str, Any], Manifest]:
        """``(prepared cell, record id, provenance, test manifest)``: what names ``cell``'s
        record and what must hold for a stored one to be reused (``prepared``: ``cell``'s
        :meth:`prepare`, when the caller has it)."""
        p = prepared or self.prepare(cell)
        config_hash = record_config_hash(
            p.method.hparams, p.recipe.identity(), p.data.info, cell.train_seed, cell.track
        )
        rid = cell.record_id(config_hash)
        manifest = self.manifest(cell, p.data)
        return p, rid, self.provenance(p, config_hash, manifest, cell), manifest

    def recorded(self, cell: Cell, prepared: _Prepared | None = None) -> bool:
        """Whether a run would reuse ``cell``'s stored record: made as it would be made now, or
        any with ``reuse_stale`` (a read-only look: its per-query rows are checked when the
        cell runs)."""
        if not self.done:  # nothing stored: no manifest needs drawing
            return False
        _, rid, prov, _ = self.identify(cell, prepared)
        stored = self.done.get(rid)
        if stored is None or stored.method != cell.name:
            return False
        return self.opt.reuse_stale or not provenance_diff(stored.provenance, prov)

    def run(self, cell: Cell) -> ResultRecord:
        p, rid, prov, manifest = self.identify(cell)
        reused = self.reuse(rid, prov, cell.name)
        if reused is None:
            with held(Path(self.opt.out_dir) / "locks" / f"{rid}.lock", what=f"cell {rid}"):
                # another process may have finished it
                reused = self.reuse_written(rid, prov, cell.name)
                if reused is None:
                    return self._evaluate(cell, p, rid, prov, manifest)
        # a record of this setting made with another config (a concurrent run, or a run
        # killed before it superseded it) goes now: one number per setting
        self.replace_older(reused)
        return reused

    def reuse_written(self, rid: str, prov: dict[str, Any], method: str) -> ResultRecord | None:
        """The record ``rid`` written by another process since this runner started."""
        path = Path(self.opt.out_dir) / "records" / f"{rid}.json"
        if rid in self.done or not path.exists():
            return None
        try:
            record = load_record(path)
        except UnreadableRecordError as err:  # evaluated again below, the file replaced
            log.warning("%s; evaluating the cell again", err)
            return None
        if self.rejected.get(rid) == record.created:  # the record reuse() just turned down
            return None
        self.done[rid] = record
        return self.reuse(rid, prov, method)

    def _evaluate(
        self, cell: Cell, p: _Prepared, rid: str, prov: dict[str, Any], manifest: Manifest
    ) -> ResultRecord:
        trained = self.trained(p)
        partial = Path(self.opt.out_dir) / "partial" / f"{rid}.npz"
        with self.timed("evaluation"):
            result = self._evaluate_cell(cell, p, prov, manifest, trained, partial)
        record = make_record(
            result,
            method=cell.name,
            dataset=cell.dataset,
            split_variant=p.data.split_variant,
            manifest=manifest,
            track=cell.track,
            hparams=p.method.hparams,
            recipe=p.recipe.identity(),
            features=p.data.info,
            train_seed=cell.train_seed,
            class_names=p.data.class_names,
            skipped_videos=p.data.listed_skips,
            tags={**dict(cell.tags), "label": cell.label, "base_method": cell.method},
            provenance=prov,
            protocol=cell.protocol,
            train_way=p.unit.train_way,
            train_shot=p.unit.train_shot,
            compute=compute_environment(self.opt.device, features=p.data.made_with),
            training=trained.training,
        )
        assert record.cell == rid, (record.cell, rid)
        self.records_changing()
        save_result(self.opt.out_dir, record, result)
        supersede_older_copies(self.opt.out_dir, record)  # e.g. a shard folder's old copy
        partial.unlink(missing_ok=True)
        self.replace_older(record)
        self.done[rid] = record
        self.verified.add((rid, record.created))  # written just now with its rows
        return record

    def provenance(
        self, p: _Prepared, config_hash: str, manifest: Manifest, cell: Cell
    ) -> dict[str, Any]:
        """Everything that can change this cell's number (see :mod:`fsarbench.provenance`)."""
        info = p.data.info
        # every cell's features (frozen: the caches, keyed by it) come from this pipeline, so a
        # change to decoding or transforms marks the record stale where it is shown
        code = {**code_parts(p.method), "pipeline": pipeline_digest()}
        return {
            "config_hash": config_hash,
            "protocol": {
                "name": cell.protocol,
                **{k: info.get(k) for k in PROTOCOL_FIELDS},
                "train_way": p.unit.train_way,
                "train_shot": p.unit.train_shot,
            },
            "manifest_hash": self.manifest_hash(manifest),
            "data": {
                "split_md5": info.get("split_md5"),
                "skipped_videos": stable_hash(sorted(p.data.skipped)),
            },
            "weights": info.get("weights"),
            "features": info.get("cache_keys"),
            "code": code,
            "code_digest": stable_hash(code),
            "nonfinite": self.opt.nonfinite,
        }

    def reuse(self, rid: str, prov: dict[str, Any], method: str) -> ResultRecord | None:
        """The stored record ``rid`` if it was made by ``method`` as ``prov`` says (or
        ``reuse_stale`` accepts it, recorded in the record); ``None`` when the cell must run
        (again)."""
        stored = self.done.get(rid)
        if stored is None:
            return None
        if stored.method != method:  # two names written as one file name: never served
            log.warning("re-running %s: its record is of %r, not %r", rid, stored.method, method)
            self.rejected[rid] = stored.created
            del self.done[rid]
            return None
        if (rid, stored.created) not in self.verified and not self._verify(stored):
            log.warning(
                "re-running %s: its per-query rows are missing, unreadable or do not give its "
                "accuracy",
                rid,
            )
            self.rejected[rid] = stored.created
            del self.done[rid]
            return None
        diff = provenance_diff(stored.provenance, prov)
        if not diff:
            if stored.stale_accepted:  # made as asked again: no longer an accepted stale one
                stored.stale_accepted = []
                rewrite_record(self.opt.out_dir, stored)
            return stored
        if self.opt.reuse_stale:
            log.warning("reusing stale %s (--reuse-stale): %s", rid, "; ".join(diff))
            stored.stale_accepted = diff
            rewrite_record(self.opt.out_dir, stored)
            return stored
        log.warning("re-running %s: %s", rid, rerun_reason(stored, diff))
        self.rejected[rid] = stored.created
        del self.done[rid]
        return None

    def _verify(self, record: ResultRecord) -> bool:
        """:func:`queries_match`, once per record and process (grids share cells)."""
        if not queries_match(self.opt.out_dir, record):
            return False
        self.verified.add((record.cell, record.created))
        return True

    def replace_older(self, record: ResultRecord) -> None:
        """Supersede records of ``record``'s setting made with another config (a changed
        default, recipe or hyper-parameter), so tables and summary hold one number each.
        Records another process wrote into the folder since this runner started are
        superseded too, under a lock per setting; a record another run superseded meanwhile
        supersedes nothing: two concurrent runs with other configs keep exactly one number."""
        prefix = record.cell.rsplit("__", 1)[0]
        with held(Path(self.opt.out_dir) / "locks" / f"{prefix}.setting.lock", what=prefix):
            own = Path(self.opt.out_dir) / "records" / f"{record.cell}.json"
            if not own.exists() and not _in_shard_folder(self.opt.out_dir, record):
                log.warning("%s was superseded by another run meanwhile", record.cell)
                return
            for other in self._written_meanwhile(record):
                self.done[other.cell] = other
            self._supersede_others(record)

    def _supersede_others(self, record: ResultRecord) -> None:
        for other in [r for r in self.done.values() if r.setting == record.setting]:
            if other.cell != record.cell:
                self.records_changing()
                if supersede(self.opt.out_dir, other):  # not when another run moved it
                    log.warning(
                        "%s supersedes %s (config %s -> %s); the old record is moved to %s/",
                        record.cell,
                        other.cell,
                        other.config_hash[:8],
                        record.config_hash[:8],
                        SUPERSEDED_DIR,
                    )
                del self.done[other.cell]

    def records_changing(self) -> None:
        """Before this runner first writes or moves a record: the folder's tables and report
        are marked out of date until the run's end rewrites them (an interrupted run left
        them showing the numbers of records it had superseded)."""
        if not self.outputs_marked:
            self.outputs_marked = True
            mark_outputs_out_of_date(self.opt.out_dir)

    def _written_meanwhile(self, record: ResultRecord) -> list[ResultRecord]:
        """Own records of ``record``'s setting under ``records/`` that this runner has not
        seen (written by another process since it started)."""
        folder = Path(self.opt.out_dir) / "records"
        prefix = glob.escape(record.cell.rsplit("__", 1)[0] + "__")
        found = []
        for path in sorted(folder.glob(f"{prefix}*.json")):
            if path.stem in self.done or path.stem == record.cell:
                continue
            try:
                other = load_record(path)
            except UnreadableRecordError:
                continue
            if other.setting == record.setting and not other.tags.get(OUTSIDE_TAG):
                found.append(other)
        return found

    def manifest_hash(self, manifest: Manifest) -> str:
        key = id(manifest)
        if key not in self.manifest_hashes:
            self.manifest_hashes[key] = manifest.hash
        return self.manifest_hashes[key]

    def manifest(self, cell: Cell, data: TrackData) -> Manifest:
        """The test manifest of ``cell``, drawn once per setting (every method shares it) and
        kept in ``--out`` for later runs."""
        key = (cell.dataset, data.split_variant, cell.way, cell.shot, cell.seed)
        key += (stable_hash(data.test_classes.tolist()),)
        if key not in self.manifests:
            self.manifests[key] = cached_test_manifest(
                Path(self.opt.out_dir) / MANIFESTS_DIR,
                data.test_classes,
                split_variant=data.split_variant,
                way=cell.way,
                shot=cell.shot,
                queries=self.opt.queries,
                episodes=self.opt.episodes,
                seed=cell.seed,
                class_names=data.class_names,
                remedies=TEST_REMEDIES,
            )
        return self.manifests[key]

    def _evaluate_cell(
        self,
        cell: Cell,
        p: _Prepared,
        prov: dict[str, Any],
        manifest: Manifest,
        trained: Trained,
        partial: Path,
    ):
        """The one evaluator on ``trained``'s head and test features (resumable)."""
        return evaluate(
            trained.head,
            trained.test,
            manifest,
            batch_episodes=self.opt.batch_episodes,
            interval=self.opt.interval,
            device=self.opt.device,
            progress=self.opt.progress,
            partial_path=partial,
            desc=f"{cell.name} {cell.dataset} {cell.way}w{cell.shot}s",
            pair_tables=self._tables_of(f"{p.slug}/{stable_hash(p.data.info)}"),
            nonfinite=self.opt.nonfinite,
            partial_tag=stable_hash(prov),
            class_names=p.data.class_names,
            manifest_hash=self.manifest_hash(manifest),
        )

    def _tables_of(self, key: str) -> dict:
        """The pair tables and pool products of a model on one test split (``key``: its slug
        and the hash of the data's ``info``, which names the test features; a model's slug
        does not), kept for its later cells (the 5- to 10-way cells of one model, interleaved
        with other models' cells). Pair tables
        (``U²`` floats) are kept for every model; pool products (TRX's reach 1 GiB) only for
        the model evaluated last."""
        for other, tables in self.pair_tables.items():
            if other != key:
                for pool_key in [k for k in tables if str(k).startswith(POOL_KEY_PREFIX)]:
                    del tables[pool_key]
        return self.pair_tables.setdefault(key, {})

    @contextlib.contextmanager
    def timed(self, stage: str):
        """Add the wall time of the block to ``self.seconds[stage]`` (run's time summary)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def trained(self, p: _Prepared) -> Trained:
        """The trained model of unit ``p.unit`` (trained, or resumed, on first use)."""
        if p.slug not in self.models:
            out = Path(self.opt.out_dir) / "models" / p.slug
            lock = Path(self.opt.out_dir) / "locks" / f"{p.slug}.model.lock"
            with held(lock, what=f"model {p.slug}"), self.timed("training"):
                self.models[p.slug] = self._train(p, out)
        return self.models[p.slug]

    def _train(self, p: _Prepared, out: Path) -> Trained:
        """Train unit ``p`` into ``out`` (resuming, or reloading a finished run there)."""
        u = p.unit
        remove_cut_writes(out)  # the unit's lock is held: no write of another process
        saved = any((out / name).exists() for name in ("last.pt", "best.pt"))
        log.info(
            "%s %s on %s (%s, %s protocol, %d-way %d-shot, seed %d)",
            "resuming (or reloading, if finished)" if saved else "training",
            u.name,
            u.dataset,
            u.track,
            u.protocol,
            u.train_way,
            u.train_shot,
            u.train_seed,
        )
        trained = p.track.train(u, p.recipe, p.method, out)
        self.trained_units.append(u)
        return trained

    def run_cells(
        self, cells: Iterable[Cell], on_record: Callable[[ResultRecord], None] | None = None
    ) -> list[ResultRecord]:
        """Evaluate every cell (skipping recorded ones) and rebuild ``summary.csv``; cells
        whose episodes their datasets cannot serve are refused first, before any training
        (:func:`~fsarbench.experiments.feasibility.check_cells`)."""
        cells = unique_cells(cells)
        check_cells(self, cells)
        records, summary_failed = [], False
        for cell in cells:
            record = self.run(cell)
            records.append(record)
            if on_record is not None:
                on_record(record)
            try:
                rebuild_summary(self.opt.out_dir)
            except (OSError, LockTimeout) as err:  # an output file, not a cell: cells go on
                if not summary_failed:
                    log.warning(
                        "summary.csv could not be written (%s); the records are kept and the "
                        "cells go on: fix it (a folder in its place, a read-only file?) and "
                        "re-run to rebuild it",
                        err,
                    )
                summary_failed = True
        return records


def run_cells(
    cells: Iterable[Cell],
    provider: FeatureProvider,
    options: RunOptions,
    on_record: Callable[[ResultRecord], None] | None = None,
) -> list[ResultRecord]:
    """Evaluate every cell (skipping recorded ones) and rebuild ``summary.csv``."""
    return CellRunner(provider, options).run_cells(cells, on_record)


def unique_cells(cells: Iterable[Cell]) -> list[Cell]:
    """``cells`` without repeats (grids share cells: one number per cell and run)."""
    seen, out = set(), []
    for c in cells:
        key = (c.method, c.hparams, c.dataset, c.way, c.shot, c.track, c.protocol, c.seed)
        key += (c.train_seed,)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out
