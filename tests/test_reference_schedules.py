"""The finetune recipes of HyRSM and CLIP-FSAR against their code base's training loop.

Both come from one code base (alibaba-mmai-research), whose few-shot loop each iteration
draws one task per GPU on 4 GPUs, steps the optimiser every ``BATCH_SIZE_PER_TASK``
iterations, stops after ``NUM_TRAIN_TASKS`` iterations, and sets the learning rate of
SOLVER's ``steps_with_relative_lrs`` policy at "epoch" ``floor(i / S) + i / S`` (``S =
STEPS_ITER``), with a linear warm-up from ``WARMUP_START_LR`` over the first "epoch". The
numbers below are the configs' (configs/projects/hyrsm/*, configs/projects/CLIPFSAR/*); the
schedule is simulated here the slow, obvious way, iteration by iteration, and compared with
what ``lr_factor`` gives each update of the composed recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from fsarbench.config import ConfigError
from fsarbench.training.finetune_recipe import finetune_recipe
from fsarbench.training.loop import lr_factor
from fsarbench.training.recipe import Recipe, frozen_recipe

GPUS = 4  # every config's NUM_GPUS; one task per GPU per iteration
APPLIED_WEIGHT_DECAY = 1e-3  # the base config's OPTIMIZER.WEIGHT_DECAY, what Adam is built with


@dataclass(frozen=True)
class Config:
    base_lr: float
    warmup_start_lr: float
    steps_iter: int
    steps: tuple[int, ...]
    lrs: tuple[float, ...]
    iterations: int  # NUM_TRAIN_TASKS
    accumulate: int  # BATCH_SIZE_PER_TASK
    max_epoch: int = 10
    warmup_epochs: int = 1


CONFIGS = {
    ("hyrsm", "kinetics100"): Config(2.2e-5, 5e-6, 100, (0, 4, 6, 9), (1, 0.5, 0.1, 0.05), 1200, 4),
    ("hyrsm", "kinetics100-hyrsm"): Config(
        2.2e-5, 5e-6, 100, (0, 4, 6, 9), (1, 0.5, 0.1, 0.05), 1200, 4
    ),
    ("hyrsm", "hmdb51"): Config(5e-5, 1e-5, 300, (0, 2, 3, 7), (1, 0.5, 0.1, 0.01), 2000, 2),
    ("hyrsm", "ucf101"): Config(5e-5, 1e-5, 700, (0, 3, 5, 7), (1, 0.5, 0.1, 0.01), 2500, 4),
    ("hyrsm", "ssv2-full"): Config(1e-4, 2e-5, 3000, (0, 6, 9), (1, 0.1, 0.01), 40000, 4),
    ("hyrsm", "ssv2-small"): Config(1e-4, 2e-5, 1500, (0, 4, 8), (1, 0.1, 0.01), 20000, 4),
    ("clip-fsar", "kinetics100"): Config(1e-5, 5e-6, 250, (0, 6, 9), (1, 0.1, 0.01), 5000, 4),
    ("clip-fsar", "kinetics100-hyrsm"): Config(1e-5, 5e-6, 250, (0, 6, 9), (1, 0.1, 0.01), 5000, 4),
    ("clip-fsar", "hmdb51"): Config(1e-5, 1e-6, 700, (0, 4, 6), (1, 0.1, 0.01), 5000, 4),
    ("clip-fsar", "ucf101"): Config(2e-6, 1e-7, 600, (0, 4, 6), (1, 0.1, 0.01), 3000, 4),
    ("clip-fsar", "ssv2-full"): Config(5e-5, 1e-5, 4000, (0, 4, 6), (1, 0.1, 0.01), 30000, 4),
    ("clip-fsar", "ssv2-small"): Config(5e-5, 2e-5, 2000, (0, 4, 6), (1, 0.1, 0.01), 30000, 4),
}


def relative_lr(cfg: Config, epoch: float) -> float:
    """``steps_with_relative_lrs``: the LRS entry of the last step boundary at or below
    ``epoch`` (boundaries ``STEPS + [MAX_EPOCH]``; past the last, the last entry)."""
    index = 0
    for i, boundary in enumerate(cfg.steps):
        if epoch >= boundary:
            index = i
    return cfg.lrs[index]


def reference_lr(cfg: Config, iteration: int) -> tuple[float, bool]:
    """The learning rate set at ``iteration`` and whether it is a warm-up one."""
    epoch = iteration // cfg.steps_iter + iteration / cfg.steps_iter
    if epoch < cfg.warmup_epochs:
        end = relative_lr(cfg, cfg.warmup_epochs) * cfg.base_lr
        slope = (end - cfg.warmup_start_lr) / cfg.warmup_epochs
        return cfg.warmup_start_lr + epoch * slope, True
    return relative_lr(cfg, epoch) * cfg.base_lr, False


def reference_updates(cfg: Config) -> list[tuple[float, bool]]:
    """The learning rate of each optimiser update: the one set on the iteration it steps."""
    return [reference_lr(cfg, i) for i in range(cfg.iterations) if (i + 1) % cfg.accumulate == 0]


@pytest.mark.parametrize("method, dataset", sorted(CONFIGS), ids=lambda v: str(v))
def test_recipe_follows_the_reference_loop(method, dataset):
    cfg = CONFIGS[(method, dataset)]
    recipe = finetune_recipe(method, dataset).recipe
    assert recipe.optimizer == "adam"
    assert recipe.lr == cfg.base_lr
    # each iteration's loss is divided by TRAIN.BATCH_SIZE (4) and `accumulate` iterations
    # are summed: the update's gradient is accumulate / 4 of the mean over its tasks, which
    # Adam does not see but its coupled L2 term does
    assert recipe.weight_decay == pytest.approx(APPLIED_WEIGHT_DECAY * 4 / cfg.accumulate)
    assert recipe.episodes_per_step == GPUS * cfg.accumulate
    updates = reference_updates(cfg)
    assert recipe.steps == len(updates)
    warm = [u for u, (_, in_warmup) in enumerate(updates) if in_warmup]
    assert warm == list(range(recipe.warmup_steps))
    factor = lr_factor(recipe, recipe.steps)
    slope = (cfg.base_lr - cfg.warmup_start_lr) * cfg.accumulate / cfg.steps_iter
    for u, (ref, in_warmup) in enumerate(updates):
        ours = recipe.lr * factor(u)
        if in_warmup:  # ours climbs per update, the reference per iteration: within one update
            assert abs(ours - ref) <= slope + 1e-9 * cfg.base_lr, (u, ours, ref)
        else:
            assert ours == pytest.approx(ref, rel=1e-12), (u, ours, ref)


def test_clip_fsar_trains_every_shot_on_one_shot_tasks():
    """CLIP-FSAR's 5-shot configs set SHOT 1 and SHOT_TEST 5: its 5-shot model is trained on
    1-shot tasks (5 queries per class) and validated at 5-shot."""
    recipe = finetune_recipe("clip-fsar", "hmdb51").recipe
    five = recipe.at_shot(5)
    assert (five.shot, five.episode_shot, five.val_shot, five.queries) == (5, 1, 5, 5)
    one = recipe.at_shot(1)
    assert (one.shot, one.episode_shot, one.val_shot) == (1, 1, 1)
    hyrsm = finetune_recipe("hyrsm", "hmdb51").recipe.at_shot(5)
    assert (hyrsm.episode_shot, hyrsm.queries) == (5, 3)


def test_lr_factor_milestone_factors_and_warmup_start():
    recipe = Recipe(
        schedule="multistep",
        milestones=(0.5, 0.75),
        milestone_factors=(0.5, 0.05),
        warmup_steps=4,
        warmup_start=0.2,
        steps=8,
    )
    factor = lr_factor(recipe, 8)
    got = [factor(s) for s in range(8)]
    assert got == pytest.approx([0.4, 0.6, 0.8, 1.0, 0.5, 0.5, 0.05, 0.05], rel=1e-12)
    plain = Recipe(schedule="multistep", milestones=(0.5, 0.75), warmup_steps=4, steps=8)
    assert [lr_factor(plain, 8)(s) for s in range(8)] == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, 0.1, 0.1, 0.01, 0.01], rel=1e-12
    )


def test_new_recipe_fields_leave_existing_recipes_identities_alone():
    """Unset, ``train_shot``, ``warmup_start`` and ``milestone_factors`` are not in a
    recipe's identity: no existing config hash changes."""
    identity = frozen_recipe("trx", dataset="synth").identity()
    assert not {"train_shot", "warmup_start", "milestone_factors"} & set(identity)
    assert "train_shot" in Recipe(train_shot=1).identity()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"schedule": "multistep", "milestone_factors": (0.1,)}, "one factor per milestone"),
        ({"schedule": "multistep", "milestones": (0.8, 0.2)}, "must be strictly increasing"),
        ({"schedule": "multistep", "milestones": (0.5, 0.5)}, "must be strictly increasing"),
        ({"schedule": "multistep", "milestones": (1.0,)}, "strictly between 0 and 1"),
        ({"schedule": "multistep", "milestones": (0.0, 0.5)}, "strictly between 0 and 1"),
        ({"warmup_start": 0.5}, "applies only with warmup_steps > 0"),
        ({"warmup_start": 1.0, "warmup_steps": 3}, "must be below 1"),
        ({"warmup_start": -0.1, "warmup_steps": 3}, "warmup_start"),
        ({"milestones": (0.5, 0.75), "milestone_factors": (0.5, 2.0)}, "milestone_factors"),
        ({"train_shot": -1}, "train_shot"),
    ],
)
def test_bad_schedule_fields_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        Recipe(**fields)


def test_milestone_factors_override_without_multistep_is_refused():
    with pytest.raises(ConfigError, match="milestone_factors applies only with schedule"):
        frozen_recipe("trx", {"milestone_factors": [0.5, 0.1]}, dataset="synth")


def test_reference_simulation_reads_the_doubled_epoch_counter():
    """The simulator itself, on a known case: Kinetics' CLIP-FSAR config drops to x0.1 at
    iteration 750 (epoch 3 + 3 = 6) and to x0.01 at 1,250 (epoch 5 + 5 = 10 >= 9), not at
    iterations 1,500 and 2,250 as a plain epoch count would."""
    cfg = CONFIGS[("clip-fsar", "kinetics100")]
    assert reference_lr(cfg, 749)[0] == cfg.base_lr
    assert reference_lr(cfg, 750)[0] == pytest.approx(0.1 * cfg.base_lr)
    assert reference_lr(cfg, 1249)[0] == pytest.approx(0.1 * cfg.base_lr)
    assert reference_lr(cfg, 1250)[0] == pytest.approx(0.01 * cfg.base_lr)
    assert reference_lr(cfg, 0) == (cfg.warmup_start_lr, True)
    assert math.isclose(reference_lr(cfg, 125)[0], 7.5e-6)


def test_short_run_warning_names_the_rate_the_warm_up_reaches():
    """``--recipe steps=2`` on CLIP-FSAR's recipe (62 warm-up steps from 0.5): the rate ends
    at 0.516 of lr, not at 2/62 as a warm-up from zero would."""
    recipe = finetune_recipe("clip-fsar", "kinetics100", {"recipe": {"steps": 2}}).recipe
    with pytest.warns(UserWarning, match="ends at 0.516 of"):
        factor = lr_factor(recipe, 2)
    assert factor(1) == pytest.approx(0.5 + 0.5 * 2 / 62)


def test_dropping_the_warm_up_says_to_drop_its_start_too():
    with pytest.raises(ConfigError, match="--recipe warmup_steps=0 warmup_start=0"):
        finetune_recipe("hyrsm", "hmdb51", {"recipe": {"warmup_steps": 0}})
    plain = finetune_recipe("hyrsm", "hmdb51", {"recipe": {"warmup_steps": 0, "warmup_start": 0}})
    assert plain.recipe.warmup_steps == 0
