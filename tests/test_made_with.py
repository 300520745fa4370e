"""What a feature cache was extracted with: kept in its index, named when it is reused under
other library versions, and carried into the records of the numbers computed from it."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils.data import Dataset

import fsarbench as fb
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.runner import DatasetFeatures, RunOptions, run_cells
from fsarbench.features import made_with
from fsarbench.features.backbones import create_backbone
from fsarbench.features.cache import FeatureCache
from fsarbench.features.extract import extract_features
from fsarbench.training import SplitFeatures

T, HW = 2, 16


class Clips(Dataset):
    """``n`` random clips; the ``bad`` ones unreadable (so a second extraction retries them)."""

    def __init__(self, n: int, bad=()) -> None:
        self.n, self.bad = n, set(bad)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if i in self.bad:
            return {"clip": None, "index": i, "view": 0, "ok": False, "error": "corrupt"}
        clip = torch.rand(T, 3, HW, HW, generator=torch.Generator().manual_seed(i))
        return {"clip": clip, "index": i, "view": 0, "ok": True, "error": None}


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("resnet18", weights="none", seed=0)


def _extract(folder, backbone, data):
    cache, _ = extract_features(
        data, backbone, cache_dir=folder, num_frames=T, num_workers=0, progress=False
    )
    return cache


def _other_versions(monkeypatch, **changed: str) -> None:
    now = made_with.library_versions()
    monkeypatch.setattr(made_with, "library_versions", lambda: {**now, **changed})


def test_a_cache_keeps_what_extracted_it(tmp_path, backbone):
    cache = _extract(tmp_path / "c", backbone, Clips(3))
    (env,) = FeatureCache.open(cache.path).made_with
    assert env["libraries"] == made_with.library_versions() and "torch" in env["libraries"]
    assert env["device"] == "cpu" and env["threads"] == torch.get_num_threads()


def test_a_resumed_extraction_under_other_versions_is_added(tmp_path, backbone, monkeypatch):
    folder = tmp_path / "c"
    first = _extract(folder, backbone, Clips(4, bad={1}))
    assert not first.is_complete and len(first.made_with) == 1
    _extract(folder, backbone, Clips(4, bad={1}))  # same versions: nothing added
    assert len(FeatureCache.open(folder).made_with) == 1
    _other_versions(monkeypatch, torchvision="0.0.1")
    _extract(folder, backbone, Clips(4))  # the failed video, extracted under other versions
    envs = FeatureCache.open(folder).made_with
    assert FeatureCache.open(folder).is_complete
    assert [e["libraries"]["torchvision"] for e in envs] == [
        envs[0]["libraries"]["torchvision"],
        "0.0.1",
    ]


def test_nothing_written_credits_nothing_and_keeps_a_keyless_caches_identity(tmp_path, backbone):
    """A retry whose video fails again wrote no feature, yet listed its versions, and the
    rewritten index.json gave a keyless cache (identified by its files) a new identity:
    its ``eval --features`` records split in two."""
    from fsarbench.features.open import feature_identity

    folder = tmp_path / "c"
    cache = _extract(folder, backbone, Clips(3, bad={2}))
    identity = feature_identity(folder, FeatureCache.open(folder))
    made = cache.made_with
    _extract(folder, backbone, Clips(3, bad={2}))  # retried, fails again: nothing written
    assert FeatureCache.open(folder).made_with == made
    assert feature_identity(folder, FeatureCache.open(folder)) == identity
    _extract(folder, backbone, Clips(3))  # written now: the identity follows the numbers
    assert feature_identity(folder, FeatureCache.open(folder)) != identity


def test_features_stored_before_versions_were_kept_are_not_credited(tmp_path, backbone):
    from fsarbench.features.cache import MADE_WITH_FILE, UNKNOWN_MAKER

    folder = tmp_path / "c"
    _extract(folder, backbone, Clips(3, bad={1}))
    (folder / MADE_WITH_FILE).unlink()  # a cache written by earlier code
    assert FeatureCache.open(folder).made_with == []
    _extract(folder, backbone, Clips(3))
    unknown, env = FeatureCache.open(folder).made_with
    assert unknown == UNKNOWN_MAKER and env["libraries"] == made_with.library_versions()


def test_a_reused_cache_of_other_versions_is_named_once(tmp_path, backbone, monkeypatch, caplog):
    cache = _extract(tmp_path / "c", backbone, Clips(2))
    old = cache.made_with[0]["libraries"]["torchvision"]
    caplog.set_level(logging.WARNING)
    made_with.reused(cache)
    assert not caplog.records  # the versions it was made with
    _other_versions(monkeypatch, torchvision="9.9.9")
    assert made_with.version_changes(cache.made_with) == [f"torchvision {old} -> 9.9.9"]
    made_with.reused(cache)
    made_with.reused(cache)
    (line,) = [r.getMessage() for r in caplog.records]
    assert f"torchvision {old} -> 9.9.9" in line and str(cache.path) in line
    assert "delete the folder" in line
    assert made_with.version_changes([]) == []  # a cache written before versions were kept


def test_eval_features_names_a_cache_of_other_versions(tmp_path, backbone, monkeypatch, caplog):
    from fsarbench.features.open import open_feature_store

    cache = _extract(tmp_path / "c", backbone, Clips(2))
    _other_versions(monkeypatch, torch="9.9.9")
    caplog.set_level(logging.WARNING)
    assert open_feature_store(cache.path).made_with == cache.made_with
    assert "torch " in caplog.text and "-> 9.9.9" in caplog.text


def test_a_library_no_longer_installed_is_named(monkeypatch):
    now = made_with.library_versions()
    monkeypatch.setattr(made_with, "library_versions", lambda: {"torch": now["torch"]})
    env = {"libraries": {"torch": now["torch"], "decord": "0.6.0"}}
    assert made_with.version_changes([env]) == ["decord 0.6.0 -> not installed"]


def test_a_subset_store_answers_for_its_cache(tmp_path, backbone):
    import numpy as np

    from fsarbench.features.store import SubsetFeatureStore

    cache = _extract(tmp_path / "c", backbone, Clips(3))
    subset = SubsetFeatureStore(cache, np.array([0, 2]))
    assert made_with.store_made_with(subset) == cache.made_with != []
    assert made_with.store_made_with(fb.InMemoryFeatureStore(torch.zeros(2, T, 4))) == []


def test_records_carry_what_their_features_were_extracted_with(tmp_path):
    """In ``compute`` (beside the device that evaluated them), not in the record's identity:
    a cell's id and config hash are those of the same features without the field."""
    env = {"device": "cpu", "libraries": {"torch": "2.0.0", "decord": "0.6.0"}}

    def provider(name: str, envs: list) -> DatasetFeatures:
        g = torch.Generator().manual_seed(7)
        splits, names = {}, {}
        for split, n_cls in (("train", 6), ("val", 5), ("test", 5)):
            classes = torch.arange(n_cls).repeat_interleave(4).numpy()
            f = torch.randn(len(classes), 4, 8, generator=g)
            splits[split] = SplitFeatures(fb.InMemoryFeatureStore(f), classes, name)
            names[split] = [f"{split}{c}" for c in range(n_cls)]
        data = DatasetFeatures(name, name, splits, names, {"backbone": "toy"})
        data.made_with = envs
        return data

    cell = [Cell("protonet", "toy", 5, 1, label="protonet")]
    opts = dict(episodes=50, progress=False, recipe_overrides={"steps": 2, "val_episodes": 10})
    (with_env,) = run_cells(cell, lambda n: provider(n, [env]), RunOptions(tmp_path / "a", **opts))
    (without,) = run_cells(cell, lambda n: provider(n, []), RunOptions(tmp_path / "b", **opts))
    assert with_env.compute["features_made_with"] == [env]
    assert "features_made_with" not in without.compute
    assert (with_env.cell, with_env.config_hash) == (without.cell, without.config_hash)
    assert fb.load_records(tmp_path / "a")[0].compute["features_made_with"] == [env]


def test_an_extraction_is_credited_before_it_writes(tmp_path, backbone, monkeypatch):
    """Credited only at the end, a run killed (SIGKILL: no finally) after flushing features
    left them marked as made before versions were kept."""
    import fsarbench.features.extract as extract

    seen = []
    real = extract._run

    def watching(loader, encoder, cache, stats, *args):
        seen.append(FeatureCache.open(cache.path).made_with)
        return real(loader, encoder, cache, stats, *args)

    monkeypatch.setattr(extract, "_run", watching)
    cache = _extract(tmp_path / "c", backbone, Clips(2))
    assert seen == [cache.made_with] and len(cache.made_with) == 1


class NaNClips(Clips):
    """Clips the backbone turns into NaN features: the cache writer refuses the first batch."""

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        item["clip"] = torch.full((T, 3, HW, HW), float("nan"))
        return item


def test_an_extraction_whose_first_batch_was_refused_credits_nothing(tmp_path, backbone):
    """`written` counts batches handed to the writer: an extraction whose first batch the
    writer refused (NaN features) stored nothing, yet its versions stayed in made_with."""
    folder = tmp_path / "c"
    with pytest.raises(RuntimeError, match="NaN/inf features"):
        _extract(folder, backbone, NaNClips(3))
    cache = FeatureCache.open(folder)
    assert not cache.done_mask.any() and cache.made_with == []
