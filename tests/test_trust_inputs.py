"""Bad inputs a user can give get a named error before any number: leaking or malformed
manifests, nothing to score, impossible training episodes, scientific-notation learning
rates, non-finite features, a meaningless ProtoNet temperature."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.cli.main import main
from fsarbench.config import ConfigError, build_config
from fsarbench.episodes import ManifestError
from fsarbench.guards import NonFiniteFeaturesError
from fsarbench.training import SplitFeatures
from fsarbench.training.recipe import Recipe
from fsarbench.training.trainer import EpisodeSampler

CLASSES = np.repeat(np.arange(10), 6)


def _manifest(**kw):
    spec = dict(way=5, shot=1, queries=2, episodes=50)
    return fb.make_manifest(CLASSES, **{**spec, **kw})


def _edited(change) -> dict:
    data = _manifest().to_dict()
    change(data)
    return data


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["query"][3].__setitem__(0, d["support"][3][0]), "uses a video more than"),
        (lambda d: d["classes"][7].__setitem__(1, d["classes"][7][0]), "uses a class more than"),
        (lambda d: d["query"][3].__setitem__(0, -1), "indexes video -1, outside its pool"),
        (lambda d: d["support"][0].__setitem__(0, 60), "indexes video 60, outside its pool"),
        (lambda d: d["query"][0].__setitem__(0, 1.7), "must hold integers"),
        (lambda d: d["query"].pop(), "query has shape"),
        (lambda d: d["spec"].__setitem__("shot", 2), "support has shape"),
    ],
)
def test_a_malformed_or_leaking_manifest_is_refused_on_load(tmp_path, change, message):
    with pytest.raises(ManifestError, match=message):
        fb.Manifest.from_dict(_edited(change))
    path = tmp_path / "m.json"
    path.write_text(__import__("json").dumps(_edited(change)))
    with pytest.raises(ManifestError, match=f"{path}: .*{message}"):
        fb.Manifest.load(path)


def test_a_manifest_that_is_not_a_mapping_is_a_named_error(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("[1, 2]")
    with pytest.raises(ManifestError, match="unsupported manifest format 'list'"):
        fb.Manifest.load(path)


def test_evaluation_refuses_leaks_no_queries_one_way_and_no_episodes():
    feats = torch.rand(len(CLASSES), 4, 8)
    method = fb.create_method("protonet", feature_dim=8, seq_len=4)
    leaking = _manifest()
    leaking.query[3, 0] = leaking.support[3, 0]  # built in memory, never loaded
    cases = [
        (leaking, "uses a video more than once"),
        (_manifest(queries=0), "no queries"),
        (_manifest(way=1), "1-way episodes cannot be scored"),
    ]
    for manifest, message in cases:
        with pytest.raises(ManifestError, match=message):
            fb.evaluate(method, feats, manifest, progress=False)
    with pytest.raises(ManifestError, match="at least one episode"):
        _manifest(episodes=0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--method", "protonet", "--ways", "1"], "--ways: must be at least 2, got 1"),
        (["run", "--method", "protonet", "--episodes", "0"], "--episodes: must be at least 1"),
        (["run", "--method", "protonet", "--shots", "0"], "--shots: must be at least 1"),
        (["eval", "protonet", "--dataset", "synth", "--episodes", "-5"], "at least 1, got -5"),
        (["eval", "protonet", "--dataset", "synth", "--way", "1"], "--way: must be at least 2"),
    ],
)
def test_impossible_cli_settings_stop_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_learning_rates_in_scientific_notation_and_non_finite_values():
    # PyYAML (YAML 1.1) reads 1e-4 as a string; --recipe lr=1e-4 is the documented example
    assert build_config(Recipe, {"lr": "1e-4"}).lr == 1e-4
    for value in (float("nan"), "inf", "fast"):
        with pytest.raises(ConfigError, match="Recipe.lr: expected a"):
            build_config(Recipe, {"lr": value})


def test_training_episodes_the_split_cannot_serve_name_the_class():
    feats = torch.rand(len(CLASSES), 4, 8)
    data = SplitFeatures(
        fb.InMemoryFeatureStore(feats), CLASSES, "toy", [f"c{i}" for i in range(10)]
    )
    for fields, message in (
        ({"way": 30}, "30-way episodes need 30 classes"),
        ({"shot": 6}, "'c0'"),
    ):
        recipe = build_config(Recipe, fields)
        with pytest.raises(ManifestError, match=message):
            EpisodeSampler(data, recipe, seed=0, stage="main")
    with pytest.raises(ManifestError, match="no usable videos"):
        _ = SplitFeatures(fb.InMemoryFeatureStore(feats[:0]), CLASSES[:0], "toy").num_classes


def test_non_finite_features_are_named_not_blamed_on_the_method():
    feats = torch.rand(len(CLASSES), 4, 8)
    feats[17, 2, 3] = float("nan")
    feats[42, 0, 0] = float("inf")
    method = fb.create_method("protonet", feature_dim=8, seq_len=4)
    with pytest.raises(NonFiniteFeaturesError, match=r"2 video\(s\).*pool indices 17, 42"):
        fb.evaluate(method, feats, _manifest(episodes=500), progress=False, nonfinite="count_wrong")


def test_protonet_temperature_must_be_positive():
    for t in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            fb.create_method("protonet", feature_dim=8, seq_len=4, temperature=t)


def test_unreadable_feature_files_checkpoints_and_caches_are_named(tmp_path):
    from fsarbench.features.cache import CorruptCacheError, FeatureCache
    from fsarbench.features.open import FeatureFileError, open_feature_store
    from fsarbench.training.loop import CheckpointError, load_checkpoint

    text, empty = tmp_path / "text.pt", tmp_path / "empty.pt"
    text.write_text("not a tensor")
    empty.write_bytes(b"")
    for path in (text, empty):
        with pytest.raises(FeatureFileError, match=f"{path} cannot be read as a features file"):
            open_feature_store(path)
        with pytest.raises(CheckpointError, match=f"{path} cannot be read as a checkpoint"):
            load_checkpoint(path)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(FeatureFileError, match="holds a list, not a"):
        open_feature_store(tmp_path / "list.pt")
    torch.save({"feats": torch.rand(2, 3, 4)}, tmp_path / "dict.pt")
    with pytest.raises(FeatureFileError, match=r"without a 'features' tensor \(keys \['feats'\]\)"):
        open_feature_store(tmp_path / "dict.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
    # [videos, frames, patches, dims] tokens were read as [videos, views, frames, dims]: the
    # patches scored as frames, of the first frame only (55.68 printed for 77.11 pooled)
    torch.save(torch.rand(6, 8, 16, 32), tmp_path / "tokens.pt")
    with pytest.raises(FeatureFileError, match=r"4-D tensor \[6, 8, 16, 32\].*features.mean\(2\)"):
        open_feature_store(tmp_path / "tokens.pt")
    torch.save({"features": torch.rand(6, 8, 32)}, tmp_path / "pooled.pt")
    assert open_feature_store(tmp_path / "pooled.pt").feature_shape == (8, 32)
    # a numpy file: torch's advice to load it with weights_only=False (running any code the
    # file holds) was passed on; now it says how to save one
    np.save(tmp_path / "f.npy", np.zeros((6, 8, 32), np.float32))
    with pytest.raises(FeatureFileError, match=r"torch.from_numpy") as err:
        open_feature_store(tmp_path / "f.npy")
    assert "weights_only" not in str(err.value)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "index.json").write_text("")
    with pytest.raises(CorruptCacheError, match="delete the folder and extract again"):
        FeatureCache.open(cache)


def test_eval_on_other_features_writes_another_record_not_over_the_first(tmp_path, capsys):
    manifest = _manifest(episodes=40).save(tmp_path / "m.json")
    out = tmp_path / "out"
    for name in ("a.pt", "b.pt"):
        torch.save(torch.rand(len(CLASSES), 4, 8), tmp_path / name)
        argv = ["eval", "protonet", "--features", str(tmp_path / name), "--manifest"]
        assert main([*argv, str(manifest), "--out", str(out)]) == 0
    records = fb.load_records(out)
    assert len(records) == 2 and len({r.features["file_md5"] for r in records}) == 2
    bad = ["eval", "protonet", "--features", str(tmp_path / "a.pt"), "--manifest", str(manifest)]
    assert main([*bad, "--hparams", "[1]"]) == 2
    assert "--hparams takes a JSON object" in capsys.readouterr().err


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"views": 0}, r"extraction.views = 0 is out of range"),
        ({"num_frames": 0}, r"extraction.num_frames = 0 is out of range"),
        ({"resolution": -1}, r"extraction.resolution = -1 is out of range"),
        ({"frames": "bogus"}, "unknown sampler 'bogus'"),
        ({"transform": "bogus"}, "unknown transform preset 'bogus'"),
    ],
)
def test_impossible_extraction_settings_fail_before_any_video(fields, message):
    from fsarbench.features.extract import SplitExtractConfig

    with pytest.raises((ConfigError, KeyError), match=message):
        SplitExtractConfig(**fields)


def test_impossible_feature_presets_fail_before_any_work():
    from fsarbench.experiments.features import feature_preset

    with pytest.raises(ConfigError, match=r"features.train_views = 0 is out of range"):
        feature_preset("synth", {"train_views": 0})


def test_a_misspelled_grid_hyper_parameter_fails_when_the_grid_loads():
    from fsarbench.experiments.grids import load_grid_file

    text = "grids: {g: {datasets: [synth], methods: [{method: otam, hparams: {lamm: 2}}]}}"
    with pytest.raises(ConfigError, match=r"unknown key 'lamm' .*Did you mean 'lam'"):
        load_grid_file(text, "g.yaml")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"frames": 0}, "options.frames = 0"),
        ({"eval_chunk": 0}, "options.eval_chunk = 0"),
        ({"crop": -1}, "options.crop = -1"),
        ({"milestones": [0.5, float("nan")]}, None),
    ],
)
def test_impossible_finetune_options_and_nan_milestones_are_refused(fields, message):
    from fsarbench.training.finetune_recipe import FinetuneOptions

    if message is None:
        with pytest.raises(ConfigError, match=r"milestones\[1\]: expected a finite number"):
            build_config(Recipe, fields)
        return
    with pytest.raises(ConfigError, match=f"{message} is out of range"):
        build_config(FinetuneOptions, fields)


def test_a_micro_batch_that_does_not_divide_the_step_is_refused_with_the_recipe():
    """--recipe episodes_per_step=3 micro_batch=2 passed --plan and failed after probing
    and building, without naming the flag; the frozen track splits any remainder."""
    from fsarbench.training.finetune_recipe import FinetuneRecipe

    odd = Recipe(adapter="none", episodes_per_step=3, micro_batch=2)
    with pytest.raises(ConfigError, match="micro_batch = 2 must divide .*episodes_per_step = 3"):
        FinetuneRecipe(recipe=odd)
    FinetuneRecipe(recipe=Recipe(adapter="none", episodes_per_step=4, micro_batch=2))
    Recipe(episodes_per_step=3, micro_batch=2)  # frozen: fine


def test_eval_refuses_a_frozen_checkpoint_on_other_features():
    """A head trained on --protocol trx features was scored on the default seed features
    (68.80 against 89.08 on its own), with nothing said; eval now takes the checkpoint's
    protocol by default and refuses features made otherwise."""
    from fsarbench.cli import eval_cmd
    from fsarbench.data.protocols import get_protocol

    trx, seed = (get_protocol(p, "synth").to_dict() for p in ("trx", "seed"))
    info = {"backbone": "resnet18", "resolution": 64, "protocol": trx, "split_md5": {"test": "a"}}
    checkpoint = {"fingerprint": {"track": "frozen", "data": info}}
    trained = eval_cmd._trained_features(checkpoint)
    assert trained["protocol"]["name"] == "trx"  # eval's default protocol for it
    here = {**info, "split_md5": {"test": "b"}}  # another dataset: its own lists are fine
    eval_cmd._check_same_features(trained, here, "best.pt")
    with pytest.raises(ValueError, match=r"best.pt was trained on other features .*protocol"):
        eval_cmd._check_same_features(trained, {**here, "protocol": seed}, "best.pt")
    with pytest.raises(ValueError, match=r"resolution: trained 64, here 48"):
        eval_cmd._check_same_features(trained, {**here, "resolution": 48}, "best.pt")
    assert eval_cmd._trained_features({"fingerprint": {"track": "finetune"}}) == {}
    older = {k: v for k, v in trained.items() if k != "protocol"}  # made before protocols
    eval_cmd._check_same_features(older, {**here, "protocol": seed}, "best.pt")
    with pytest.raises(ValueError, match=r"norm: trained None, here 'clip'"):
        eval_cmd._check_same_features(older, {**here, "norm": "clip"}, "best.pt")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_finite_features_check_by_sum_is_exact(dtype):
    """The check sums the features first: +inf and -inf (a NaN sum), and finite values that
    overflow the sum, still get the per-video answer."""
    from fsarbench.guards import check_finite_features

    big = torch.finfo(dtype).max
    feats = torch.rand(6, 4, 8, dtype=dtype)
    feats[1, 0, 0], feats[4, 3, 7] = float("inf"), float("-inf")
    with pytest.raises(NonFiniteFeaturesError, match=r"2 video\(s\).*pool indices 11, 14"):
        check_finite_features(feats, np.arange(10, 16))
    overflowing = torch.full((6, 4, 8), big, dtype=dtype)
    if dtype != torch.float16:  # (half features are summed in float32, which holds them)
        assert not torch.isfinite(overflowing.sum())
    check_finite_features(overflowing, np.arange(6))  # finite values: no error
    check_finite_features(feats[:0], np.arange(0))  # no videos
