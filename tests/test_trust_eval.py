"""What ``eval`` files under a method and a dataset: checkpoints of another method or
dataset are refused by name, a feature cache's own dataset and split are kept, and what is
not a run of the protocol (no checkpoint, a tensor file, across datasets, another split) is a
variant that stays out of paper tables and the leaderboard."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_train_cmd import FakeProvider

import fsarbench as fb
import fsarbench.experiments.features as features_mod
from fsarbench.cli.eval_checks import (
    CheckpointMismatchError,
    FeaturesDatasetError,
    check_checkpoint,
    features_origin,
)
from fsarbench.cli.main import main
from fsarbench.features.cache import CacheKey, FeatureCache
from fsarbench.report.published import load_table
from fsarbench.report.records import group_entries
from fsarbench.report.tables import build_table
from fsarbench.results import load_record
from fsarbench.stats.rounding import fixed
from fsarbench.training import load_checkpoint

RECIPE = ["--recipe", "steps=2", "val_episodes=4", "episodes_per_step=2", "--no-progress"]


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """best.pt of a protonet trained on the fake dataset 'toy' (in-memory features)."""
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", FakeProvider)
    out = tmp_path / "m"
    assert main(["train", "protonet", "--dataset", "toy", "--out", str(out), *RECIPE]) == 0
    return out / "best.pt"


def _refused(capsys, argv: list[str]) -> str:
    """The error ``main(argv)`` printed (it must exit 2)."""
    capsys.readouterr()
    assert main(argv) == 2
    return capsys.readouterr().err


def _eval(tmp_path, *extra: str) -> int:
    argv = ["eval", "protonet", "--way", "5", "--shot", "1", "--episodes", "20"]
    return main([*argv, "--device", "cpu", "--out", str(tmp_path / "r"), *extra])


def test_eval_without_checkpoint_is_an_untrained_variant_kept_out_of_table_1(
    tmp_path, trained, capsys
):
    """An 'eval otam --dataset synth --out R' without --checkpoint wrote a record under the
    plain method name, and Table 1 showed that untrained 70.00 instead of the trained 72.90
    (which it named as 'not shown')."""
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained)) == 0
    assert _eval(tmp_path, "--dataset", "toy") == 0
    assert "recorded as the variant 'protonet [untrained]'" in capsys.readouterr().out
    records = fb.load_records(tmp_path / "r")
    untrained = next(r for r in records if r.recipe == {})
    assert untrained.tags == {"variant_label": "untrained"}
    entries = group_entries(records)
    assert sorted(e.system for e in entries) == ["protonet", "protonet [untrained]"]
    assert [e.is_variant for e in sorted(entries, key=lambda e: e.system)] == [False, True]
    table = build_table(load_table(1), entries, source="runs", stand_in="toy")
    shown = [c.entry for r in table.rows for c in r.cells if c.entry is not None]
    assert [e.system for e in shown] == ["protonet"]
    assert not any("not shown" in note for note in table.notes)


def test_eval_refuses_another_methods_checkpoint_by_name(tmp_path, trained, capsys):
    """A protonet checkpoint evaluated as OTAM stopped with "unknown key 'lam'"-style errors
    from the stored hyper-parameters; it now names the checkpoint's method."""
    argv = ["eval", "otam", "--dataset", "toy", "--checkpoint", str(trained), "--device", "cpu"]
    assert "holds a 'protonet' model, not 'otam'" in _refused(capsys, argv)
    with pytest.raises(CheckpointMismatchError):
        check_checkpoint(
            load_checkpoint(trained), method="otam", dataset="toy", where="b", cross_dataset=False
        )


def test_plain_state_dict_that_does_not_fit_is_named(tmp_path, trained, capsys):
    """A plain state dict (no fingerprint) of another head stopped with torch's key list;
    the error now says which method and feature size it was loaded into."""
    state = load_checkpoint(trained)["method"]
    torch.save(state, tmp_path / "plain.pt")
    argv = ["eval", "trx", "--dataset", "toy", "--checkpoint", str(tmp_path / "plain.pt")]
    assert "do not fit 'trx' at feature size 8" in _refused(capsys, [*argv, "--device", "cpu"])


def test_plain_state_dict_of_an_adapted_head_loads_behind_its_adapter(tmp_path, trained):
    """best.pt's 'method' saved on its own (adapter.* and inner.* keys) could not be
    evaluated at all: eval built the bare head. The keys now say it has the frame adapter."""
    state = load_checkpoint(trained)["method"]
    assert any(k.startswith("adapter.") for k in state)
    torch.save(state, tmp_path / "plain.pt")
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained)) == 0
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(tmp_path / "plain.pt")) == 0
    with_fp, plain = sorted(fb.load_records(tmp_path / "r"), key=lambda r: r.train_seed is None)
    assert plain.accuracy == with_fp.accuracy and with_fp.tags == {}


def test_plain_state_dict_is_a_variant_named_after_its_file(tmp_path, trained, capsys):
    """A plain state dict names no dataset, recipe or training seed (nothing to check it
    against): its number was filed as a run of the protocol, beside the trained model's record
    of the same cell. It is now the variant 'weights from FILE', kept out of paper tables."""
    torch.save(load_checkpoint(trained)["method"], tmp_path / "plain.pt")
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained)) == 0
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(tmp_path / "plain.pt")) == 0
    assert "recorded as the variant 'protonet [weights from plain.pt]'" in capsys.readouterr().out
    entries = group_entries(fb.load_records(tmp_path / "r"))
    assert sorted((e.system, e.is_variant) for e in entries) == [
        ("protonet", False),
        ("protonet [weights from plain.pt]", True),
    ]
    table = build_table(load_table(1), entries, source="runs", stand_in="toy")
    shown = [c.entry for r in table.rows for c in r.cells if c.entry is not None]
    assert [e.system for e in shown] == ["protonet"]


def test_eval_refuses_a_checkpoint_trained_on_another_dataset(tmp_path, trained, capsys):
    """_check_same_features compared backbone and protocol, not the dataset: a model trained
    on one dataset was recorded as the other's own result."""
    argv = ["eval", "protonet", "--dataset", "toy2", "--checkpoint", str(trained)]
    assert "trained on 'toy', and --dataset is 'toy2'" in _refused(capsys, argv)
    assert (
        _eval(tmp_path, "--dataset", "toy2", "--checkpoint", str(trained), "--cross-dataset") == 0
    )
    (record,) = fb.load_records(tmp_path / "r")
    assert record.dataset == "toy2" and record.tags == {"variant_label": "trained on toy"}
    assert "protonet [trained on toy]: " in capsys.readouterr().out


def _cache(tmp_path, *, dataset: str | None, split: str = "test") -> tuple[str, str]:
    """A feature cache of the fake test split (keyed by ``dataset`` and ``split``, or
    keyless), and a manifest over it."""
    test = FakeProvider()("toy").splits["test"]
    feats = test.store.features
    n, t, d = feats.shape
    key = None
    if dataset is not None:
        key = CacheKey(
            dataset, split, "x", "tsn", "t", "r18", "w", t, 64, 1, 0, data=f"{dataset}:md5a"
        )
    path = tmp_path / f"cache-{dataset}-{split}"
    ids = [f"v{i}" for i in range(n)]
    cache = FeatureCache.create(
        path,
        video_ids=ids,
        num_views=1,
        num_frames=t,
        feature_dim=d,
        key=key,
        class_indices=[int(c) for c in test.classes],
    )
    cache.write(np.arange(n), np.zeros(n, dtype=int), feats.numpy().astype(np.float16))
    cache.flush()
    fb.make_manifest(test.classes, way=5, shot=1, episodes=20).save(tmp_path / "m.json")
    return str(path), str(tmp_path / "m.json")


def test_eval_features_keeps_the_cache_dataset_and_refuses_another(tmp_path, trained, capsys):
    """'eval --features X --dataset D' filed a number under any D: synth features were
    shown as a UCF101 run in Table 1, bold."""
    path, manifest = _cache(tmp_path, dataset="toy")
    args = ["--features", path, "--manifest", manifest, "--checkpoint", str(trained)]
    error = _refused(capsys, ["eval", "protonet", *args, "--dataset", "ucf101"])
    assert "holds features of 'toy' (test split), and --dataset is 'ucf101'" in error
    with pytest.raises(FeaturesDatasetError):
        features_origin(FeatureCache.open(path), "ucf101", path)
    assert _eval(tmp_path, *args) == 0
    (record,) = fb.load_records(tmp_path / "r")
    assert (record.dataset, record.split) == ("toy", "test")
    assert record.tags == {"variant_label": "stored features"}  # the manifest is the user's
    assert record.features["split_md5"] == {"test": "md5a"} and record.protocol == "custom"


def test_a_manifest_whose_spec_was_edited_is_recorded_as_a_variant(tmp_path, trained, caplog):
    """A manifest with spec.seed edited to 7 over seed 0's episodes was recorded as seed 7's
    draw (likewise an edited dataset, split or first episode)."""
    import dataclasses
    import json

    from fsarbench.cli.eval_checks import OTHER_EPISODES, UNCHECKED_EPISODES, episodes_note

    path, manifest = _cache(tmp_path, dataset="toy")
    data = json.loads(Path(manifest).read_text())
    data["spec"]["seed"] = 7
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    args = ["--features", path, "--manifest", str(edited), "--checkpoint", str(trained)]
    assert _eval(tmp_path, *args) == 0
    (record,) = fb.load_records(tmp_path / "r")
    assert record.seed == 7
    assert record.tags == {"variant_label": "stored features, episodes not drawn from their spec"}
    assert "episodes not drawn from their spec (seed 7" in caplog.text
    # the check itself: over the features' pools, and over the pools a manifest uses
    labels = np.repeat(np.arange(8), 6)
    small = fb.make_manifest(labels, way=5, shot=1, episodes=3, seed=4, dataset="d")
    assert episodes_note(small, labels) == ""  # three episodes use few videos: store's pools
    later = dataclasses.replace(small, meta={**small.meta, "first_episode": 1})
    assert episodes_note(later, labels) == OTHER_EPISODES
    # without class ids (a tensor file) a draw that leaves videos unused cannot be checked:
    # it was called "not drawn from its spec"
    assert episodes_note(small, None) == episodes_note(later, None) == UNCHECKED_EPISODES
    dropped = fb.make_manifest(
        np.repeat(np.arange(8), [1, 6, 6, 6, 6, 6, 6, 6]),
        way=5,
        shot=1,
        episodes=400,
        min_videos_policy="drop",
    )
    assert episodes_note(dropped, np.repeat(np.arange(8), [1, 6, 6, 6, 6, 6, 6, 6])) == ""


def test_eval_features_of_a_val_cache_is_recorded_as_the_val_split(tmp_path, trained):
    path, manifest = _cache(tmp_path, dataset="toy", split="val")
    assert (
        _eval(tmp_path, "--features", path, "--manifest", manifest, "--checkpoint", str(trained))
        == 0
    )
    (record,) = fb.load_records(tmp_path / "r")
    assert record.split == "val"
    assert record.tags == {"variant_label": "stored features, val split"}


def test_eval_features_of_a_tensor_file_is_a_variant(tmp_path, trained):
    """A tensor file ties nothing to the dataset named: its record is the 'features file'
    variant, never a run in a paper table."""
    test = FakeProvider()("toy").splits["test"]
    torch.save(test.store.features, tmp_path / "f.pt")
    _, manifest = _cache(tmp_path, dataset=None)
    args = ["--features", str(tmp_path / "f.pt"), "--manifest", manifest]
    assert _eval(tmp_path, *args, "--checkpoint", str(trained), "--dataset", "toy") == 0
    (record,) = fb.load_records(tmp_path / "r")
    assert record.dataset == "toy" and record.tags == {"variant_label": "features file"}
    (entry,) = group_entries([record])
    assert entry.system == "protonet [features file]" and entry.is_variant
    table = build_table(load_table(1), [entry], source="runs", stand_in="toy")
    assert not [c for r in table.rows for c in r.cells if c.entry is not None]


def test_a_features_file_of_more_frames_than_dims_is_warned_about(tmp_path, caplog):
    """A [videos, dims, frames] file was read as frames x dims and printed a number."""
    test = FakeProvider()("toy").splits["test"]
    frames, dims = test.store.features.shape[-2:]
    torch.save(test.store.features.transpose(1, 2).contiguous(), tmp_path / "f.pt")
    _, manifest = _cache(tmp_path, dataset=None)
    assert _eval(tmp_path, "--features", str(tmp_path / "f.pt"), "--manifest", manifest) == 0
    said = f"is read as {dims} frames of {frames} dims ([videos, frames, dims])"
    assert said in caplog.text and "transpose it" in caplog.text


def test_eval_features_without_dataset_or_key_is_custom(tmp_path, trained):
    """A checkpoint evaluated on an untraceable tensor file with no --dataset is filed under
    'custom' (not refused as another dataset: the file names none)."""
    test = FakeProvider()("toy").splits["test"]
    torch.save(test.store.features, tmp_path / "f.pt")
    _, manifest = _cache(tmp_path, dataset=None)
    args = ["--features", str(tmp_path / "f.pt"), "--manifest", manifest]
    assert _eval(tmp_path, *args, "--checkpoint", str(trained)) == 0
    (record,) = fb.load_records(tmp_path / "r")
    assert record.dataset == "custom" and record.tags == {"variant_label": "features file"}


def test_a_checkpoint_on_stored_features_made_otherwise_is_refused(tmp_path, trained, capsys):
    """'eval --features CACHE --checkpoint' compared nothing: a head trained on --protocol
    trx features was evaluated on the seed cache (and the other way round), recorded as a
    seed-protocol run, and shown in Table 1 (89.52 over the run's 80.04)."""
    path, manifest = _cache(tmp_path, dataset="toy")
    best = load_checkpoint(trained)
    best["fingerprint"]["data"] = {"backbone": "r18", "resolution": 48, "num_frames": 4}
    torch.save(best, tmp_path / "b48.pt")
    argv = ["eval", "protonet", "--features", path, "--manifest", manifest]
    error = _refused(capsys, [*argv, "--checkpoint", str(tmp_path / "b48.pt")])
    assert "trained on other features" in error and "resolution: trained 48, here 64" in error
    best["fingerprint"]["data"]["resolution"] = 64
    torch.save(best, tmp_path / "b64.pt")
    assert (
        _eval(
            tmp_path,
            "--features",
            path,
            "--manifest",
            manifest,
            "--checkpoint",
            str(tmp_path / "b64.pt"),
        )
        == 0
    )


def test_a_checkpoint_on_a_tensor_file_of_other_frames_is_refused(tmp_path, trained, capsys):
    """A 4-frame model on an 8-frame tensor file gave a number without a word (the same
    features as a cache were refused)."""
    test = FakeProvider()("toy").splits["test"]
    feats = test.store.features
    torch.save(torch.cat([feats, feats], 1), tmp_path / "f2.pt")  # twice the frames
    _, manifest = _cache(tmp_path, dataset=None)
    best, frames = load_checkpoint(trained), feats.shape[1]
    best["fingerprint"]["data"] = {**best["fingerprint"]["data"], "num_frames": frames}
    torch.save(best, tmp_path / "b.pt")
    argv = ["eval", "protonet", "--features", str(tmp_path / "f2.pt"), "--manifest", manifest]
    error = _refused(capsys, [*argv, "--checkpoint", str(tmp_path / "b.pt")])
    assert f"trained on {frames}-frame features and {tmp_path / 'f2.pt'} holds" in error


def test_dataset_mode_flags_with_features_are_refused(tmp_path, capsys):
    """--protocol, --root and --cache with --features were ignored: a record said protocol
    'seed' for an evaluation asked to follow 'trx'."""
    path, manifest = _cache(tmp_path, dataset="toy")
    argv = ["eval", "protonet", "--features", path, "--manifest", manifest]
    assert "--root and --cache set where" in _refused(
        capsys, [*argv, "--root", str(tmp_path), "--cache", str(tmp_path)]
    )
    assert "does not say which protocol made it" in _refused(capsys, [*argv, "--protocol", "trx"])


def test_a_cache_key_names_its_protocol(tmp_path):
    from fsarbench.cli.eval_checks import cache_protocol
    from fsarbench.data.protocols import get_protocol

    for name in ("seed", "trx", "hyrsm"):
        p = get_protocol(name, "synth")
        key = CacheKey(
            "synth", "test", "x", f"{p.test_sampler}:test", p.test_transform, "r", "w", 8, 64, 1, 0
        )
        cache = FeatureCache.create(
            tmp_path / name,
            video_ids=["a"],
            num_views=1,
            num_frames=8,
            feature_dim=2,
            key=key,
        )
        assert cache_protocol(cache) == name


def test_a_checkpoint_trained_with_overrides_keeps_its_name(tmp_path, trained):
    """A model run trained as 'otam[lam=0.5]' evaluated with 'eval otam' was recorded as the
    plain method and filled the paper's OTAM row with the override's number."""
    best = load_checkpoint(trained)
    best["fingerprint"]["method"] = "protonet[metric=cosine]"
    torch.save(best, tmp_path / "o.pt")
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(tmp_path / "o.pt")) == 0
    (record,) = fb.load_records(tmp_path / "r")
    assert record.method == "protonet[metric=cosine]"


def test_a_variant_never_shares_a_run_records_cell_or_setting(tmp_path, trained):
    """A --cross-dataset variant got exactly the cell id of a run record of the same config
    and replaced it; and a later run moved eval variants to superseded/ as older configs of
    its own cells."""
    assert (
        _eval(tmp_path, "--dataset", "toy2", "--checkpoint", str(trained), "--cross-dataset") == 0
    )
    (variant,) = fb.load_records(tmp_path / "r")
    assert variant.features["eval_variant"] == "trained on toy"
    plain = dataclasses.replace(variant, tags={}, features={})
    assert variant.setting != plain.setting


def test_a_val_split_variant_is_no_mix_of_test_episodes(tmp_path, trained):
    """An eval of a val cache in a run's folder made run print 'mixed test episodes' and
    merge refuse the folder, though every test record shared one protocol."""
    from fsarbench.report.episode_protocol import protocol_mismatches

    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained)) == 0
    path, manifest = _cache(tmp_path, dataset="toy", split="val")
    argv = ["--features", path, "--manifest", manifest, "--checkpoint", str(trained)]
    assert _eval(tmp_path, *argv) == 0
    records = fb.load_records(tmp_path / "r")
    assert sorted(r.split for r in records) == ["test", "val"]
    assert protocol_mismatches(records) == []
    summary = pd.read_csv(tmp_path / "r" / "summary.csv", keep_default_na=False)
    assert sorted(summary["variant"]) == ["", "stored features, val split"]


def test_cross_dataset_without_a_checkpoint_is_refused(tmp_path, capsys):
    """--cross-dataset names a checkpoint's training dataset; without one it did nothing."""
    argv = ["eval", "protonet", "--dataset", "toy", "--cross-dataset"]
    assert "--cross-dataset evaluates a --checkpoint" in _refused(capsys, argv)


def test_eval_records_per_class_accuracy_by_class_name(tmp_path, trained):
    """eval keyed its record's per-class accuracies '0', '1', ... (train and run use names)."""
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained)) == 0
    (record,) = fb.load_records(tmp_path / "r")
    names = set(FakeProvider()("toy").class_names["test"])
    assert record.per_class_accuracy and set(record.per_class_accuracy) <= names


def test_a_finetune_checkpoint_on_stored_features_is_named_as_such(tmp_path, trained, capsys):
    """A finetune checkpoint given with --features was refused with ~120 'unexpected key
    backbone.trunk...' names and a question whether it was another method's."""
    import torch

    data = torch.load(trained, weights_only=False)
    data["method"]["backbone.trunk.conv1.weight"] = torch.zeros(2, 3, 1, 1)
    finetuned = tmp_path / "finetuned.pt"
    torch.save(data, finetuned)
    path, manifest = _cache(tmp_path, dataset="toy")
    argv = ["eval", "protonet", "--features", path, "--manifest", manifest]
    message = _refused(capsys, [*argv, "--checkpoint", str(finetuned)])
    assert "finetune-track checkpoint" in message and "--dataset D" in message


def test_hparams_other_than_the_checkpoints_are_an_eval_variant(tmp_path, trained, capsys):
    """'eval protonet --checkpoint best.pt --hparams {"metric": "cosine"}' evaluated another
    head than the one trained and filed it under the plain method name, beside the trained
    model's own record of the same cell."""
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained)) == 0
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained)) == 0  # same cell
    stored = load_checkpoint(trained)["hparams"]["metric"]
    same = ["--hparams", f'{{"metric": "{stored}"}}']  # the trained value: no variant
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained), *same) == 0
    other = "cosine" if stored != "cosine" else "sqeuclidean"
    changed = ["--hparams", f'{{"metric": "{other}"}}']
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained), *changed) == 0
    assert f"recorded as the variant 'protonet [evaluated with metric={other}]'" in (
        capsys.readouterr().out
    )
    records = fb.load_records(tmp_path / "r")
    assert sorted(r.features.get("eval_variant", "") for r in records) == [
        "",
        f"evaluated with metric={other}",
    ]


def test_num_train_classes_other_than_the_checkpoints_is_refused(tmp_path, trained, capsys):
    """The option was ignored whenever the checkpoint stored a count."""
    stored = load_checkpoint(trained)["num_train_classes"]
    assert stored is not None
    argv = ["eval", "protonet", "--way", "5", "--shot", "1", "--episodes", "20", "--device"]
    argv += ["cpu", "--dataset", "toy", "--checkpoint", str(trained)]
    err = _refused(capsys, [*argv, "--num-train-classes", str(stored + 1)])
    assert f"--num-train-classes {stored + 1} contradicts" in err
    assert main([*argv, "--num-train-classes", str(stored)]) == 0


def test_a_checkpoint_trained_by_other_code_is_a_variant(tmp_path, trained, capsys, monkeypatch):
    """A model trained with mean pooling, scored after an edit by max pooling, was filed as
    the current method (and replaced the run's record of the cell); the checkpoint's
    fingerprint names the code that trained it."""
    import fsarbench.cli.eval_cmd as eval_cmd

    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained)) == 0
    (record,) = fb.load_records(tmp_path / "r")
    assert record.tags == {}
    monkeypatch.setattr(eval_cmd, "code_digest", lambda model: "0123456789abcdef")
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained)) == 0
    assert "'protonet [trained with other code]'" in capsys.readouterr().out
    labels = sorted(str(r.tags.get("variant_label")) for r in fb.load_records(tmp_path / "r"))
    assert labels == ["None", "trained with other code"]


def test_an_eval_of_other_episodes_keeps_the_record_it_replaces(tmp_path, trained, caplog):
    """The cell id does not name the episode count: 'eval --episodes 400' into a folder with
    the 500-episode record of the cell replaced it without a word and kept nothing."""
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained)) == 0
    (first,) = fb.load_records(tmp_path / "r")
    argv = ["--dataset", "toy", "--checkpoint", str(trained)]
    assert _eval(tmp_path, *argv, "--episodes", "30") == 0
    (second,) = fb.load_records(tmp_path / "r")
    assert second.cell == first.cell and second.episodes == 30
    assert "replaces a record of the same cell on other test episodes (20 episodes" in caplog.text
    kept = load_record(tmp_path / "r" / "superseded" / f"{first.cell}.json")
    assert kept.episodes == 20 and kept.accuracy == first.accuracy


def test_a_model_trained_with_hparams_is_filed_under_them(tmp_path, trained, monkeypatch):
    """'train otam --hparams {"lam": 0.5}' then 'eval' was filed as plain 'otam' and ranked
    beside the protocol's model; run names such a model 'otam[lam=0.5]'."""
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", FakeProvider)
    out = tmp_path / "lam"
    argv = ["train", "otam", "--dataset", "toy", "--out", str(out), *RECIPE]
    assert main([*argv, "--hparams", '{"lam": 0.5}']) == 0
    assert (
        main(["train", "otam", "--dataset", "toy", "--out", str(tmp_path / "plain"), *RECIPE]) == 0
    )
    for model in (out, tmp_path / "plain"):
        argv = ["eval", "otam", "--way", "5", "--shot", "1", "--episodes", "20", "--dataset", "toy"]
        argv += ["--checkpoint", str(model / "best.pt"), "--device", "cpu"]
        assert main([*argv, "--out", str(tmp_path / "r")]) == 0
    assert sorted(r.method for r in fb.load_records(tmp_path / "r")) == ["otam", "otam[lam=0.5]"]


def test_manifest_mode_refuses_the_dataset_modes_episode_flags(tmp_path, capsys):
    """'eval --features F --manifest M --way 10 --shot 3 --episodes 20 --seed 3' evaluated
    the manifest's 5-way 1-shot 100 episodes without a word that the flags were ignored."""
    features, manifest = _cache(tmp_path, dataset=None)
    argv = ["eval", "protonet", "--features", features, "--manifest", manifest, "--device", "cpu"]
    err = _refused(capsys, [*argv, "--way", "10", "--shot", "1", "--episodes", "7"])
    assert "--way 10, --episodes 7 contradict --manifest" in err
    assert main([*argv, "--way", "5", "--shot", "1"]) == 0  # the manifest's own: fine


def test_an_eval_of_the_datasets_features_names_the_pipeline_that_made_them(
    tmp_path, trained, monkeypatch
):
    """'eval --dataset' recorded the method's code only: after a decoding change its record
    stayed current while run's records of the same features were marked stale."""
    from fsarbench import provenance
    from fsarbench.provenance import pipeline_digest
    from fsarbench.results import stale_reasons

    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained)) == 0
    (record,) = fb.load_records(tmp_path / "r")
    assert record.provenance["code"]["pipeline"] == pipeline_digest()
    assert stale_reasons(record) == []
    with monkeypatch.context() as patched:
        patched.setattr(provenance, "pipeline_digest", lambda: "0" * 16)
        assert stale_reasons(record) == ["code:pipeline"]
    path, manifest = _cache(tmp_path, dataset="toy")  # features made elsewhere: not named
    args = ["--features", path, "--manifest", manifest, "--checkpoint", str(trained)]
    assert main(["eval", "protonet", "--device", "cpu", "--out", str(tmp_path / "f"), *args]) == 0
    (record,) = fb.load_records(tmp_path / "f")
    assert "pipeline" not in record.provenance["code"]


def test_a_checkpoint_that_is_not_the_finished_runs_selected_model_is_a_variant(
    tmp_path, trained, capsys
):
    """'eval --checkpoint last.pt', a best.pt of a run killed at step 200 of 1000, or a model
    trained before a train video was damaged were each filed as the run of the protocol
    (same record id) and replaced its record."""
    folder = trained.parent
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained)) == 0
    (record,) = fb.load_records(tmp_path / "r")
    assert record.tags == {}  # the finished run's best.pt: the protocol's number
    last = torch.load(folder / "last.pt", map_location="cpu", weights_only=False)
    assert last["step"] == 0  # a stage end
    cases = {}
    # a finished run's last.pt (step 0 of the stage after its last) read "resume point at
    # step 0", the untrained model to a reader; its history's last row says which weights
    final = last["history"][-1]
    after = f"step {final['step']} of stage {final['stage']}"
    assert final["step"] > 0
    cases[f"resume point: the weights after {after}, not val-selected"] = folder / "last.pt"
    cut = tmp_path / "cut"
    cut.mkdir()
    torch.save(torch.load(trained, map_location="cpu", weights_only=False), cut / "best.pt")
    torch.save({**last, "step": 7}, cut / "last.pt")
    cases["unfinished training (its last.pt is at step 7)"] = cut / "best.pt"
    damaged = tmp_path / "damaged"
    shutil.copytree(cut, damaged)
    (damaged / "last.pt").write_bytes(b"not a checkpoint")
    unknown = "its last.pt cannot be read: finished training or not is unknown"
    cases[unknown] = damaged / "best.pt"  # it was filed as the run's finished model
    for label, path in cases.items():
        assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(path)) == 0
        assert f"'protonet [{label}]'" in capsys.readouterr().out
    labels = {str(r.tags.get("variant_label")) for r in fb.load_records(tmp_path / "r")}
    assert labels == {"None", *cases}


def test_a_frozen_model_trained_on_other_train_features_is_named_so(tmp_path):
    """A model trained before a train video was damaged (or replaced) has other train
    features in its fingerprint than the dataset gives now; its number is not the run's."""
    from fsarbench.cli.eval_cmd import _training_state

    keys = {"train": "a" * 16, "val": "b" * 16, "test": "c" * 16}
    data = {
        "method": {},
        "selection": "val accuracy",
        "fingerprint": {"track": "frozen", "data": {"cache_keys": keys}},
    }
    path = str(tmp_path / "best.pt")
    same = {"features": {"cache_keys": dict(keys)}}
    assert _training_state(path, data, same, None) == ""
    moved = {"features": {"cache_keys": {**keys, "train": "d" * 16}}}
    assert _training_state(path, data, moved, None) == "trained on other train/val features"
    assert _training_state(path, data, moved, "ucf101") == ""  # --cross-dataset: by design
    assert _training_state(path, data, {"features": {}}, None) == ""  # unknown: not judged


def test_an_eval_into_a_runs_folder_refreshes_its_tables_and_report(tmp_path, trained):
    """'eval --out RUN' rewrote summary.csv but not tables/*.md, the paper tables, figures or
    report: until the next run or merge they showed the record the eval had replaced."""
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained)) == 0
    out = tmp_path / "r"
    assert main(["merge", "--out", str(out)]) == 0  # as a run leaves it: tables/ written
    (first,) = fb.load_records(out)
    table = out / "tables" / "toy__frozen.md"
    assert f"{fixed(first.accuracy)} ± {fixed(first.ci95)}" in table.read_text()
    paper, page = out / "tables" / "paper_table1.md", out / "report" / "index.html"
    page.parent.mkdir()
    for path in (paper, page):  # as a run leaves them, drawn before this eval
        path.write_text("drawn before the eval")
    assert _eval(tmp_path, "--dataset", "toy", "--checkpoint", str(trained), "--seed", "3") == 0
    assert "episode seed 3" in table.read_text()  # the new record's column
    # the paper tables and the report are redrawn too (they showed the replaced record)
    assert "Table 1" in paper.read_text() and "<html" in page.read_text()
    assert (out / "tables" / "paper_table1.tex").is_file()


def test_a_run_s_own_finetune_model_evaluated_into_its_folder_is_a_variant(tmp_path):
    """eval --checkpoint OUT/models/UNIT/best.pt --out OUT wrote a second, ordinary record
    under another config hash: one model stood as two ranked systems."""
    import argparse

    from fsarbench.cli.eval_cmd import _run_model_again

    best = tmp_path / "out" / "models" / "unit" / "best.pt"
    data = {"fingerprint": {"track": "finetune"}}
    args = argparse.Namespace(out=str(tmp_path / "out"), checkpoint=str(best))
    assert _run_model_again(args, data) == "the run's model evaluated again (its run record stands)"
    elsewhere = argparse.Namespace(out=str(tmp_path / "other"), checkpoint=str(best))
    assert _run_model_again(elsewhere, data) == ""
    assert _run_model_again(args, {"fingerprint": {"track": "frozen"}}) == ""


def test_a_features_file_naming_a_video_twice_is_refused():
    """Two overlapping extraction shards concatenated: every id twice, a query scored
    against itself as a support (10-shot 80.40 -> 83.00, no word)."""
    from fsarbench.cli.eval_cmd import _check_video_ids

    manifest = fb.make_manifest(np.repeat(np.arange(5), 2), way=5, shot=1, episodes=3)
    with pytest.raises(fb.ManifestError, match="the video ids of f.pt name 'a' .* more than"):
        _check_video_ids(["a", "b", "a"], manifest, "f.pt")


def test_an_interrupted_eval_into_out_resumes_its_finished_batches(
    tmp_path, trained, monkeypatch, capsys
):
    """eval had no partial file: an interrupted 10,000-episode evaluation on a large pool
    started again from its first batch. Into --out it keeps its finished batches, resumes
    them for the same weights and inputs only, and leaves no partial file once recorded."""
    from fsarbench.distributed import sharded_eval

    test = FakeProvider()("toy").splits["test"]
    torch.save(test.store.features, tmp_path / "f.pt")
    fb.make_manifest(test.classes, way=5, shot=1, episodes=60).save(tmp_path / "m.json")
    argv = ["eval", "protonet", "--features", str(tmp_path / "f.pt"), "--manifest"]
    argv += [str(tmp_path / "m.json"), "--checkpoint", str(trained), "--device", "cpu"]
    argv += ["--batch-episodes", "10"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    (whole,) = fb.load_records(tmp_path / "whole")

    original, calls = sharded_eval.make_predictor, {"n": 0, "stop": 3}

    def counted(*a, **k):
        predict = original(*a, **k)

        def one_batch(start, stop):
            calls["n"] += 1
            if calls["n"] == calls["stop"]:
                raise KeyboardInterrupt
            return predict(start, stop)

        return one_batch

    monkeypatch.setattr(sharded_eval, "make_predictor", counted)
    out = tmp_path / "r"
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 130
    assert "finished work is saved and a re-run resumes from it" in capsys.readouterr().err
    assert len(list((out / "partial").glob("eval-*.npz"))) == 1
    calls.update(n=0, stop=-1)
    assert main([*argv, "--out", str(out)]) == 0
    assert calls["n"] == 4  # 6 batches of 10 episodes, 2 finished before the interrupt
    (record,) = fb.load_records(out)
    assert (record.accuracy, record.ci95) == (whole.accuracy, whole.ci95)
    assert not (out / "partial").exists()
    calls.update(n=0, stop=2)  # without --out nothing is kept: no resume is promised
    assert main(argv) == 130
    assert "eval recorded nothing: run it again" in capsys.readouterr().err


@pytest.mark.parametrize("stop", [SystemExit, KeyboardInterrupt])
def test_sharded_evaluation_keeps_its_batches_through_a_kill_or_a_preemption(
    tmp_path, monkeypatch, stop
):
    """eval's evaluator (evaluate_sharded, also in one process) saved its finished batches
    on Ctrl-C only: a preempted SLURM job (SystemExit) or a SIGKILL lost them all. It now
    saves them every PARTIAL_SAVE_EVERY_S seconds too, as evaluate() does."""
    from fsarbench.distributed import sharded_eval
    from fsarbench.evaluate import load_partial_predictions, resume_tag

    test = FakeProvider()("toy").splits["test"]
    manifest = fb.make_manifest(test.classes, way=5, shot=1, episodes=50, seed=4)
    method = fb.create_method("protonet", feature_dim=8, seq_len=4)
    part = tmp_path / "p.npz"
    tag = resume_tag(manifest.hash, method, "error", "t")
    monkeypatch.setattr(sharded_eval, "PARTIAL_SAVE_EVERY_S", -1.0)  # after every batch
    original, calls = sharded_eval.make_predictor, {"n": 0}

    def checked(*a, **k):
        predict = original(*a, **k)

        def one_batch(start, stop_):
            calls["n"] += 1
            if calls["n"] == 3:  # what a SIGKILL now would leave on disk
                kept = load_partial_predictions(part, manifest, tag)
                assert kept is not None and (kept[:20] >= 0).all() and (kept[20:] < 0).all()
                raise stop
            return predict(start, stop_)

        return one_batch

    monkeypatch.setattr(sharded_eval, "make_predictor", checked)
    run = dict(batch_episodes=10, progress=False, partial_path=part, partial_tag="t")
    with pytest.raises(stop):
        sharded_eval.evaluate_sharded(method, test.store, manifest, **run)
    monkeypatch.setattr(sharded_eval, "make_predictor", original)
    resumed = sharded_eval.evaluate_sharded(method, test.store, manifest, **run)
    whole = fb.evaluate(method, test.store, manifest, batch_episodes=10, progress=False)
    np.testing.assert_array_equal(resumed.records["correct"], whole.records["correct"])


def test_a_zero_episode_batch_is_refused_before_any_extraction(capsys, monkeypatch):
    """'--batch-episodes 0' was refused after all three splits were extracted (101 s on
    synth, hours on Kinetics)."""
    import fsarbench.experiments.features as features

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were made before the check")

    monkeypatch.setattr(features.FrozenFeatureProvider, "__call__", no_extraction)
    with pytest.raises(SystemExit) as stop:
        main(["eval", "protonet", "--dataset", "synth", "--batch-episodes", "0"])
    assert stop.value.code == 2
    assert "--batch-episodes: must be at least 1, got 0" in capsys.readouterr().err
