"""The finetune track on the CPU: recipes, the backbone+head model (chunked, checkpointed,
frozen BN) and an end-to-end run on a tiny ``synth`` (train, validate, resume, evaluate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from finetune_fixtures import TINY_SYNTH, tiny_recipe

import fsarbench as fb
from fsarbench.config import ConfigError
from fsarbench.data.datasets import get_dataset
from fsarbench.distributed.sharded_eval import evaluate_sharded
from fsarbench.training import Recipe
from fsarbench.training import finetune as ft
from fsarbench.training.finetune import (
    ClipSplit,
    ClipStore,
    FinetuneOptions,
    build_video_method,
    finetune,
    finetune_recipe,
)
from fsarbench.training.loop import RunMismatchError
from fsarbench.training.trainer import load_checkpoint
from fsarbench.training.video_method import ClipEpisodes

TINY = tiny_recipe(
    recipe={"val_every": 1, "val_episodes": 4, "val_shot": 1}, options={"eval_chunk": 16}
)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return get_dataset("synth", root=tmp_path_factory.mktemp("synth"), config=TINY_SYNTH)


def _split(ds, split: str) -> ClipSplit:
    return ClipSplit(ds.videos(split), ds.variant, ds.flip_ok)


def test_recipes_follow_the_protocol_table():
    trx = finetune_recipe("trx", "ssv2-full", protocol="trx")
    assert (trx.recipe.optimizer, trx.recipe.lr, trx.recipe.momentum) == ("sgd", 1e-3, 0.0)
    assert (trx.recipe.episodes_per_step, trx.options.train_sampler) == (16, "trx")
    # the method's recipe does not choose the frames: the protocol (default seed) does
    assert finetune_recipe("trx", "ssv2-full").options.train_sampler == "tsn"
    hmdb = finetune_recipe("hyrsm", "hmdb51").recipe
    assert (hmdb.optimizer, hmdb.lr, hmdb.weight_decay, hmdb.episodes_per_step) == (
        "adam",
        5e-5,
        2e-3,  # the reference's 1e-3 on half the mean gradient (8 tasks, loss / 4): Adam's
        8,  # update is that of 2e-3 on the mean (tests/test_reference_schedules.py: the rest)
    )
    full = finetune_recipe("hyrsm", "ssv2-full").recipe
    assert (full.schedule, full.milestones, full.steps) == ("multistep", (0.22495, 0.37495), 10000)
    sgtm = finetune_recipe("sgtm-otam", "ucf101")
    assert (sgtm.recipe.lr, sgtm.options.backbone, sgtm.options.frames) == (1e-4, "resnet50", 8)
    assert sgtm.options.train_transform == "seed-train"
    over = finetune_recipe("otam", "synth", {"recipe": {"steps": 7}, "options": {"crop": 32}})
    assert (over.recipe.steps, over.options.crop) == (7, 32)
    with pytest.raises(ConfigError, match="checkpoint_backbone"):
        finetune_recipe("otam", "synth", {"options": {"checkpoint_backbones": True}})


def test_training_queries_and_val_shot_follow_the_training_shot(monkeypatch):
    """HyRSM trains with 7 queries per class at 1-shot down to 3 at 5-shot (the recipe used
    5 at every shot), and ``train --recipe shot=1`` validated at the file's 5-shot."""
    from fsarbench.experiments.units import ModelUnit, unit_recipe
    from fsarbench.training import recipe as recipe_mod
    from fsarbench.training.recipe import frozen_recipe

    hyrsm = finetune_recipe("hyrsm", "ssv2-full").recipe
    assert (hyrsm.shot, hyrsm.queries) == (5, 3)
    assert [hyrsm.at_shot(k).queries for k in (1, 2, 5)] == [7, 6, 3]
    assert finetune_recipe("hyrsm", "ssv2-full", {"recipe": {"shot": 1}}).recipe.queries == 7
    mine = finetune_recipe("hyrsm", "ssv2-full", {"recipe": {"queries": 4}}).recipe
    assert [mine.at_shot(k).queries for k in (1, 5)] == [4, 4]  # the user's count wins
    assert finetune_recipe("trx", "ssv2-full").recipe.at_shot(1).queries == 5
    unit = ModelUnit("hyrsm", (), "ssv2-full", "finetune", "seed", 5, 1, 0)
    assert unit_recipe(hyrsm, unit, {}).queries == 7
    one = finetune_recipe("otam", "ssv2-full", {"recipe": {"shot": 1}}).recipe
    assert (one.shot, one.val_shot) == (1, 1)
    assert frozen_recipe("otam", {"shot": 2}).val_shot == 2
    assert "queries_by_shot" not in frozen_recipe("otam").to_dict()  # config hashes as before
    table = {"default": {"queries": 5}, "methods": {"hyrsm": {"queries_by_shot": [7, 6]}}}
    table["datasets"] = {"hmdb51": {"queries": 4}}  # a later file layer wins too
    monkeypatch.setattr(recipe_mod, "_recipes_table", lambda: table)
    assert recipe_mod.frozen_recipe("hyrsm", {"shot": 1}, dataset="hmdb51").queries == 4
    assert recipe_mod.frozen_recipe("hyrsm", {"shot": 1}, dataset="ucf101").queries == 7
    assert recipe_mod.frozen_recipe("hyrsm", {"shot": 3}, dataset="ucf101").queries == 5


def test_global_batch_must_split_over_ranks(monkeypatch):
    monkeypatch.setattr(ft, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="multiple of the 3 ranks"):
        ft._check_split(Recipe(episodes_per_step=16))
    with pytest.raises(ValueError, match="must divide the 4 episodes"):
        ft._check_split(Recipe(episodes_per_step=12, micro_batch=3))
    assert ft._check_split(Recipe(episodes_per_step=12, micro_batch=2)) == 2
    assert ft._check_split(Recipe(episodes_per_step=12)) == 4


def _model(**options):
    opts = FinetuneOptions(**{**TINY["options"], **options})
    return build_video_method("protonet", opts, torch.device("cpu"), seed=0)


def test_chunked_and_checkpointed_backbone_give_the_same_features_and_grads():
    clips = torch.randn(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    runs = []
    for opts in ({}, {"frame_chunk": 2}, {"frame_chunk": 4, "checkpoint_backbone": True}):
        model = _model(bn="frozen", **opts).train()
        feats = model.features(clips)
        feats.square().mean().backward()
        grad = model.backbone.trunk.conv1.weight.grad.clone()
        runs.append((feats.detach(), grad))
    assert runs[0][0].shape == (2, 3, 512)
    for feats, grad in runs[1:]:
        torch.testing.assert_close(feats, runs[0][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, runs[0][1], rtol=1e-4, atol=1e-7)


def test_frozen_bn_stays_in_eval_mode():
    frozen, trained = _model(bn="frozen").train(), _model(bn="train").train()
    bn = [m for m in frozen.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and not any(m.training for m in bn) and frozen.inner.training
    assert all(
        m.training for m in trained.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )


def _clip_batch(b: int = 2, ns: int = 3, nq: int = 2) -> ClipEpisodes:
    g = torch.Generator().manual_seed(1)
    support = torch.randn(b, ns, 2, 3, 16, 16, generator=g)
    query = torch.randn(b, nq, 2, 3, 16, 16, generator=g) * 2 + 1  # other statistics
    labels = torch.arange(ns).repeat(b, 1) % 3
    return ClipEpisodes(support, labels, query, torch.arange(nq).repeat(b, 1), None, None, way=3)


def test_bn_train_normalises_each_support_set_and_each_query_set_on_its_own():
    """As TRX, HyRSM and CLIP-FSAR call their backbones: per episode, the support clips in one
    call and the query clips in another; BatchNorm statistics are that set's."""
    model = _model(bn="train").train()
    batch = _clip_batch()
    with torch.no_grad():
        got = model.episode_features(batch)
        want_s = torch.stack([model.features(s) for s in batch.support])
        want_q = torch.stack([model.features(q) for q in batch.query])
        joint = model.features(torch.cat([batch.support.flatten(0, 1), batch.query.flatten(0, 1)]))
    torch.testing.assert_close(got.support, want_s)
    torch.testing.assert_close(got.query, want_q)
    assert not torch.allclose(got.support.flatten(0, 1), joint[:6], atol=1e-3)  # one call differs
    bn = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.training and int(bn.num_batches_tracked) > 0  # running statistics were updated


def test_bn_train_running_statistics_do_not_depend_on_the_micro_batch():
    """Two episodes in one micro-batch ran both support sets, then both query sets: the
    running statistics (a moving average) came out other than from two 1-episode
    micro-batches (up to 0.04 in a running variance after a short training)."""
    batch = _clip_batch()
    runs = []
    for micro in (2, 1):
        model = _model(bn="train").train()
        with torch.no_grad():
            for i in range(0, 2, micro):
                part = ClipEpisodes(
                    batch.support[i : i + micro],
                    batch.support_labels[i : i + micro],
                    batch.query[i : i + micro],
                    batch.query_labels[i : i + micro],
                    None,
                    None,
                    way=3,
                )
                model.episode_features(part)
        state = model.backbone.state_dict()
        runs.append({k: v.clone() for k, v in state.items() if "running" in k})
    joint, one_by_one = runs
    assert joint.keys() == one_by_one.keys() and joint
    for k in joint:
        torch.testing.assert_close(joint[k], one_by_one[k], rtol=0, atol=0)


def test_bn_train_leaves_running_statistics_alone_in_a_stage_without_the_backbone():
    model = _model(bn="train").train()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k}
    with torch.no_grad():
        model.episode_features(_clip_batch(), backbone_trains=False)
    after = model.backbone.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert all(m.training for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_bn_train_refuses_frame_chunks_on_batch_norm_backbones():
    from fsarbench.training.video_method import BatchNormOptionError

    with pytest.raises(BatchNormOptionError, match="frame_chunk=2.*bn=frozen"):
        _model(bn="train", frame_chunk=2)
    assert finetune_recipe("trx", "ssv2-full").options.bn == "train"  # the references' default


def test_bn_train_under_checkpointing_updates_running_statistics_once():
    """Checkpointing re-runs the backbone in backward; the running statistics and gradients
    must be those of one plain forward and backward."""
    clips = torch.randn(4, 2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    runs = []
    for ckpt in (False, True):
        model = _model(bn="train", checkpoint_backbone=ckpt).train()
        model.features(clips).square().mean().backward()
        stats = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k}
        runs.append((stats, model.backbone.trunk.conv1.weight.grad.clone()))
    (plain, g0), (ckpt, g1) = runs
    assert plain.keys() == ckpt.keys() and plain
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=0, atol=0)
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-7)
    tracked = [
        m.num_batches_tracked for m in model.backbone.modules() if hasattr(m, "num_batches_tracked")
    ]
    assert tracked and all(int(t) == 1 for t in tracked)


def _train(synth, out, **kw):
    recipe = finetune_recipe("protonet", "synth", TINY)
    model = build_video_method("protonet", recipe.options, torch.device("cpu"), seed=0)
    result = finetune(
        model,
        _split(synth, "train"),
        _split(synth, "val"),
        recipe,
        out_dir=out,
        progress=False,
        **kw,
    )
    return model, result


def test_finetune_trains_validates_resumes_and_evaluates(synth, tmp_path):
    model, result = _train(synth, tmp_path / "a")
    assert [r["step"] for r in result.history] == [1, 2]
    assert all(0 <= r["val_accuracy"] <= 100 for r in result.history)
    best = load_checkpoint(tmp_path / "a" / "best.pt")
    assert best["step"] == result.best_step and best["val_accuracy"] == result.best_val
    for k, v in best["method"].items():  # the model is left holding the selected weights
        assert torch.equal(model.state_dict()[k], v), k

    with pytest.raises(KeyboardInterrupt):
        _train(synth, tmp_path / "b", stop_after=1)
    resumed, again = _train(synth, tmp_path / "b")
    assert again.history == result.history
    for k, v in model.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    # finetune() without a fingerprint resumed any run found in its folder
    with pytest.raises(RunMismatchError, match=r"seed: 0 -> 1"):
        _train(synth, tmp_path / "b", seed=1)
    with pytest.raises(RunMismatchError, match=r"data\.val\.files: '\w+' -> None"):
        recipe = finetune_recipe("protonet", "synth", TINY)
        other = build_video_method("protonet", recipe.options, torch.device("cpu"), seed=0)
        finetune(other, _split(synth, "train"), None, recipe, out_dir=tmp_path / "b")

    test = _split(synth, "test")
    manifest = fb.make_manifest(test.classes, way=3, shot=1, episodes=6, seed=0)
    ev = evaluate_sharded(
        model, ClipStore(test, model.options), manifest, encode_chunk=8, progress=False
    )
    assert ev.episodes == 6 and len(ev.records["correct"]) == 6 * 3
    assert np.isclose(ev.accuracy, 100 * ev.records["correct"].mean())


def test_frame_chunk_without_checkpointing_is_flagged_as_saving_no_training_memory(caplog):
    with caplog.at_level("WARNING", logger="fsarbench.training.finetune"):
        ft._warn_if_chunking_saves_nothing(FinetuneOptions(frame_chunk=16))
    assert "checkpoint_backbone=true" in caplog.text and "frame_chunk=16" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="fsarbench.training.finetune"):
        ft._warn_if_chunking_saves_nothing(
            FinetuneOptions(frame_chunk=16, checkpoint_backbone=True)
        )
        ft._warn_if_chunking_saves_nothing(FinetuneOptions())
    assert caplog.text == ""


def test_decode_workers_are_not_part_of_a_finetune_recipes_identity():
    from fsarbench.provenance import training_fingerprint
    from fsarbench.results import record_config_hash

    base = finetune_recipe("otam", "synth", tiny_recipe())
    more = finetune_recipe("otam", "synth", tiny_recipe(options={"workers": 12}))
    other = finetune_recipe("otam", "synth", tiny_recipe(options={"eval_chunk": 7}))
    assert more.options.workers == 12 and "workers" in more.to_dict()["options"]
    assert more.identity() == base.identity() and "workers" not in base.identity()["options"]
    assert other.identity() != base.identity()  # every other option stays in it

    def config(recipe):
        return record_config_hash({}, recipe.identity(), {}, 0, "finetune")

    assert config(more) == config(base) != config(other)
    model = torch.nn.Linear(1, 1)

    def print_(recipe):
        return training_fingerprint(
            method="otam",
            model=model,
            hparams={},
            recipe=recipe.identity(),
            seed=0,
            dataset="synth",
            track="finetune",
            data={},
        )

    assert print_(more) == print_(base) != print_(other)


def test_finetune_decode_workers_follow_the_device_unless_set(monkeypatch):
    from fsarbench.training import clip_data

    monkeypatch.setattr(clip_data, "default_workers", lambda device, ranks: (str(device), ranks))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    auto = finetune_recipe("otam", "ucf101").options
    assert auto.workers is None  # the recipe file leaves it to the device
    assert clip_data.decode_workers(auto, "cuda") == ("cuda", 4)
    assert clip_data.decode_workers(FinetuneOptions(workers=3), "cuda") == 3
    with pytest.raises(ConfigError, match="workers = -1 must be >= 0"):
        FinetuneOptions(workers=-1)


def test_a_resume_under_another_process_count_is_named(caplog, tmp_path):
    """A 2-process run resumed in one process (or the reverse) trained on silently; under
    bn: train its running statistics mix both, and its record did not say so."""
    import logging

    from fsarbench.training import loop
    from fsarbench.training.loop import TrainResult

    rows = [{"stage": "main", "step": 1, "processes": 2}, {"stage": "main", "step": 2}]
    with caplog.at_level(logging.WARNING):
        loop._warn_if_other_processes(rows[:1], tmp_path)
    assert "resumed under 1 process(es); its first 1 step(s) ran under 2" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        loop._warn_if_other_processes([{"stage": "main", "step": 1}], tmp_path)
    assert caplog.text == ""
    assert TrainResult(history=rows).summary()["processes"] == [1, 2]
    assert "processes" not in TrainResult(history=rows[1:]).summary()


def test_a_training_under_autocast_names_its_precision_beside_its_val_accuracy():
    """Validation runs the head under the training's autocast (the test in float32), so a
    bf16 run's val accuracy, which picked its step, was recorded as if float32."""
    from fsarbench.training.loop import TrainResult

    rows = [{"stage": "main", "step": 1, "ce": 1.0, "val_accuracy": 60.0}]
    assert TrainResult(history=rows, precision="bfloat16").summary()["precision"] == "bfloat16"
    assert "precision" not in TrainResult(history=rows).summary()
