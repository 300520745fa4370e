"""Run experiment cells: train each model once, evaluate every cell, record, summarise.

Cells already recorded in the output folder are skipped, models whose training finished are
reused, and an interrupted training or evaluation resumes where it stopped, so a killed
``run --all`` re-run gives the same ``summary.csv`` as an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fsarbench.episodes import Manifest, make_manifest
from fsarbench.evaluate import evaluate
from fsarbench.experiments.cells import Cell, TrainKey
from fsarbench.io import stable_hash
from fsarbench.methods import FewShotMethod
from fsarbench.provenance import code_parts, provenance_diff, training_fingerprint
from fsarbench.registry import create_method
from fsarbench.results import (
    SUPERSEDED_DIR,
    ResultRecord,
    load_records,
    make_record,
    record_config_hash,
    save_result,
    supersede,
    write_summary,
)
from fsarbench.training import AdaptedMethod, FrameAdapter, SplitFeatures, frozen_recipe, train
from fsarbench.training.trainer import RunMismatchError

#: Feature-preset fields that say how frames were sampled and transformed (the protocol).
PROTOCOL_FIELDS = ("num_frames", "resolution", "test_frames", "train_frames", "train_views")

__all__ = ["CellRunner", "DatasetFeatures", "RunOptions", "run_cells"]

log = logging.getLogger(__name__)


@dataclass
class DatasetFeatures:
    """Frozen features of one dataset's splits, and what produced them (recorded)."""

    name: str
    split_variant: str
    splits: dict[str, SplitFeatures]
    class_names: dict[str, list[str]]
    info: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def feature_shape(self) -> tuple[int, int]:
        return self.splits["test"].store.feature_shape


@dataclass
class RunOptions:
    out_dir: Path
    episodes: int = 10_000
    queries: int = 1
    device: str = "cpu"
    progress: bool = True
    batch_episodes: int = 500
    interval: str = "normal"
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    nonfinite: str = "error"
    reuse_stale: bool = False


FeatureProvider = Callable[[str], DatasetFeatures]


def build_method(
    name: str, hparams: dict[str, Any], feats: DatasetFeatures, recipe, seed: int
) -> FewShotMethod:
    """Method ``name`` for ``feats`` (behind the recipe's adapter), initialised from ``seed``."""
    t, d = feats.feature_shape
    torch.manual_seed(seed)
    method = create_method(
        name,
        feature_dim=d,
        seq_len=t,
        num_train_classes=feats.splits["train"].num_classes,
        dataset=feats.name,
        **hparams,
    )
    if recipe.adapter == "linear_ln":
        method = AdaptedMethod(method, FrameAdapter(d), d)
    return method


class CellRunner:
    """Runs cells, keeping what later cells reuse: datasets' features, trained models and
    their pair tables (one runner can serve several grids of a ``run --all``)."""

    def __init__(self, provider: FeatureProvider, options: RunOptions) -> None:
        self.provider, self.opt = provider, options
        self.features: dict[str, DatasetFeatures] = {}
        self.models: dict[TrainKey, FewShotMethod] = {}
        self.pair_tables: dict[TrainKey, dict] = {}
        self.manifests: dict[tuple, Manifest] = {}
        self.manifest_hashes: dict[int, str] = {}
        self.done = (
            {r.cell: r for r in load_records(options.out_dir)}
            if Path(options.out_dir).exists()
            else {}
        )

    def dataset(self, name: str) -> DatasetFeatures:
        if name not in self.features:
            self.features[name] = self.provider(name)
        return self.features[name]

    def run(self, cell: Cell) -> ResultRecord:
        feats = self.dataset(cell.dataset)
        recipe = frozen_recipe(cell.method, self.opt.recipe_overrides, dataset=cell.dataset)
        method = build_method(cell.method, cell.hparams_dict, feats, recipe, cell.train_seed)
        config_hash = record_config_hash(
            method.hparams, recipe.to_dict(), feats.info, cell.train_seed, cell.track
        )
        rid = cell.record_id(config_hash)
        manifest = self.manifest(cell, feats)
        prov = self.provenance(method, config_hash, feats, manifest)
        reused = self.reuse(rid, prov)
        if reused is not None:
            return reused
        model, key = self.trained(cell, feats, recipe, method)
        partial = Path(self.opt.out_dir) / "partial" / f"{rid}.npz"
        result = evaluate(
            model,
            feats.splits["test"].store,
            manifest,
            batch_episodes=self.opt.batch_episodes,
            interval=self.opt.interval,
            device=self.opt.device,
            progress=self.opt.progress,
            partial_path=partial,
            desc=f"{cell.name} {cell.dataset} {cell.way}w{cell.shot}s",
            pair_tables=self.pair_tables.setdefault(key, {}),
            nonfinite=self.opt.nonfinite,
            partial_tag=stable_hash(prov),
        )
        record = make_record(
            result,
            method=cell.name,
            dataset=cell.dataset,
            split_variant=feats.split_variant,
            manifest=manifest,
            track=cell.track,
            hparams=method.hparams,
            recipe=recipe.to_dict(),
            features=feats.info,
            train_seed=cell.train_seed,
            class_names=feats.class_names["test"],
            skipped_videos=feats.skipped,
            tags={**dict(cell.tags), "label": cell.label, "base_method": cell.method},
            provenance=prov,
        )
        assert record.cell == rid, (record.cell, rid)
        save_result(self.opt.out_dir, record, result)
        partial.unlink(missing_ok=True)
        self.replace_older(record)
        self.done[rid] = record
        return record

    def provenance(
        self, method: FewShotMethod, config_hash: str, feats: DatasetFeatures, manifest: Manifest
    ) -> dict[str, Any]:
        """Everything that can change this cell's number (see :mod:`fsarbench.provenance`)."""
        info = feats.info
        code = code_parts(method)
        return {
            "config_hash": config_hash,
            "protocol": {k: info.get(k) for k in PROTOCOL_FIELDS},
            "manifest_hash": self.manifest_hash(manifest),
            "data": {
                "split_md5": info.get("split_md5"),
                "skipped_videos": stable_hash(sorted(feats.skipped)),
            },
            "weights": info.get("weights"),
            "features": info.get("cache_keys"),
            "code": code,
            "code_digest": stable_hash(code),
            "nonfinite": self.opt.nonfinite,
        }

    def reuse(self, rid: str, prov: dict[str, Any]) -> ResultRecord | None:
        """The stored record ``rid`` if it was made as ``prov`` says (or ``reuse_stale``
        accepts it, recorded in the record); ``None`` when the cell must run (again)."""
        stored = self.done.get(rid)
        if stored is None:
            return None
        diff = provenance_diff(stored.provenance, prov)
        if not diff:
            return stored
        if self.opt.reuse_stale:
            log.warning("reusing stale %s (--reuse-stale): %s", rid, "; ".join(diff))
            stored.stale_accepted = diff
            save_result(self.opt.out_dir, stored)
            return stored
        log.warning("re-running %s: it was made with %s", rid, "; ".join(diff))
        del self.done[rid]
        return None

    def replace_older(self, record: ResultRecord) -> None:
        """Supersede records of ``record``'s setting made with another config (a changed
        default, recipe or hyper-parameter), so tables and summary hold one number each."""
        for other in [r for r in self.done.values() if r.setting == record.setting]:
            if other.cell != record.cell:
                log.warning(
                    "%s supersedes %s (config %s -> %s); the old record is moved to %s/",
                    record.cell,
                    other.cell,
                    other.config_hash[:8],
                    record.config_hash[:8],
                    SUPERSEDED_DIR,
                )
                supersede(self.opt.out_dir, other)
                del self.done[other.cell]

    def manifest_hash(self, manifest: Manifest) -> str:
        key = id(manifest)
        if key not in self.manifest_hashes:
            self.manifest_hashes[key] = manifest.hash
        return self.manifest_hashes[key]

    def manifest(self, cell: Cell, feats: DatasetFeatures) -> Manifest:
        """The test manifest of ``cell``, drawn once per setting (every method shares it)."""
        key = (cell.dataset, feats.split_variant, cell.way, cell.shot, cell.seed)
        if key not in self.manifests:
            self.manifests[key] = make_manifest(
                feats.splits["test"].classes,
                way=cell.way,
                shot=cell.shot,
                queries=self.opt.queries,
                episodes=self.opt.episodes,
                seed=cell.seed,
                dataset=feats.split_variant,
                split="test",
                class_names=feats.class_names["test"],
            )
        return self.manifests[key]

    def trained(
        self, cell: Cell, feats: DatasetFeatures, recipe, method
    ) -> tuple[FewShotMethod, TrainKey]:
        """The trained model of ``cell`` (trained, or resumed, on first use) and its key."""
        key = TrainKey(
            cell.method,
            cell.hparams,
            cell.dataset,
            cell.track,
            cell.train_seed,
            stable_hash(recipe.to_dict()),
            stable_hash(feats.info),
        )
        if key not in self.models:
            out = Path(self.opt.out_dir) / "models" / key.slug
            log.info("training %s on %s (%s steps)", cell.name, cell.dataset, recipe.steps)
            fingerprint = training_fingerprint(
                method=cell.name,
                model=method,
                hparams=method.hparams,
                recipe=recipe.to_dict(),
                seed=cell.train_seed,
                dataset=cell.dataset,
                track=cell.track,
                data=feats.info,
            )
            kwargs = dict(seed=cell.train_seed, device=self.opt.device, progress=self.opt.progress)
            train_data = (feats.splits["train"], feats.splits.get("val"), recipe)
            try:
                train(method, *train_data, out_dir=out, fingerprint=fingerprint, **kwargs)
            except RunMismatchError as err:
                log.warning("retraining %s from scratch: %s", key.slug, err)
                train(
                    method,
                    *train_data,
                    out_dir=out,
                    fingerprint=fingerprint,
                    resume=False,
                    **kwargs,
                )
            self.models[key] = method
        return self.models[key], key

    def run_cells(
        self, cells: Iterable[Cell], on_record: Callable[[ResultRecord], None] | None = None
    ) -> list[ResultRecord]:
        """Evaluate every cell (skipping recorded ones) and rebuild ``summary.csv``."""
        records = []
        for cell in _unique(cells):
            record = self.run(cell)
            records.append(record)
            if on_record is not None:
                on_record(record)
            write_summary(self.opt.out_dir)
        return records


def run_cells(
    cells: Iterable[Cell],
    provider: FeatureProvider,
    options: RunOptions,
    on_record: Callable[[ResultRecord], None] | None = None,
) -> list[ResultRecord]:
    """Evaluate every cell (skipping recorded ones) and rebuild ``summary.csv``."""
    return CellRunner(provider, options).run_cells(cells, on_record)


def _unique(cells: Iterable[Cell]) -> list[Cell]:
    seen, out = set(), []
    for c in cells:
        key = (c.method, c.hparams, c.dataset, c.way, c.shot, c.track, c.seed, c.train_seed)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out
