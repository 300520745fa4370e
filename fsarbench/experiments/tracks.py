"""The two tracks behind one interface: what a dataset offers before training, the recipe of a
model unit, the untrained model, and training that ends in a head on cached test features.

Both tracks end in the same place — a head that takes ``[N, T, D]`` frame features and a
feature store of the test split — so one evaluator, one pair-table cache and one record
format serve both. The frozen track's features come from the ImageNet backbone's cache; the
finetune track extracts the test split once per trained backbone (the cache key names the
backbone's weights by their digest).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsarbench.data.decode import VideoDecodeError
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.units import ModelUnit, unit_recipe
from fsarbench.features.extract import files_stamp
from fsarbench.features.store import FeatureStore
from fsarbench.io import stable_hash
from fsarbench.methods import FewShotMethod
from fsarbench.provenance import training_fingerprint
from fsarbench.training import AdaptedMethod, FrameAdapter, SplitFeatures, frozen_recipe, train
from fsarbench.training.damaged import (
    damaged_message,
    extraction_failures,
    find_damaged,
    met,
    record_damaged,
    split_of,
)
from fsarbench.training.finetune_recipe import precision_entry
from fsarbench.training.loop import RunMismatchError, TrainResult

__all__ = [
    "DatasetFeatures",
    "DatasetPools",
    "SplitPool",
    "TrackData",
    "Trained",
    "FrozenTrack",
    "FinetuneTrack",
]

log = logging.getLogger(__name__)


def with_causes(skipped: list[str], causes: dict[str, str]) -> list[str]:
    """``skipped`` ("split/id") as records list them: ``"split/id: cause"`` where the cause is
    known (kept out of the hashed ``skipped``: knowing a cause changes no number)."""
    return [f"{s}: {causes[s]}" if s in causes else s for s in skipped]


@dataclass
class DatasetFeatures:
    """Frozen features of one dataset's splits, and what produced them (recorded)."""

    name: str
    split_variant: str
    splits: dict[str, SplitFeatures]
    class_names: dict[str, list[str]]
    info: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # "split/video id"
    causes: dict[str, str] = field(default_factory=dict)  # "split/video id" -> why
    # what the splits' features were extracted with (FeatureCache.made_with, each once)
    made_with: list[dict[str, Any]] = field(default_factory=list)

    @property
    def listed_skips(self) -> list[str]:
        return with_causes(self.skipped, self.causes)

    @property
    def feature_shape(self) -> tuple[int, int]:
        return self.splits["test"].store.feature_shape


@dataclass
class TrackData:
    """What a track knows of a dataset before training: ``info`` (recorded; enters the
    config hash), the test split's class per video (for the manifest), its class names and
    the videos left out (``skipped``, as the identities hash them; ``causes`` says why, for
    the records' listing)."""

    dataset: str
    split_variant: str
    info: dict[str, Any]
    test_classes: np.ndarray
    class_names: list[str]
    skipped: list[str]
    val_videos: int = 0
    # what names the trained model's folder, where it differs from ``info`` (finetune: not
    # the test videos left out, which change the records but not the model)
    unit_info: dict[str, Any] | None = None
    causes: dict[str, str] = field(default_factory=dict)
    # what its features were extracted with (recorded in ``compute``, not in the identity)
    made_with: list[dict[str, Any]] = field(default_factory=list)

    @property
    def listed_skips(self) -> list[str]:
        return with_causes(self.skipped, self.causes)

    @property
    def model_info(self) -> dict[str, Any]:
        return self.info if self.unit_info is None else self.unit_info


@dataclass(frozen=True)
class SplitPool:
    """The videos of one split that a run would draw episodes from (``classes``: the class
    id of each), the split's class names, and how many listed videos it leaves out."""

    classes: np.ndarray
    class_names: list[str] | None = None
    left_out: int = 0


@dataclass(frozen=True)
class DatasetPools:
    """What episodes a dataset's splits can serve, known before any training: ``splits``
    maps ``train``/``val``/``test`` to their pools; ``left_out_causes`` says what their
    ``left_out`` counts (a frozen listing, made before the extraction, counts missing files
    only: the extraction may leave out unreadable or too short ones too)."""

    dataset: str
    split_variant: str
    splits: dict[str, SplitPool]
    left_out_causes: str = "missing, unreadable or too short"


def features_pools(features: DatasetFeatures) -> DatasetPools:
    """The pools of extracted (or in-memory) features: exactly the videos a run uses."""
    splits = {
        name: SplitPool(
            np.asarray(data.classes),
            features.class_names.get(name),
            sum(s.startswith(f"{name}/") for s in features.skipped),
        )
        for name, data in features.splits.items()
    }
    return DatasetPools(features.name, features.split_variant, splits)


@dataclass
class Trained:
    """A trained unit as the evaluator takes it: a head on ``[N, T, D]`` features and the
    test split's feature store."""

    head: FewShotMethod
    test: FeatureStore
    training: dict[str, Any] = field(default_factory=dict)  # TrainResult.summary()


def _retrain_on_mismatch(run: Callable[[bool], Any], slug: str) -> Any:
    """``run(resume=True)``; a folder holding another run (or unusable selected weights)
    is trained again from scratch, and the log says why (``run`` has no flag to ask: the
    error's remedy, the API's, is not shown)."""
    try:
        return run(True)
    except RunMismatchError as err:
        log.warning("retraining %s from scratch: %s", slug, err.detail)
        return run(False)


# -- frozen ---------------------------------------------------------------------------------
def frozen_model_info(info: dict[str, Any]) -> dict[str, Any]:
    """What names a frozen model (its folder and training fingerprint): the features' ``info``
    without the test split's cache key. The model is trained on train/val features alone, so
    a replaced or touched test video changes the records, not the model (it retrained every
    frozen model)."""
    keys = {k: v for k, v in (info.get("cache_keys") or {}).items() if k != "test"}
    return {**info, "cache_keys": keys} if "cache_keys" in info else dict(info)


def build_method(
    name: str, hparams: dict[str, Any], feats: DatasetFeatures, recipe, seed: int
) -> FewShotMethod:
    """Method ``name`` for ``feats`` (behind the recipe's adapter), initialised from ``seed``;
    hyper-parameters the method derives from the frame backbone apply under ``hparams``."""
    return _create_method(
        name,
        hparams,
        feats.feature_shape,
        feats.splits["train"].num_classes,
        feats.info,
        feats.name,
        recipe,
        seed,
    )


def _create_method(
    name: str,
    hparams: dict[str, Any],
    feature_shape: tuple[int, int],
    num_train_classes: int,
    info: dict[str, Any],
    dataset: str,
    recipe,
    seed: int,
) -> FewShotMethod:
    from fsarbench.registry import create_method, method_info

    t, d = feature_shape
    derived = method_info(name).cls.backbone_hparams(info)
    torch.manual_seed(seed)
    method = create_method(
        name,
        feature_dim=d,
        seq_len=t,
        num_train_classes=num_train_classes,
        dataset=dataset,
        **{**derived, **hparams},
    )
    if recipe.adapter == "linear_ln":
        method = AdaptedMethod(method, FrameAdapter(d), d)
    return method


def _warn_left_out(features: DatasetFeatures) -> None:
    """Say, per split, how many of the listed videos a dataset's numbers leave out (missing,
    unreadable or too short): each record lists them, but a mostly missing dataset printed
    confident numbers with one INFO line to show for it."""
    if not features.skipped:
        return
    counts = []
    for split, data in features.splits.items():
        lost = sum(s.startswith(f"{split}/") for s in features.skipped)
        if lost:
            counts.append(f"{split} {lost} of {lost + len(data.classes)}")
    log.warning(
        "%s: left out %d listed video(s) (%s) as missing, unreadable or too short: its "
        "numbers are over the videos found (records list them; 'python -m fsarbench data "
        "check %s', with --root DIR --splits-dir DIR for videos on disk, names the causes)",
        features.name,
        len(features.skipped),
        ", ".join(counts),
        features.name,
    )


class FrozenTrack:
    """Heads trained on cached features of a fixed backbone (``provider(dataset,
    protocol)`` gives them)."""

    name = "frozen"

    def __init__(
        self,
        provider: Callable[[str, str], DatasetFeatures],
        *,
        recipe_overrides: dict[str, Any],
        device: str,
        progress: bool,
        listing: Callable[[str], DatasetPools] | None = None,
        cached: Callable[[str, str], DatasetFeatures | None] | None = None,
        outline: Callable[[str, str], Any] | None = None,
    ) -> None:
        """``listing(dataset)``: the dataset's pools without extracting anything (e.g.
        :meth:`FrozenFeatureProvider.listing`); without one, :meth:`pools` asks
        ``provider`` (in-memory features). ``cached(dataset, protocol)``: the features when
        already extracted, else ``None``, and ``outline(dataset, protocol)``: a
        :class:`~fsarbench.experiments.features.FeatureOutline` (``run --plan`` plans
        with these, extracting nothing); without them features count as ready."""
        self.provider, self.overrides = provider, recipe_overrides
        self.device, self.progress = device, progress
        self.listing, self.cached, self.outline = listing, cached, outline
        self.features: dict[tuple[str, str], DatasetFeatures] = {}
        self.listed: dict[str, DatasetPools] = {}
        self.outlines: dict[tuple[str, str], Any] = {}

    def dataset(self, dataset: str, protocol: str) -> DatasetFeatures:
        key = (dataset, protocol)
        if key not in self.features:
            self.features[key] = self.provider(dataset, protocol)
            _warn_left_out(self.features[key])
        return self.features[key]

    def features_ready(self, cell: Cell) -> bool:
        """Whether ``cell``'s features can be had without extracting (in memory, or every
        split's cache complete on disk, then kept)."""
        key = (cell.dataset, cell.protocol)
        if key in self.features or self.cached is None:
            return True
        found = self.cached(*key)
        if found is None:
            return False
        self.features[key] = found
        _warn_left_out(found)
        return True

    def plan_method(self, cell: Cell, recipe) -> FewShotMethod:
        """``cell``'s untrained method built from its features' outline (nothing extracted):
        what ``run --plan`` counts training stages and steps with."""
        key = (cell.dataset, cell.protocol)
        if key not in self.outlines:
            self.outlines[key] = self.outline(*key)
        o = self.outlines[key]
        return _create_method(
            cell.method,
            cell.hparams_dict,
            o.feature_shape,
            o.num_train_classes,
            o.info,
            cell.dataset,
            recipe,
            cell.train_seed,
        )

    def data(self, cell: Cell) -> TrackData:
        f = self.dataset(cell.dataset, cell.protocol)
        test = f.splits["test"]
        val = f.splits.get("val")
        return TrackData(
            f.name,
            f.split_variant,
            f.info,
            test.classes,
            f.class_names["test"],
            f.skipped,
            len(val.classes) if val is not None else 0,
            unit_info=frozen_model_info(f.info),
            causes=f.causes,
            made_with=f.made_with,
        )

    def pools(self, cell: Cell) -> DatasetPools:
        """What ``cell``'s dataset can serve, before any training: its features' pools once
        extracted, else the listing's (files present; no extraction)."""
        key = (cell.dataset, cell.protocol)
        if key in self.features or self.listing is None:
            return features_pools(self.dataset(*key))
        if cell.dataset not in self.listed:
            self.listed[cell.dataset] = self.listing(cell.dataset)
        return self.listed[cell.dataset]

    @staticmethod
    def training_recipe(recipe):
        """The :class:`~fsarbench.training.recipe.Recipe` of training episodes."""
        return recipe

    def recipe(self, cell: Cell):
        return frozen_recipe(cell.method, self.overrides, dataset=cell.dataset)

    @staticmethod
    def way_shot(recipe) -> tuple[int, int]:
        return recipe.way, recipe.shot

    def for_unit(self, recipe, unit: ModelUnit):
        """The recipe trained at the unit's way and shot (validated at its shot, with its
        shot's training queries), keeping ``--recipe val_shot`` (:func:`unit_recipe`)."""
        return unit_recipe(recipe, unit, self.overrides)

    def build(self, cell: Cell, recipe) -> FewShotMethod:
        feats = self.dataset(cell.dataset, cell.protocol)
        return build_method(cell.method, cell.hparams_dict, feats, recipe, cell.train_seed)

    def train(self, unit: ModelUnit, recipe, method: FewShotMethod, out: Path) -> Trained:
        feats = self.dataset(unit.dataset, unit.protocol)
        fingerprint = training_fingerprint(
            method=unit.name,
            model=method,
            hparams=method.hparams,
            recipe=recipe.identity(),
            seed=unit.train_seed,
            dataset=unit.dataset,
            track=self.name,
            data=frozen_model_info(feats.info),
        )

        def run(resume: bool) -> TrainResult:
            return train(
                method,
                feats.splits["train"],
                feats.splits.get("val"),
                recipe,
                seed=unit.train_seed,
                out_dir=out,
                device=self.device,
                progress=self.progress,
                fingerprint=fingerprint,
                resume=resume,
            )

        result = _retrain_on_mismatch(run, out.name)
        return Trained(method, feats.splits["test"].store, result.summary())


# -- finetune -------------------------------------------------------------------------------
@dataclass
class _ClipData:
    """A dataset's readable videos per split, probed once (left-out ones with causes)."""

    dataset: Any
    splits: dict[str, Any]
    skipped: list[str]
    split_md5: dict[str, Any] = field(default_factory=dict)  # read once, not per cell
    # size and modification time of every train and val video used (files_stamp): a run
    # resumed after files changed would mix two versions of the data in one model
    train_files: str = ""
    test_files: str = ""  # the same of the test videos used

    @property
    def training_skips(self) -> list[str]:
        """The train and val videos left out: what the model was trained without (a test
        video found unreadable later does not change the model)."""
        return sorted(s for s in self.skipped if not s.startswith("test/"))


class FinetuneTrack:
    """Backbone + head trained end to end on clips; the trained backbone then extracts the
    test split once and the head is evaluated on those features."""

    name = "finetune"

    def __init__(
        self,
        *,
        root: str | None,
        cache_root: str | Path | None,
        recipe_overrides: dict[str, Any],
        option_overrides: dict[str, Any],
        device: str,
        progress: bool,
        bad_videos: str = "skip",
        open_dataset: Callable[[str], Any] | None = None,
    ) -> None:
        self.root, self.cache_root = root, cache_root
        self.open_dataset = open_dataset or self._open
        self.overrides = {"recipe": recipe_overrides, "options": option_overrides}
        self.device, self.progress, self.bad_videos = device, progress, bad_videos
        self.clips: dict[tuple[str, int], _ClipData] = {}

    def clip_data(self, dataset: str, options) -> _ClipData:
        """The usable videos of ``dataset`` for clips of ``options`` (FinetuneOptions: a
        video needs ``options.min_frames`` frames), probed once per dataset and length."""
        key = (dataset, options.min_frames)
        if key not in self.clips:
            self.clips[key] = self._probe(dataset, options.min_frames)
        return self.clips[key]

    def _open(self, name: str):
        from fsarbench.data.datasets import get_dataset, is_synthetic

        return get_dataset(name, root=None if is_synthetic(name) else self.root)

    def _probe(self, name: str, min_frames: int) -> _ClipData:
        from fsarbench.data.datasets import listed_apart
        from fsarbench.data.probe_cache import ProbeCache, probe_cache_path
        from fsarbench.features.cache import default_cache_root
        from fsarbench.training.clip_data import usable_split

        ds = self.open_dataset(name)
        listed = listed_apart(name, ds)
        probes = ProbeCache(probe_cache_path(self.cache_root or default_cache_root(), ds.variant))
        splits, skipped = {}, []
        for split in ("train", "val", "test"):
            splits[split], bad = usable_split(
                listed[split],
                split,
                dataset=ds.variant,
                flip_ok=ds.flip_ok,
                way=5,
                shot=1,
                queries=1,
                on_bad=self.bad_videos,
                min_frames=min_frames,
                probes=probes,
            )
            skipped += bad
        if skipped:
            log.warning("%s: left out %d video(s): %s", name, len(skipped), "; ".join(skipped[:3]))
        used = [*splits["train"].records, *splits["val"].records]
        stamps = files_stamp(used), files_stamp(splits["test"].records)
        return _ClipData(ds, splits, skipped, ds.split_md5s(), *stamps)

    @staticmethod
    def features_ready(cell: Cell) -> bool:
        """Always: this track's data is a probe of the videos (kept per dataset), and its
        features are made by training."""
        return True

    def data(self, cell: Cell) -> TrackData:
        options = self.recipe(cell).options
        c = self.clip_data(cell.dataset, options)
        # the training's and the test features' (bf16 on one GPU, fp16 on another)
        precision = precision_entry(training_precision(self.device, options.amp))
        info = {
            "split_md5": c.split_md5,
            **precision,
            "skipped_videos": stable_hash(sorted(c.skipped)),
            # the files the number comes from (the frozen track's cache keys name them): a
            # replaced test or train video left the cell's record served as current
            "files": {"train_val": c.train_files, "test": c.test_files},
        }
        test = c.splits["test"]
        names = c.dataset.class_names("test")
        val = len(c.splits["val"].records)
        # the same as info where no test video is left out (model folders keep their names)
        unit = {"split_md5": c.split_md5, "skipped_videos": stable_hash(c.training_skips)}
        unit.update(precision)
        return TrackData(
            cell.dataset, c.dataset.variant, info, test.classes, names, c.skipped, val, unit
        )

    def pools(self, cell: Cell) -> DatasetPools:
        """What ``cell``'s dataset can serve: the videos the probe found usable for its clips
        (exact: the run draws its episodes from these)."""
        c = self.clip_data(cell.dataset, self.recipe(cell).options)
        splits = {
            name: SplitPool(
                split.classes,
                c.dataset.class_names(name),
                sum(s.startswith(f"{name}/") for s in c.skipped),
            )
            for name, split in c.splits.items()
        }
        return DatasetPools(cell.dataset, c.dataset.variant, splits)

    @staticmethod
    def training_recipe(recipe):
        """The :class:`~fsarbench.training.recipe.Recipe` of training episodes."""
        return recipe.recipe

    def recipe(self, cell: Cell):
        from fsarbench.training.finetune_recipe import finetune_recipe

        return finetune_recipe(cell.method, cell.dataset, self.overrides, protocol=cell.protocol)

    @staticmethod
    def way_shot(recipe) -> tuple[int, int]:
        return recipe.recipe.way, recipe.recipe.shot

    def for_unit(self, recipe, unit: ModelUnit):
        """The finetune recipe with its training recipe at the unit's way and shot
        (:func:`unit_recipe`, under ``--recipe``'s overrides)."""
        inner = unit_recipe(recipe.recipe, unit, self.overrides["recipe"])
        return dataclasses.replace(recipe, recipe=inner)

    def build(self, cell: Cell, recipe) -> FewShotMethod:
        from fsarbench.training.finetune import build_video_method

        train_split = self.clip_data(cell.dataset, recipe.options).splits["train"]
        return build_video_method(
            cell.method,
            recipe.options,
            torch.device(self.device),
            seed=cell.train_seed,
            num_train_classes=train_split.num_classes,
            hparams=cell.hparams_dict,
            dataset=cell.dataset,
        )

    def train(self, unit: ModelUnit, recipe, model, out: Path) -> Trained:
        from fsarbench.training.finetune import finetune

        c = self.clip_data(unit.dataset, recipe.options)
        fingerprint = training_fingerprint(
            method=unit.name,
            model=model,
            hparams=model.hparams,
            recipe=recipe.identity(),
            seed=unit.train_seed,
            dataset=unit.dataset,
            track=self.name,
            data={
                "split_md5": c.split_md5,
                "skipped_videos": c.training_skips,
                "files": c.train_files,
                **precision_entry(training_precision(self.device, recipe.options.amp)),
            },
        )

        def run(resume: bool) -> TrainResult:
            return finetune(
                model,
                c.splits["train"],
                c.splits["val"],
                recipe,
                seed=unit.train_seed,
                out_dir=out,
                device=self.device,
                progress=self.progress,
                fingerprint=fingerprint,
                resume=resume,
            )

        try:
            result = _retrain_on_mismatch(run, out.name)
        except VideoDecodeError as err:  # damaged past the frames the probe decodes
            used = {name: c.splits[name] for name in ("train", "val")}
            # the first kept at once, whatever stops the search (each rank of a torchrun
            # run trains units of its own: no other rank waits on this one)
            record_damaged(c.dataset.variant, met(err), self.cache_root)
            damaged = find_damaged(used, err, min_frames=recipe.options.min_frames)
            record_damaged(c.dataset.variant, damaged, self.cache_root)
            self.clips.clear()  # probed again (from the cache) by the next use in this process
            rerun = (
                "Re-run and they are left out (and named in the records); this model then "
                "trains again from its first step, as its episodes change. Or replace the "
                "files first"
            )
            raise RuntimeError(
                damaged_message(unit.dataset, split_of(used, err.path), err, damaged, rerun)
            ) from None
        test = self.test_features(unit.dataset, model.state_dict(), recipe.options)
        return Trained(model.inner, test.store, result.summary())

    def test_features(self, dataset: str, state, options) -> SplitFeatures:
        """The test split's features under ``state``'s backbone (extracted once per digest);
        a video the probe read but the extraction could not is an error (the manifest's
        video indices would shift), never a silently different test set."""
        data = self.clip_data(dataset, options)
        feats, bad = extract_finetune_test(
            data.dataset,
            state,
            options,
            cache_root=self.cache_root,
            device=self.device,
            progress=self.progress,
        )
        probed = {s.split(": ")[0] for s in data.skipped}
        lost = sorted(v for v in bad if f"test/{v}" not in probed)
        if lost:
            damaged = extraction_failures(data.dataset, {v: bad[v] for v in lost})
            record_damaged(data.dataset.variant, damaged, self.cache_root)
            self.clips.clear()  # probed again (from the cache) by the next use in this process
            raise RuntimeError(
                f"{dataset}/test: the trained backbone's extraction could not read "
                f"{len(lost)} video(s) the probe could ({lost[:5]}: damaged past the frames "
                "the probe decodes). They are now recorded as unreadable: re-run and they are "
                "left out (and named in the records; the trained model is kept), or replace "
                "the files first"
            )
        failed = set(bad)
        served = [r.video_id for r in data.dataset.videos("test") if r.video_id not in failed]
        kept = [r.video_id for r in data.splits["test"].records]
        if served != kept:  # e.g. a file missing at the probe and back by the extraction
            extra = sorted(set(served) - set(kept))
            raise RuntimeError(
                f"{dataset}/test: the extraction read {len(extra)} video(s) the probe left out "
                f"({extra[:5]}), so the test episodes (drawn over the probed videos) would "
                "point at other videos' features; re-run (the videos are probed again)"
            )
        return feats


def training_precision(device: str, amp: bool) -> str:
    """The extraction precision matching the finetune training's (``select_precision``):
    "bf16" or "fp16" autocast on CUDA with ``amp``, "fp32" otherwise."""
    from fsarbench.distributed.precision import select_precision

    dtype = select_precision(torch.device(device), amp=amp).dtype
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def extract_finetune_test(
    dataset: Any,
    state,
    options,
    *,
    cache_root: str | Path | None,
    device: str,
    progress: bool,
    retry_failed: bool = True,
) -> tuple[SplitFeatures, dict[str, str]]:
    """Features of the test split of ``dataset`` (an opened dataset) under the backbone of
    finetune ``state``, with the finetune track's test clips (``options``: sampler,
    transform, sizes, normalisation), and the videos that could not be read: id -> cause,
    as the extraction recorded it (a missing file, a decode error); ``retry_failed``: as
    :func:`~fsarbench.features.extract.extract_split`'s."""
    from fsarbench.data.transforms import PRESETS
    from fsarbench.experiments.features import split_features
    from fsarbench.features.cache import default_cache_root
    from fsarbench.features.extract import SplitExtractConfig, extract_split
    from fsarbench.training.export import export_backbone

    cache_root = Path(cache_root) if cache_root is not None else default_cache_root()
    weights = export_backbone(state, cache_root / "backbones")
    preset = PRESETS[options.test_transform]
    config = SplitExtractConfig(
        backbone=options.backbone,
        weights=str(weights),
        frames=options.test_sampler,
        transform=options.test_transform,
        train=False,
        num_frames=options.frames,
        resolution=options.crop or preset.crop,
        resize=options.resize or preset.resize,
        norm=options.norm,
        flip=False,
        short=options.short,
        precision=training_precision(device, options.amp),
        tiny=options.tiny,
        batch_size=max(1, options.eval_chunk // 4),
        workers=options.workers,
        device=str(device),
        progress=progress,
    )
    cache, _ = extract_split(
        dataset.name,
        "test",
        config=config,
        cache_root=cache_root,
        dataset=dataset,
        retry_failed=retry_failed,
    )
    feats, _, bad = split_features(cache, dataset.variant)
    return feats, bad
