"""clip-fsar and class names through the method API: the harness fills them only for methods
that declare ``uses_class_names``, the text term follows the names, missing names and weights
fail with messages that say what to do."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsarbench.episodes import make_manifest
from fsarbench.evaluate import ClassNamesError, evaluate
from fsarbench.features.store import as_feature_store
from fsarbench.methods import FewShotMethod, MethodOutput, label_classes
from fsarbench.registry import create_method, mark_checked, register_method
from fsarbench.testing.contract import CONTRACT_CLASS_NAMES, make_contract_method, random_batch
from fsarbench.training import SplitFeatures
from fsarbench.training.recipe import Recipe
from fsarbench.training.trainer import EpisodeSampler, train
from fsarbench_baselines.clip_fsar import CLIPFSAR

TINY = {"text_tower": "tiny", "text_weights": "none", "mlp_dim": 32, "heads": 4}


def _method(**hparams) -> CLIPFSAR:
    torch.manual_seed(0)
    return create_method("clip-fsar", feature_dim=32, seq_len=4, **{**TINY, **hparams}).eval()


def _batch(names: list[list[str]] | None = None):
    g = torch.Generator().manual_seed(0)
    support = torch.rand(1, 6, 4, 32, generator=g)
    query = torch.rand(1, 3, 4, 32, generator=g)
    labels = torch.tensor([[0, 1, 2, 0, 1, 2]])
    names = names or [["archery", "bowling", "surfing"]]
    return support, labels, query, names


def _logits(method, names, **kw):
    support, labels, query, _ = _batch()
    with torch.no_grad():
        s, q = method.encode_episodes(support), method.encode_episodes(query)
        return method.match(s, labels, q, 3, class_names=names, **kw)


def test_swapping_two_names_swaps_their_text_logits_exactly():
    """With only the text term (text_coeff=1) the logits are log softmax of the video-text
    cosines: naming class 0 'bowling' and class 1 'archery' swaps their columns."""
    method = _method(text_coeff=1.0)
    a = _logits(method, [["archery", "bowling", "surfing"]]).logits
    b = _logits(method, [["bowling", "archery", "surfing"]]).logits
    torch.testing.assert_close(b, a[..., [1, 0, 2]])
    assert not torch.allclose(a, b)


def test_names_also_modulate_the_visual_prototypes():
    method = _method(text_coeff=0.0)
    a = _logits(method, [["archery", "bowling", "surfing"]])
    b = _logits(method, [["archery", "bowling", "juggling"]])
    assert not torch.allclose(a.extras["visual"], b.extras["visual"])


def test_eval_logits_combine_text_and_visual_as_documented():
    method = _method()
    out = _logits(method, [["archery", "bowling", "surfing"]])
    text, visual = out.extras["text_logits"], out.extras["visual"]
    expected = 0.9 * F.log_softmax(text, -1) + 0.1 * F.log_softmax((4 + visual) / 4, -1)
    torch.testing.assert_close(out.logits, expected)
    method.train()
    torch.manual_seed(1)
    trained = _logits(method, [["archery", "bowling", "surfing"]])
    torch.testing.assert_close(trained.logits, trained.extras["visual"])  # training: visual


def test_missing_names_fail_with_a_message():
    method = _method()
    with pytest.raises(ValueError, match="needs the episode's class names"):
        _logits(method, None)
    feats = torch.rand(20, 4, 32)
    manifest = make_manifest(np.repeat(np.arange(5), 4), way=3, shot=1, queries=1, episodes=4)
    with pytest.raises(ClassNamesError, match="pass class_names="):
        evaluate(method, feats, manifest, progress=False)


class _Spy(FewShotMethod):
    """Records the class names the harness passes; scores the label index."""

    uses_class_names: ClassVar[bool] = True
    seen: ClassVar[list] = []

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.w = torch.nn.Parameter(torch.zeros(()))

    def match(self, support, support_labels, query, way, *, class_names=None):
        type(self).seen.append(class_names)
        b, nq = query.shape[:2]
        index = torch.arange(way, dtype=torch.float32)  # logits alike for all are refused
        return MethodOutput(logits=index.expand(b, nq, way) + self.w)


def test_evaluator_passes_each_episodes_names_in_label_order():
    _Spy.seen.clear()
    names = ["c0", "c1", "c2", "c3", "c4"]
    classes = np.repeat(np.arange(5), 4)
    manifest = make_manifest(classes, way=3, shot=1, queries=1, episodes=6, class_names=names)
    spy = _Spy(feature_dim=8, seq_len=2)
    mark_checked(spy)  # it records every call: the contract's calls would be recorded too
    evaluate(spy, torch.rand(20, 2, 8), manifest, progress=False, class_names=names)
    got = [row for batch in _Spy.seen for row in batch]
    assert got == [[names[c] for c in row] for row in manifest.classes.tolist()]


def test_trainer_fills_names_only_for_methods_that_use_them():
    classes = np.repeat(np.arange(6), 3)
    data = SplitFeatures(
        as_feature_store(torch.rand(18, 2, 8)), classes, "toy", [f"n{c}" for c in range(6)]
    )
    recipe = Recipe(way=3, shot=1, queries=1, adapter="none")
    batch = EpisodeSampler(data, recipe, 0, "main", names=True).batch(0, 2, torch.device("cpu"))
    ids = label_classes(batch.support_labels, batch.support_classes, 3)
    assert batch.class_names == [[f"n{c}" for c in row] for row in ids.tolist()]
    plain = EpisodeSampler(data, recipe, 0, "main").batch(0, 2, torch.device("cpu"))
    assert plain.class_names is None


def test_frozen_training_and_validation_run_clip_fsar_with_names():
    classes = np.repeat(np.arange(6), 3)
    names = [f"action {c}" for c in range(6)]
    data = SplitFeatures(as_feature_store(torch.rand(18, 4, 32)), classes, "toy", names)
    method = _method().train()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    recipe = Recipe(
        steps=2, episodes_per_step=1, way=3, shot=1, queries=1, val_every=1, val_episodes=4
    )
    result = train(method, data, data, recipe, progress=False)
    assert result is not None
    assert any(not torch.equal(before[k], v) for k, v in method.state_dict().items())


def test_text_tower_follows_the_frame_backbone():
    hp = CLIPFSAR.backbone_hparams
    assert hp({"backbone": "clip-vit-l14", "weights": "pretrained"}) == {"text_tower": "ViT-L-14"}
    assert hp({"backbone": "clip-vit-b16", "weights": "none"}) == {
        "text_tower": "ViT-B-16",
        "text_weights": "none",
    }
    assert hp({"backbone": "clip-vit-b16", "weights": "none", "tiny": True})["text_tower"] == "tiny"
    assert hp({"backbone": "resnet50", "weights": "imagenet"}) == {}


def test_missing_text_weights_offline_name_the_folder(monkeypatch, tmp_path):
    from huggingface_hub import constants

    from fsarbench.features.text_towers import TextTowerWeightsError, create_text_tower

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    create_text_tower.cache_clear()
    with pytest.raises(TextTowerWeightsError) as err:
        create_text_tower("ViT-B-16", weights="openai")
    assert str(tmp_path / "models--timm--vit_base_patch16_clip_224.openai") in str(err.value)
    assert "text_weights=none" in str(err.value)
    with pytest.raises(TextTowerWeightsError, match="random weights only"):
        create_text_tower("tiny", weights="openai")


SMALL_CLIP = {  # an open_clip config small enough to save as a checkpoint file in a test
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def small_text_file(monkeypatch, tmp_path):
    """A random 1-block open_clip model saved as a checkpoint file, its name accepted as a
    text tower (``fsar-small``): the file-path code runs without a download."""
    import open_clip
    from open_clip import factory

    from fsarbench.features import text_towers

    monkeypatch.setitem(factory._MODEL_CONFIGS, "fsar-small", SMALL_CLIP)
    monkeypatch.setattr(text_towers, "TEXT_TOWERS", (*text_towers.TEXT_TOWERS, "fsar-small"))
    torch.manual_seed(0)
    path = tmp_path / "text.bin"
    torch.save(open_clip.create_model("fsar-small").state_dict(), path)
    text_towers.create_text_tower.cache_clear()
    yield path
    text_towers.create_text_tower.cache_clear()


def _act(tower) -> str:
    return type(tower.model.transformer.resblocks[0].mlp.gelu).__name__


def test_text_tower_activation_is_the_weights_own(small_text_file, monkeypatch):
    """QuickGELU only for weights trained with it: a tag takes open_clip's pretrained config
    (OpenAI's: QuickGELU, LAION's: GELU); a checkpoint file does not say, so the user must
    (an error names the option); the activation is part of the weights id."""
    import open_clip

    from fsarbench.features import text_towers as tt

    path = str(small_text_file)
    with pytest.raises(tt.TextTowerWeightsError, match="text_quick_gelu=true .* or text_quick"):
        tt.create_text_tower("fsar-small", weights=path)
    with pytest.raises(tt.TextTowerWeightsError, match="text_quick_gelu=true"):
        _method(text_tower="fsar-small", text_weights=path)
    gelu = tt.create_text_tower("fsar-small", weights=path, quick_gelu=False)
    quick = tt.create_text_tower("fsar-small", weights=path, quick_gelu=True)
    assert (_act(gelu), _act(quick)) == ("GELU", "QuickGELU")
    assert gelu.weights_id.endswith(":gelu") and quick.weights_id.endswith(":quickgelu")
    prompt = ["a photo of archery"]
    assert not torch.allclose(gelu.encode(prompt), quick.encode(prompt))  # another network
    method = _method(text_tower="fsar-small", text_weights=path, text_quick_gelu=False)
    assert _act(method.tower) == "GELU" and method.hparams["text_quick_gelu"] is False

    class Built(Exception):
        pass

    asked = {}

    def no_download(name, pretrained=None, force_quick_gelu=False, **kwargs):
        asked[pretrained] = force_quick_gelu
        raise Built

    monkeypatch.setattr(tt, "_cached_file", lambda name, tag: Path(f"/cache/{tag}.bin"))
    monkeypatch.setattr(open_clip, "create_model", no_download)
    for tag, is_quick in [("openai", True), ("laion2b_s34b_b88k", False)]:
        with pytest.raises(Built):
            tt.create_text_tower("ViT-B-16", weights=tag)
        assert asked[f"/cache/{tag}.bin"] is is_quick, tag
    with pytest.raises(tt.TextTowerWeightsError, match="trained with GELU"):
        tt.create_text_tower("ViT-B-16", weights="laion2b_s34b_b88k", quick_gelu=True)


def test_an_unreadable_text_checkpoint_is_named(small_text_file, tmp_path):
    """A corrupt text checkpoint gave a raw IndexError traceback, another model's an
    AssertionError, and a missing one open_clip's error instead of the named one."""
    from fsarbench.features import text_towers as tt

    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_bytes(small_text_file.read_bytes()[:5000])
    for path, said in [
        (corrupt, "cannot load .*corrupt.bin as an open_clip checkpoint of the fsar-small"),
        (tmp_path / "nope" / "text.bin", "text.bin does not exist: give an open_clip"),
        (tmp_path, "is a folder"),
    ]:
        with pytest.raises(tt.TextTowerWeightsError, match=said):
            tt.create_text_tower("fsar-small", weights=str(path), quick_gelu=True)
    with pytest.raises(tt.TextTowerWeightsError, match="as an open_clip checkpoint of the ViT"):
        tt.create_text_tower("ViT-B-16", weights=str(small_text_file), quick_gelu=True)


def test_a_replaced_text_checkpoint_is_read_again_and_changes_the_record(small_text_file):
    """The text weights' identity (file md5 and activation) is a recorded hyper-parameter:
    a checkpoint replaced at the same path is read again in-process, and gives another record
    id and training fingerprint (so ``run`` trains and evaluates again); a model rebuilt with
    its recorded identity refuses other weights at that path."""
    import open_clip

    from fsarbench.features.text_towers import TextTowerWeightsError
    from fsarbench.io import md5_file
    from fsarbench.provenance import training_fingerprint
    from fsarbench.results import record_config_hash

    path = str(small_text_file)
    hp = {"text_tower": "fsar-small", "text_weights": path, "text_quick_gelu": False}
    old = _method(**hp)
    assert old.hparams["text_weights_id"] == f"file:{md5_file(path)}:gelu"
    assert _method(**hp).tower is old.tower  # one tower per unchanged file
    torch.manual_seed(1)
    other = small_text_file.with_name("other.bin")
    torch.save(open_clip.create_model("fsar-small").state_dict(), other)
    os.replace(other, path)  # a new file at the same path
    new = _method(**hp)
    assert new.tower is not old.tower  # read again, not served from the in-process cache
    prompt = ["a photo of archery"]
    assert not torch.allclose(new.tower.encode(prompt), old.tower.encode(prompt))
    assert new.hparams["text_weights_id"] == f"file:{md5_file(path)}:gelu"
    assert new.hparams["text_weights_id"] != old.hparams["text_weights_id"]

    def identity(method):
        fields = {"recipe": {}, "seed": 0, "dataset": "synth", "track": "frozen", "data": {}}
        return (
            record_config_hash(method.hparams, {}, {}, 0, "frozen"),
            training_fingerprint(
                method="clip-fsar", model=method, hparams=method.hparams, **fields
            ),
        )

    assert identity(new)[0] != identity(old)[0] and identity(new)[1] != identity(old)[1]
    with pytest.raises(TextTowerWeightsError, match="replaced since.*text_weights_id="):
        _method(**hp, text_weights_id=old.hparams["text_weights_id"])  # the old checkpoint's
    assert _method(**hp, text_weights_id=new.hparams["text_weights_id"]).tower is new.tower


def test_a_method_that_uses_names_must_take_them():
    class NoNames(FewShotMethod):
        uses_class_names: ClassVar[bool] = True

        def match(self, support, support_labels, query, way):
            raise NotImplementedError

    with pytest.raises(TypeError, match="class_names=None"):
        register_method("no-names-test")(NoNames)


def test_contract_batches_carry_names_for_clip_fsar():
    method = make_contract_method("clip-fsar")
    assert method.uses_class_names
    batch = random_batch(names=True)
    assert all(set(row) <= set(CONTRACT_CLASS_NAMES) for row in batch.class_names)
    assert dataclasses.replace(batch, class_names=None).class_names is None


def test_finetune_track_trains_clip_fsar_on_a_tiny_clip_tower(tmp_path):
    """End to end on clips: tiny CLIP ViT-B/16 (last block trained), clip-fsar head with the
    tiny text tower picked from the backbone, class names from the synth split."""
    from finetune_fixtures import TINY_SYNTH, tiny_recipe

    from fsarbench.data.datasets import get_dataset
    from fsarbench.training import finetune as ft

    ds = get_dataset("synth", root=tmp_path / "synth", config=TINY_SYNTH)
    over = tiny_recipe(
        recipe={"val_every": 1, "val_episodes": 2, "val_shot": 1},
        options={"backbone": "clip-vit-b16", "tiny": True, "train_blocks": 1, "crop": 32},
    )
    recipe = ft.finetune_recipe("clip-fsar", "synth", over)
    assert recipe.options.norm == "clip"
    train_split = ft.ClipSplit(ds.videos("train"), ds.variant, ds.flip_ok)
    val_split = ft.ClipSplit(ds.videos("val"), ds.variant, ds.flip_ok)
    model = ft.build_video_method(
        "clip-fsar", recipe.options, torch.device("cpu"), hparams={"mlp_dim": 32}
    )
    assert model.inner.config.text_tower == "tiny"
    frozen = model.backbone.trunk.blocks[0].attn.qkv.weight.clone()
    result = ft.finetune(model, train_split, val_split, recipe, progress=False)
    assert [r["step"] for r in result.history] == [1, 2]
    assert torch.equal(model.backbone.trunk.blocks[0].attn.qkv.weight, frozen)
    assert model.train_names == ds.class_names("train")


def test_prompt_words_from_dataset_class_names():
    from fsarbench_baselines.clip_fsar import readable

    assert readable("ApplyEyeMakeup") == "Apply Eye Makeup"
    assert readable("order_00_fwd") == "order 00 fwd"
    assert readable("air drumming") == "air drumming"


def test_clip_grid_cells_and_its_frame_features(tmp_path):
    from fsarbench.cli.main import build_parser
    from fsarbench.cli.run_cmd import run_features, select_cells
    from fsarbench.experiments.grids import GridError, add_grid_file

    parse = build_parser().parse_args
    args = parse(["run", "--table", "clip", "--dataset", "synth"])
    cells = select_cells(args, [])
    assert sorted({c.method for c in cells}) == sorted(
        ["otam", "bimhm", "trx", "hyrsm", "sgtm-otam", "clip-fsar"]
    )
    assert sorted({c.shot for c in cells}) == [1, 5] and len(cells) == 12
    assert run_features(args) == {"backbone": "clip-vit-b16", "weights": "pretrained"}
    smoke = parse(["run", "--table", "clip", "--features", "weights=none", "tiny=true"])
    assert run_features(smoke) == {"backbone": "clip-vit-b16", "weights": "none", "tiny": True}
    with pytest.raises(GridError, match="for each dataset's default features"):
        run_features(parse(["run", "--table", "1", "clip"]))  # Table 1 ran on CLIP features
    grids = tmp_path / "grids.yaml"
    grids.write_text(
        "grids:\n  dino:\n    datasets: [synth]\n    methods: [otam]\n"
        "    features: {backbone: dinov2-vit-s14}\n"
    )
    add_grid_file(grids)
    with pytest.raises(GridError, match="different frame features"):
        run_features(parse(["run", "--table", "clip", "dino"]))
    from fsarbench.config import ConfigError

    with pytest.raises(ConfigError, match="resolutoin"):
        run_features(parse(["run", "--table", "clip", "--features", "resolutoin=64"]))


def test_random_weights_in_any_case_are_one_spelling_and_the_plan_knows_tiny(tmp_path):
    """'weights=None' built a random image tower while clip-fsar (comparing 'none') asked
    for the OpenAI text tower; the plan's outline left 'tiny' out and built a full random
    ViT-B-16 text tower the run never builds."""
    from fsarbench.experiments.features import FeaturePreset, FrozenFeatureProvider

    assert {FeaturePreset(weights=w).weights for w in ("None", "NONE", "none")} == {"none"}
    overrides = {"backbone": "clip-vit-b16", "weights": "None", "tiny": True}
    provider = FrozenFeatureProvider(cache_root=tmp_path, preset_overrides=overrides)
    info = provider.outline("synth").info
    assert info["weights"] == "none" and info["tiny"] is True
    from fsarbench.registry import method_info

    derived = method_info("clip-fsar").cls.backbone_hparams(info)
    assert derived == {"text_tower": "tiny", "text_weights": "none"}


def _reference_prototypes(method, support, labels, names, *, merge_before: bool):
    """The reference's two support paths, one class (or video) at a time: with
    MERGE_BEFORE the class's mean frames and its text token go through the transformer once;
    without it every video does, and the class prototype is the mean of the outputs."""
    text = method.text_embeddings(names, support)[0]  # [way, D]
    t, protos = support.shape[2], []
    for c in range(text.shape[0]):
        videos = support[0, labels[0] == c]  # [K, T, D]
        if merge_before:
            seq = torch.cat([videos.mean(0), text[c][None]])[None]
            protos.append(method.transformer(seq)[0, :t])
        else:
            seqs = torch.cat([videos, text[c][None, None].expand(len(videos), 1, -1)], 1)
            protos.append(method.transformer(seqs)[:, :t].mean(0))
    return torch.stack(protos)


@pytest.mark.parametrize("merge_before", [True, False])
def test_above_one_shot_prototypes_follow_the_references_merge_before(merge_before, monkeypatch):
    """The reference's 5-shot configs (MERGE_BEFORE) modulate each class's mean frames; the
    head modulated every video and averaged after, 59 of 120 visual argmaxes apart."""
    import fsarbench_baselines.clip_fsar as clip_fsar

    method = _method(merge_before=merge_before).double()
    support, labels, query, names = _batch()
    support, query = support.double(), query.double()
    seen = {}
    real = clip_fsar.otam_cosine_distance
    monkeypatch.setattr(
        clip_fsar, "otam_cosine_distance", lambda q, s, eps: seen.update(p=s) or real(q, s, eps)
    )
    with torch.no_grad():
        method.match(
            method.encode_episodes(support),
            labels,
            method.encode_episodes(query),
            3,
            class_names=names,
        )
        expected = _reference_prototypes(method, support, labels, names, merge_before=merge_before)
        other = _reference_prototypes(method, support, labels, names, merge_before=not merge_before)
    torch.testing.assert_close(seen["p"]["features"][0], expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(seen["p"]["features"][0], other)  # 2-shot: the paths differ


def test_split_tag_class_names_are_refused_unless_named(tmp_path):
    """SSv2-Full's lists name classes 'test18': the prompt said 'a photo of test18'."""
    import json

    from fsarbench.registry import method_config
    from fsarbench_baselines.clip_fsar import ClassNameTagError, PromptNamesError

    tags = ["test18", "test3", "test7"]
    with pytest.raises(ClassNameTagError, match=r"3 class\(es\) are named by their split tags"):
        _logits(_method(), [tags])
    with pytest.raises(ClassNameTagError, match="e.g. 'test18'.*no prompt_names"):
        CLIPFSAR.check_class_names(method_config("clip-fsar", **TINY), ["archery", *tags])
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"test18": "archery", "test3": "bowling", "test7": "surfing"}))
    method = _method(prompt_names=str(names))
    by_tag = _logits(method, [tags]).logits
    by_name = _logits(_method(), [["archery", "bowling", "surfing"]]).logits
    torch.testing.assert_close(by_tag, by_name)
    config = method_config("clip-fsar", **TINY, prompt_names=str(names))
    CLIPFSAR.check_class_names(config, tags)  # every tag has its words
    with pytest.raises(ClassNameTagError, match="lacks them"):
        CLIPFSAR.check_class_names(config, [*tags, "val0"])
    # the file's md5 is recorded; a model made with other words refuses this file
    assert method.config.prompt_names_id.startswith("md5:")
    with pytest.raises(PromptNamesError, match="not the md5:0 this model was made with"):
        _method(prompt_names=str(names), prompt_names_id="md5:0")
    names.write_text("[1, 2]")
    with pytest.raises(PromptNamesError, match="must map class names to non-empty words"):
        _method(prompt_names=str(names))


def test_text_loss_weight_per_dataset_and_training_cosine_as_the_reference():
    from fsarbench.registry import method_config

    weights = {
        d: method_config("clip-fsar", d).text_loss_weight
        for d in ("kinetics100", "ucf101", "hmdb51", "ssv2-full", "ssv2-small")
    }
    assert weights == {
        "kinetics100": 1.5,
        "ucf101": 1.5,
        "hmdb51": 1.2,
        "ssv2-full": 3.0,
        "ssv2-small": 3.0,
    }
    method = _method().double()
    frames, text = torch.rand(1, 2, 4, 32).double() * 0.1, torch.rand(1, 3, 32).double()
    video = frames.mean(2)
    cos = (video @ text.transpose(1, 2)) / (
        video.norm(dim=-1)[..., None] * text.norm(dim=-1)[:, None] + 0.01
    )
    method.train()
    torch.testing.assert_close(method._text_logits(frames, text), cos.detach() * method.scale)
    method.eval()
    plain = F.normalize(video, dim=-1) @ F.normalize(text, dim=-1).transpose(1, 2)
    torch.testing.assert_close(method._text_logits(frames, text), plain * method.scale)


def test_a_checkpoint_saved_before_merge_before_loads_as_it_was_trained():
    """Its stored hyper-parameters lack merge_before: it loaded under the new default (on),
    a model it never was (3-shot logits 0.3 apart, argmax 90% equal)."""
    from fsarbench.registry import stored_hparams

    old = dataclasses.asdict(_method().config)
    del old["merge_before"], old["prompt_names"], old["prompt_names_id"]
    assert stored_hparams("clip-fsar", old)["merge_before"] is False
    assert stored_hparams("clip-fsar", {**old, "merge_before": True})["merge_before"] is True
    assert stored_hparams("clip-fsar", {}) == {}  # no checkpoint: the defaults
    assert stored_hparams("otam", {"lam": 0.5}) == {"lam": 0.5}


def test_legacy_hyper_parameters_name_what_a_checkpoint_was_trained_with():
    """A checkpoint predating merge_before: asking for its trained setting (false) was
    labelled a change, asking for the new default (true, another model) was not."""
    from fsarbench.cli.eval_checks import changed_hparams, trained_name

    stored = dataclasses.asdict(_method().config)
    del stored["merge_before"], stored["prompt_names"], stored["prompt_names_id"]
    data = {"method": {}, "hparams": stored}
    assert changed_hparams(data, {"merge_before": False}, "clip-fsar", None) == {}
    assert changed_hparams(data, {"merge_before": True}, "clip-fsar", None) == {
        "merge_before": True
    }
    assert "merge_before=False" in trained_name("clip-fsar", data, None)


def test_prompt_names_are_one_file_whatever_its_spelling(tmp_path, monkeypatch):
    import json

    (tmp_path / "names.json").write_text(json.dumps({"test1": "archery"}))
    monkeypatch.chdir(tmp_path)
    relative = _method(prompt_names="names.json").config
    absolute = _method(prompt_names=str(tmp_path / "names.json")).config
    assert relative == absolute and relative.prompt_names == str(tmp_path / "names.json")


def test_finetune_weights_none_in_any_spelling_gives_random_text_too():
    """`--option weights=None` built a random image tower (create_backbone lower-cases it)
    and clip-fsar, comparing case-sensitively, asked for OpenAI text weights beside it."""
    from fsarbench.registry import method_info
    from fsarbench.training.finetune_recipe import FinetuneOptions

    for given in ("None", "NONE", None):
        options = FinetuneOptions(backbone="clip-vit-b16", weights=given)
        assert options.weights == "none"
        derived = method_info("clip-fsar").cls.backbone_hparams(
            {"backbone": options.backbone, "weights": options.weights}
        )
        assert derived["text_weights"] == "none"


@pytest.mark.parametrize("prompt", ["a video of", "a video of {name}", "{} and {}", "a {"])
def test_a_prompt_without_one_slot_for_the_name_is_refused(prompt):
    """'a video of' gave every class one text embedding and a confident number; '{name}'
    failed at the first training step with 'error: name'."""
    with pytest.raises(ValueError, match="must hold exactly one {} for the class name"):
        _method(prompt=prompt)
    assert _method(prompt="a video of {}").config.prompt == "a video of {}"
