from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import fsarbench as fb
from fsarbench.training import (
    AdaptedMethod,
    FrameAdapter,
    Recipe,
    SplitFeatures,
    frozen_recipe,
    train,
)
from fsarbench.training.loop import lr_factor, stage_steps


def split(n_classes: int, per_class: int, seed: int, d: int = 16, t: int = 4, noise: float = 1.0):
    """Classes = random directions plus noise."""
    g = torch.Generator().manual_seed(seed)
    classes = np.repeat(np.arange(n_classes), per_class)
    centres = torch.randn(n_classes, d, generator=g)
    f = centres[torch.as_tensor(classes)][:, None].expand(-1, t, -1)
    f = f + noise * torch.randn(len(classes), t, d, generator=g)
    return SplitFeatures(fb.InMemoryFeatureStore(f.contiguous()), classes, dataset="toy")


def make(name="protonet"):
    torch.manual_seed(0)
    m = fb.create_method(name, feature_dim=16, seq_len=4)
    return AdaptedMethod(m, FrameAdapter(16), 16)


RECIPE = Recipe(steps=12, episodes_per_step=4, val_every=4, val_episodes=40, lr=1e-2, queries=2)


def test_training_runs_and_keeps_best(tmp_path):
    m = make()
    res = train(m, split(10, 6, 0), split(5, 6, 1), RECIPE, out_dir=tmp_path, progress=False)
    vals = [h["val_accuracy"] for h in res.history if "val_accuracy" in h]
    assert len(vals) == 3 and res.best_val == max(vals)
    times = res.step_times  # measured on the CPU by default; "other" holds validation
    assert set(times) == {"data", "forward", "backward", "optimizer", "other", "total"}
    assert all(v >= 0 for v in times.values()) and times["forward"] > 0
    assert times["total"] == pytest.approx(sum(v for k, v in times.items() if k != "total"))
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, best["method"][k])


@pytest.mark.parametrize("stop_after", [7, 12])
def test_resume_is_bit_identical(tmp_path, stop_after, caplog):
    """Stopped mid-stage (7) or right after the stage's last step (12: the resume point is
    the stage's end, with no optimizer state)."""
    full = make()
    train(full, split(10, 6, 0), split(5, 6, 1), RECIPE, out_dir=tmp_path / "a", progress=False)
    part = make()
    with pytest.raises(KeyboardInterrupt):
        train(
            part,
            split(10, 6, 0),
            split(5, 6, 1),
            RECIPE,
            out_dir=tmp_path / "b",
            progress=False,
            stop_after=stop_after,
        )
    point = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    stage = point["stage"]
    assert stage == (stop_after == RECIPE.steps)
    resumed = make()
    with caplog.at_level("INFO", logger="fsarbench.training.loop"):
        res = train(
            resumed, split(10, 6, 0), split(5, 6, 1), RECIPE, out_dir=tmp_path / "b", progress=False
        )
    said = f"resuming from {tmp_path / 'b' / 'last.pt'}: stage {stage + 1}, {point['step']} step"
    if stage == 1:  # the one stage was done: "stage 2, 0 step(s) of it done" read as more
        said = f"reloading {tmp_path / 'b' / 'last.pt'}: its training is finished"
    assert said in caplog.text
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert len(res.history) == 12


def test_stage_end_writes_one_resume_point_without_optimizer(tmp_path, monkeypatch):
    """The last step's resume point is the stage's end (no optimizer state): one write,
    not an optimizer-laden last.pt replaced at once by the stage-end one."""
    from fsarbench.training import loop

    writes = []
    real = loop.save_checkpoint

    def spy(path, payload):
        writes.append((path.name, bool(payload.get("optimizer")), payload.get("step")))
        real(path, payload)

    monkeypatch.setattr(loop, "save_checkpoint", spy)
    m = make()
    train(m, split(10, 6, 0), split(5, 6, 1), RECIPE, out_dir=tmp_path, progress=False)
    last = [w for w in writes if w[0] == "last.pt"]
    assert last == [("last.pt", True, 4), ("last.pt", True, 8), ("last.pt", False, 0)]
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["stage"] == 1 and ckpt["optimizer"] == {}
    again = make()  # a finished run is reloaded, not retrained
    res = train(again, split(10, 6, 0), split(5, 6, 1), RECIPE, out_dir=tmp_path, progress=False)
    assert len(res.history) == 12 and len(last) == len([w for w in writes if w[0] == "last.pt"])
    for k, v in m.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_gradient_accumulation_equals_one_big_batch():
    a, b = make(), make()
    train(
        a,
        split(10, 6, 0),
        None,
        Recipe(steps=3, episodes_per_step=4, val_episodes=0),
        progress=False,
    )
    train(
        b,
        split(10, 6, 0),
        None,
        Recipe(steps=3, episodes_per_step=4, micro_batch=1, val_episodes=0),
        progress=False,
    )
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=1e-5, atol=1e-6)


@dataclass
class _Cfg:
    pass


class TwoStage(fb.FewShotMethod):
    """A method with a classifier stage then a metric stage (like SGTM)."""

    Config = _Cfg

    def __init__(self, **kw):
        super().__init__(**kw)
        self.cls = nn.Linear(self.feature_dim, self.num_train_classes)
        self.proj = nn.Linear(self.feature_dim, self.feature_dim)

    def encode(self, x):
        return self.proj(x).mean(1)

    def match(self, s, sl, q, way, **_):
        protos = torch.bmm(nn.functional.one_hot(sl, way).double().transpose(1, 2).to(s.dtype), s)
        return fb.MethodOutput(-torch.cdist(q, protos))

    def training_stages(self):
        def cls_loss(batch):
            x = torch.cat([batch.support, batch.query], 1).mean(2)
            y = torch.cat([batch.support_classes, batch.query_classes], 1)
            return {"cls": nn.functional.cross_entropy(self.cls(x).flatten(0, 1), y.flatten())}

        return [
            fb.TrainingStage("cls", lambda: list(self.cls.parameters()), cls_loss, 1.0, True),
            fb.TrainingStage("main", lambda: list(self.proj.parameters()), self.episode_loss),
        ]


def test_stages_train_only_their_parameters():
    torch.manual_seed(0)
    m = TwoStage(feature_dim=16, seq_len=4, num_train_classes=10)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    # the last stage trains for the recipe's steps; "cls" (equal fraction) as many before it
    recipe = Recipe(steps=2, episodes_per_step=2, val_episodes=0, adapter="none")
    data = split(10, 6, 0)
    res = train(m, data, None, recipe, progress=False)
    assert [h["stage"] for h in res.history] == ["cls", "cls", "main", "main"]
    assert not torch.equal(before["cls.weight"], m.cls.weight)
    assert not torch.equal(before["proj.weight"], m.proj.weight)
    assert all(p.requires_grad for p in m.parameters())  # freezing is undone after training
    # stage 1 alone leaves the metric part untouched
    m2 = TwoStage(feature_dim=16, seq_len=4, num_train_classes=10)
    m2.load_state_dict(before)
    with pytest.raises(KeyboardInterrupt):
        train(m2, data, None, recipe, progress=False, stop_after=2)
    assert torch.equal(before["proj.weight"], m2.proj.weight)
    assert not torch.equal(before["cls.weight"], m2.cls.weight)


def test_the_last_stage_keeps_the_recipe_steps_and_earlier_stages_run_on_top():
    def stages(*fractions):
        return [fb.TrainingStage(f"s{i}", list, dict, f) for i, f in enumerate(fractions)]

    assert stage_steps(stages(1.0), 160) == [160]
    assert stage_steps(stages(0.2, 0.8), 160) == [40, 160]  # SGTM: 20 % of all 200 steps
    assert stage_steps(stages(0.2, 0.8), 30) == [8, 30]
    assert stage_steps(stages(0.001, 0.999), 30) == [1, 30]  # an earlier stage runs >= 1 step


def test_learning_rate_factors_known_answers():
    cosine = lr_factor(Recipe(schedule="cosine", steps=12), 12)
    assert [round(cosine(s), 6) for s in (0, 6, 11)] == [
        1.0,
        0.5,
        round(0.5 * (1 + math.cos(math.pi * 11 / 12)), 6),
    ]
    warm = lr_factor(Recipe(schedule="cosine", warmup_steps=3, steps=12), 12)
    # the warm-up climbs to 1, then the cosine starts at 1 over the 9 steps left (no jump)
    assert [warm(s) for s in (0, 1, 2, 3)] == [1 / 3, 2 / 3, 1.0, 1.0]
    assert warm(3 + 9 // 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 9)))
    multi = lr_factor(Recipe(schedule="multistep", milestones=[0.5], warmup_steps=2, steps=8), 8)
    assert [multi(s) for s in range(8)] == pytest.approx([0.5, 1, 1, 1, 0.1, 0.1, 0.1, 0.1])


def test_recipe_file_and_overrides():
    r = frozen_recipe("sgtm-otam-tml")
    assert r.steps == frozen_recipe("sgtm").steps
    assert frozen_recipe("otam", {"lr": 0.5}).lr == 0.5
    synth = frozen_recipe("trx", dataset="synth")
    assert synth.steps == 30 and synth.lr == frozen_recipe("trx").lr  # dataset layer on top
    assert frozen_recipe("trx", {"steps": 7}, dataset="synth").steps == 7  # overrides win
    with pytest.raises(fb.ConfigError, match="Did you mean 'steps'"):
        frozen_recipe("otam", {"stepz": 3})


def test_a_step_the_grad_scaler_skipped_still_advances_the_schedule_quietly():
    import warnings

    from fsarbench.training.loop import _advance

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "lr_scheduler.step() before optimizer.step()"
        _advance(sched)  # as after a GradScaler-skipped step: optimizer.step() never ran
    assert opt.param_groups[0]["lr"] == 0.5


def _fit(method, out, **kw):
    return train(method, split(10, 6, 0), split(5, 6, 1), RECIPE, out_dir=out, progress=False, **kw)


def test_a_run_refused_for_its_selected_weights_starts_again_from_its_initial_weights(tmp_path):
    """run_training loaded last.pt's weights before checking best.pt: a run refused there and
    trained again "from scratch" on the same model object started from the refused run's
    weights."""
    from fsarbench.experiments.tracks import _retrain_on_mismatch

    clean = make()
    _fit(clean, tmp_path / "clean")
    with pytest.raises(KeyboardInterrupt):
        _fit(make(), tmp_path / "broken", stop_after=7)  # last.pt at step 4, best.pt step 4
    (tmp_path / "broken" / "best.pt").unlink()
    again = make()
    _retrain_on_mismatch(lambda resume: _fit(again, tmp_path / "broken", resume=resume), "u")
    for k, v in clean.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_the_python_api_never_resumes_another_methods_or_recipes_run(tmp_path):
    """Without a fingerprint, train() resumed any last.pt in out_dir: otam continued
    protonet's run with protonet's optimizer and learning rate."""
    from fsarbench.training.loop import RunMismatchError

    with pytest.raises(KeyboardInterrupt):
        _fit(make(), tmp_path, stop_after=5)
    with pytest.raises(RunMismatchError, match="method: 'protonet' -> 'otam'"):
        _fit(make("otam"), tmp_path)
    other = Recipe(**{**RECIPE.to_dict(), "lr": 5e-2})
    with pytest.raises(RunMismatchError, match="recipe.lr: 0.01 -> 0.05"):
        train(make(), split(10, 6, 0), split(5, 6, 1), other, out_dir=tmp_path, progress=False)
    res = _fit(make(), tmp_path)  # the same run resumes
    assert len(res.history) == RECIPE.steps


def test_a_stop_between_the_selection_and_the_resume_point_still_resumes(tmp_path, monkeypatch):
    """best.pt was written before last.pt at a validation step: stopped between the two
    writes, best.pt held step 8 while last.pt had selected step 4, and every resume
    raised (its only remedy threw the training away)."""
    from fsarbench.training import loop

    full = make()
    _fit(full, tmp_path / "full")
    real = loop.save_checkpoint

    def stop_at_last_pt_of_step_8(path, payload):
        if path.name == "last.pt" and payload.get("step") == 8:
            raise KeyboardInterrupt("stopped between the two writes")
        real(path, payload)

    monkeypatch.setattr(loop, "save_checkpoint", stop_at_last_pt_of_step_8)
    with pytest.raises(KeyboardInterrupt):
        _fit(make(), tmp_path / "b")
    monkeypatch.setattr(loop, "save_checkpoint", real)
    resumed = make()
    res = _fit(resumed, tmp_path / "b")
    assert res.best_step == _fit(make(), tmp_path / "full").best_step
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert not (tmp_path / "b" / loop.PENDING_BEST).exists()


def test_validation_on_fewer_classes_than_the_training_way_says_so(caplog):
    """A 7-way recipe over a 5-class val split chose its checkpoint on 5-way episodes and
    printed 'val accuracy' without a word."""
    from fsarbench.training.trainer import val_manifest_for

    recipe = Recipe(steps=2, way=7, val_episodes=10)
    with caplog.at_level("WARNING"):
        manifest = val_manifest_for(split(5, 6, 1), recipe, seed=0)
    assert manifest.way == 5
    assert "validation episodes are 5-way, not the recipe's 7-way" in caplog.text


def test_a_val_split_too_small_for_the_shot_names_the_recipe_options():
    """The remedy named make_manifest's Python keyword min_videos_policy, which no command
    sets, for a shot the user had set for training (val_shot follows it)."""
    from fsarbench.episodes import ManifestError
    from fsarbench.training.trainer import val_manifest_for

    with pytest.raises(ManifestError, match=r"--recipe val_shot=K with K \+ 1 up to 6") as err:
        val_manifest_for(split(5, 6, 1), Recipe(steps=2, shot=10, val_shot=10), seed=0)
    assert "min_videos_policy" not in str(err.value)


def test_training_that_changes_no_weight_says_so(caplog):
    """lr=1e-300: best.pt was the untrained model bit for bit, reported as trained."""
    m = make()
    recipe = Recipe(**{**RECIPE.to_dict(), "lr": 1e-300})
    with caplog.at_level("WARNING"):
        train(m, split(10, 6, 0), split(5, 6, 1), recipe, progress=False)
    assert "training changed no weight (the updates were zero or underflowed: lr 1e-300)" in (
        caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING"):
        train(make(), split(10, 6, 0), split(5, 6, 1), RECIPE, progress=False)
    assert "changed no weight" not in caplog.text and "did not go down" not in caplog.text


def test_a_loss_that_ends_no_lower_than_it_began_is_named(caplog):
    """SGD lr=10 collapsed to chance (ln 5) after a few steps and exited as a trained model."""
    from fsarbench.training.loop import _warn_if_not_learning, loss_trend

    rows = [{"stage": "saliency", "step": 1, "ce": 9.0}]
    rows += [{"stage": "main", "step": i, "ce": 1.2 if i < 5 else 1.6094} for i in range(1, 21)]
    assert loss_trend(rows) == pytest.approx(("main", 1.2, 1.6094, 4))
    assert loss_trend(rows[:9]) is None  # too few steps to judge
    with caplog.at_level("WARNING"):
        _warn_if_not_learning(rows, "OUT")
    assert "OUT: the main stage's training loss did not go down (1.2 over its first" in caplog.text
    caplog.clear()
    _warn_if_not_learning(list(reversed(rows[1:])), "OUT")
    assert caplog.text == ""


def test_train_without_a_fingerprint_refuses_another_splits_run(tmp_path):
    """The default fingerprint named the train features' shape alone: a folder trained on
    other features of that shape, with another val split, was resumed, keeping a step
    chosen on the old val split."""
    from fsarbench.training.loop import RunMismatchError

    with pytest.raises(KeyboardInterrupt):
        train(make(), split(10, 6, 0), split(5, 6, 1), RECIPE, out_dir=tmp_path, stop_after=5)
    with pytest.raises(RunMismatchError, match=r"data\.train_digest: '\w+' -> '\w+'"):
        train(make(), split(10, 6, 9, noise=3.0), split(5, 6, 1), RECIPE, out_dir=tmp_path)
    with pytest.raises(RunMismatchError, match=r"data\.val_digest: '\w+' -> '\w+'"):
        train(make(), split(10, 6, 0), split(5, 6, 7), RECIPE, out_dir=tmp_path)
    resumed = train(make(), split(10, 6, 0), split(5, 6, 1), RECIPE, out_dir=tmp_path)
    assert len(resumed.history) == RECIPE.steps


def test_the_loss_trend_leaves_the_process_count_out():
    """Under DDP each history row names its process count, which the trend added to the loss:
    a flat loss of 1.0 resumed from 2 processes onto 1 read 3.0 -> 1.0."""
    from fsarbench.training.loop import loss_trend

    rows = [
        {"stage": "main", "step": i + 1, "ce": 1.0, **({"processes": 2} if i < 10 else {})}
        for i in range(20)
    ]
    assert loss_trend(rows) == ("main", 1.0, 1.0, 4)


def test_a_folder_in_the_place_of_a_checkpoint_is_refused_before_training(tmp_path):
    """A best.pt folder was reported as unreadable weights; run retrained the model from
    scratch and failed at its first save."""
    from fsarbench.training.loop import CheckpointError

    (tmp_path / "best.pt").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"best.pt is a folder .* move it away"):
        train(make(), split(10, 6, 0), split(5, 6, 1), RECIPE, out_dir=tmp_path, progress=False)
    assert not (tmp_path / "last.pt").exists()  # no step ran
