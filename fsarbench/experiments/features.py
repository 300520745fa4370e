"""Frozen features of a dataset's train/val/test splits, extracted once and cached."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fsarbench.config import build_config, check_names, check_range, load_yaml
from fsarbench.data.protocols import DEFAULT_PROTOCOL, Protocol, get_protocol
from fsarbench.experiments.tracks import DatasetFeatures, DatasetPools, SplitPool
from fsarbench.features.backbones import effective_norm
from fsarbench.features.store import SubsetFeatureStore
from fsarbench.training import SplitFeatures

__all__ = [
    "FeatureOutline",
    "FeaturePreset",
    "feature_preset",
    "FrozenFeatureProvider",
    "frozen_protocol",
    "split_features",
    "failure_causes",
]

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class FeaturePreset:
    """How a dataset's frozen features are made (see ``feature_presets.yaml``)."""

    backbone: str = "resnet50"
    weights: str = "imagenet"
    resolution: int = 224
    num_frames: int = 8
    train_views: int = 4
    tiny: bool = False  # ViT presets only: the tiny random test architecture (weights none)

    def __post_init__(self) -> None:
        for name in ("resolution", "num_frames", "train_views"):
            check_range("features", name, getattr(self, name), 1)
        if str(self.weights).lower() == "none":  # 'None' built a random image tower and
            object.__setattr__(self, "weights", "none")  # asked clip-fsar for OpenAI text


@dataclass(frozen=True)
class FeatureOutline:
    """A dataset's frozen features as a method is built for them, known before extraction:
    ``feature_shape`` ``(T, D)``, the training classes, the recorded ``info`` a method derives
    hyper-parameters from (backbone, weights)."""

    name: str
    feature_shape: tuple[int, int]
    num_train_classes: int
    info: dict[str, Any]


@functools.lru_cache(maxsize=1)
def _presets_table() -> dict[str, Any]:
    text = resources.files("fsarbench.experiments").joinpath("feature_presets.yaml").read_text()
    return check_presets_table(load_yaml(text) or {}, "feature_presets.yaml")


def check_presets_table(table: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a feature presets file (sections, dataset names, every composed preset)."""
    from fsarbench.data.datasets import list_datasets

    check_names(f"{where} (top level)", list(table), ["default", "datasets"])
    default = table.get("default") or {}
    build_config(FeaturePreset, default, where=f"{where}: default")
    datasets = table.get("datasets") or {}
    check_names(f"{where}: datasets", list(datasets), list_datasets())
    for name, values in datasets.items():
        build_config(FeaturePreset, {**default, **(values or {})}, where=f"{where}: {name}")
    return table


def feature_preset(dataset: str, overrides: dict[str, Any] | None = None) -> FeaturePreset:
    """The preset of ``dataset``: the file's ``default``, the dataset's entry, ``overrides``."""
    from fsarbench.data.datasets import settings_dataset

    table = _presets_table()
    entry = table.get("datasets", {}).get(settings_dataset(dataset), {})
    values = {**table.get("default", {}), **entry}
    values.update(overrides or {})
    return build_config(FeaturePreset, values, where=f"feature preset of {dataset!r}")


def frozen_protocol(protocol: Protocol) -> dict[str, Any]:
    """``protocol`` as the frozen track applies it: its training views have no role, so
    ``flip: query`` flips them as ``True`` does (and a record keeps the id it had before
    ``query`` existed: the features are the same), and they are not colour-jittered (HyRSM
    jitters query clips only; jittering the views would jitter support features too)."""
    out = {**protocol.to_dict(), "flip": protocol.flip is not False}
    out.pop("color_jitter", None)
    return out


class FrozenFeatureProvider:
    """``provider(dataset) -> DatasetFeatures``: extracts (or reuses) every split's features."""

    def __init__(
        self,
        *,
        root: str | Path | None = None,
        cache_root: str | Path | None = None,
        device: str = "cpu",
        workers: int | None = None,
        batch_size: int = 16,
        progress: bool = True,
        preset_overrides: dict[str, Any] | None = None,
        protocol: str = DEFAULT_PROTOCOL,
    ) -> None:
        self.root, self.cache_root = root, cache_root
        self.device, self.workers, self.batch_size = device, workers, batch_size
        self.progress, self.overrides = progress, preset_overrides or {}
        self.protocol = protocol

    def __call__(self, dataset: str, protocol: str | None = None) -> DatasetFeatures:
        features = self._features(dataset, protocol, extract=True)
        assert features is not None
        return features

    def cached(self, dataset: str, protocol: str | None = None) -> DatasetFeatures | None:
        """The features ``__call__`` would give when every split's cache is complete on
        disk, else ``None``: nothing is decoded or extracted (``run --plan``)."""
        return self._features(dataset, protocol, extract=False)

    def outline(self, dataset: str, protocol: str | None = None) -> FeatureOutline:
        """What building a method for ``dataset``'s features needs, before any extraction:
        the preset's ``[T, D]``, the training split's class count and the feature info a
        method derives hyper-parameters from."""
        from fsarbench.data.datasets import get_dataset, is_synthetic
        from fsarbench.features.backbones import backbone_spec

        preset = feature_preset(dataset, self.overrides)
        ds = get_dataset(dataset, root=None if is_synthetic(dataset) else self.root)
        info = {"backbone": preset.backbone, "weights": preset.weights}
        if preset.tiny:  # as _features records it: clip-fsar's plan built the full tower
            info["tiny"] = True
        shape = (preset.num_frames, backbone_spec(preset.backbone).feature_dim)
        return FeatureOutline(dataset, shape, len(ds.class_names("train")), info)

    def _features(
        self, dataset: str, protocol: str | None, *, extract: bool
    ) -> DatasetFeatures | None:
        from fsarbench.data.datasets import get_dataset, is_synthetic, listed_apart
        from fsarbench.experiments.feasibility import check_split_classes

        preset = feature_preset(dataset, self.overrides)
        protocol = get_protocol(protocol or self.protocol, dataset)
        # generated datasets live in their own cache, not under the data root
        root = None if is_synthetic(dataset) else self.root
        ds = get_dataset(dataset, root=root)
        listed_apart(dataset, ds)
        splits, names, skipped, keys, causes, made_with = {}, {}, [], {}, {}, []
        for split in SPLITS:
            cache = self._extract(ds, dataset, split, preset, protocol, extract)
            if cache is None:
                return None
            made_with += [env for env in cache.made_with if env not in made_with]
            splits[split], names[split], bad = split_features(cache, ds.variant)
            # a class whose files exist but none decodes passed the listing's check and left
            # the episodes: a confident number over the other classes, under the dataset's
            # name. Val is checked where validation episodes are drawn (val_manifest_for):
            # only cells that validate need it, and this provider does not know the recipe
            if split != "val":
                check_split_classes(dataset, split, splits[split].classes, names[split])
            skipped += [f"{split}/{v}" for v in bad]
            causes.update({f"{split}/{v}": cause for v, cause in bad.items()})
            keys[split] = cache.key
        info = {
            "backbone": preset.backbone,
            "weights": preset.weights,
            "resolution": preset.resolution,
            "num_frames": preset.num_frames,
            "test_frames": protocol.test_sampler,
            "train_frames": protocol.train_sampler,
            "protocol": frozen_protocol(protocol),
            "train_views": preset.train_views,
            "cache_keys": keys,
            "split_md5": ds.split_md5s(),
        }
        norm = effective_norm(preset.backbone, protocol.norm)
        if norm != protocol.norm:  # the backbone's normalisation beat the protocol's
            info["norm"] = norm
        if preset.tiny:
            info["tiny"] = True
        return DatasetFeatures(dataset, ds.variant, splits, names, info, skipped, causes, made_with)

    def listing(self, dataset: str) -> DatasetPools:
        """What ``dataset``'s splits can serve, from its split lists and the files present
        (nothing is decoded or extracted): every listed video whose file exists. The
        extraction may also leave out videos it cannot read (or too short ones)."""
        from fsarbench.data.datasets import get_dataset, is_synthetic, listed_apart

        ds = get_dataset(dataset, root=None if is_synthetic(dataset) else self.root)
        listed = listed_apart(dataset, ds)
        splits = {}
        for split in SPLITS:
            videos = listed[split]
            found = [v.class_index for v in videos if v.path.exists()]
            classes = np.asarray(found, dtype=np.int64)
            splits[split] = SplitPool(classes, ds.class_names(split), len(videos) - len(found))
        return DatasetPools(dataset, ds.variant, splits, left_out_causes="missing")

    def _extract(
        self,
        ds,
        dataset: str,
        split: str,
        preset: FeaturePreset,
        protocol: Protocol,
        extract: bool = True,
    ):
        """The cache of ``split`` of ``ds`` (the dataset opened once by the caller, so that a
        generated one is not made again under the data root); ``extract=False``: the complete
        cache on disk, or ``None``."""
        from fsarbench.experiments.cache_reuse import extract_reusing
        from fsarbench.features.extract import SplitExtractConfig, find_split_cache

        train = split == "train"
        config = SplitExtractConfig(
            backbone=preset.backbone,
            weights=preset.weights,
            frames=protocol.sampler(train),
            transform=protocol.transform(train),
            flip=protocol.flip is not False,  # views have no role: 'query' flips them
            norm=effective_norm(preset.backbone, protocol.norm),
            tiny=preset.tiny,
            num_frames=preset.num_frames,
            resolution=preset.resolution,
            views=preset.train_views if train else 1,
            batch_size=self.batch_size,
            workers=self.workers,
            device=self.device,
            progress=self.progress,
        )
        if not extract:
            return find_split_cache(
                dataset, split, dataset=ds, config=config, cache_root=self.cache_root
            )
        cache, stats = extract_reusing(
            dataset, split, dataset=ds, config=config, cache_root=self.cache_root
        )
        if stats is not None:  # counts and the first causes: the errors dict ran to megabytes
            log.info(
                "extracted %s/%s: %d written, %d already stored, %d failed%s (%.1f s, %.0f "
                "frames/s)",
                dataset,
                split,
                stats.written,
                stats.already_done,
                stats.failed,
                "".join(
                    f"; {key}: {' '.join(str(why).split())[:160]}"
                    for key, why in list(stats.errors.items())[:3]
                ),
                stats.seconds,
                stats.frames_per_s,
            )
        return cache


def split_features(cache, dataset: str) -> tuple[SplitFeatures, list[str], dict[str, str]]:
    """Usable videos of a cache (failed ones dropped and listed) as :class:`SplitFeatures`,
    the class-name table (class id -> name: the one the features' class ids index, for
    training and evaluation alike) and the failed videos (id -> :func:`failure_causes`)."""
    failed = np.asarray(cache.failed_mask)
    failed = failed.reshape(len(cache), -1).any(1) if failed.size else np.zeros(len(cache), bool)
    keep = np.flatnonzero(~failed)
    classes_all = np.asarray(cache.class_indices, dtype=np.int64)
    bad = failure_causes(cache, np.flatnonzero(failed).tolist())
    store = SubsetFeatureStore(cache, keep) if len(bad) else cache
    table = cache.class_name_table() or [
        str(c) for c in range(int(classes_all.max(initial=-1)) + 1)
    ]
    return SplitFeatures(store, classes_all[keep], dataset, table), table, bad


def failure_causes(cache, indices: list[int]) -> dict[str, str]:
    """Video id -> the error the extraction recorded for the videos at ``indices`` of
    ``cache`` (its first failed view's, on one line, at most 200 characters; "unreadable"
    when none was recorded)."""
    if not indices:
        return {}
    first: dict[int, str] = {}
    for key, error in sorted(cache.errors.items()):
        first.setdefault(int(key.split("/")[0]), str(error))
    return {cache.video_ids[i]: " ".join(first.get(i, "unreadable").split())[:200] for i in indices}
