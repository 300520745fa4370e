"""``run`` refuses what it cannot do before doing any of it: settings the splits cannot serve
(found mid-run, after other cells had trained), absurd ``--episodes`` counts (a billion filled
memory), recipe overrides the grid would drop (``--recipe shot=3``), and tells users of a
training folder mismatch what their own command offers."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from finetune_fixtures import TINY_SYNTH, tiny_finetune_track
from test_runner import OPTS, provider
from test_train_cmd import ARGS, FakeProvider

import fsarbench as fb
import fsarbench.experiments.features as features_mod
from fsarbench.cli.main import build_parser, main
from fsarbench.data import datasets as datasets_mod
from fsarbench.data.datasets import get_dataset
from fsarbench.episodes import MAX_EPISODES, EpisodeCountError, ManifestError, make_manifest
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.feasibility import (
    InfeasibleCellsError,
    MissingClassesError,
    check_cells,
)
from fsarbench.experiments.features import FrozenFeatureProvider
from fsarbench.experiments.runner import (
    CellRunner,
    FrozenTrack,
    RunOptions,
    run_cells,
)
from fsarbench.experiments.summary_tables import summary_tables
from fsarbench.experiments.units import ShotOverrideError
from fsarbench.report.recipe_changes import recipe_changes, recipe_changes_text
from fsarbench.results import load_records
from fsarbench.training import frozen_recipe, train
from fsarbench.training.loop import RunMismatchError

RECIPE = [a for a in ARGS if a != "--no-progress"]  # "--recipe", KEY=VALUE ...


class ToyProvider(FakeProvider):
    """In-memory features for ``run`` (5 test classes of 6 videos; train 8, val 5)."""

    def __call__(self, dataset: str, protocol: str | None = None):
        return super().__call__(dataset)


def _run(tmp_path, *extra: str, recipe: tuple[str, ...] = ()) -> int:
    """``run`` of protonet on the toy features (``recipe``: more ``--recipe`` items)."""
    argv = ["run", "--method", "protonet", "--dataset", "toy", "--episodes", "30"]
    argv += ["--out", str(tmp_path / "out"), "--no-progress", *extra]
    return main([*argv, *RECIPE, *recipe])


def _listing_runner(dataset, tmp_path, monkeypatch) -> CellRunner:
    """A frozen-track runner over ``dataset`` whose pre-flight reads the listing and whose
    extraction fails the test: checks must come before any feature is made."""
    monkeypatch.setattr(datasets_mod, "get_dataset", lambda *a, **k: dataset)

    def extraction(dataset, protocol):
        raise AssertionError("features were extracted before the check")

    listing = FrozenFeatureProvider(cache_root=tmp_path / "cache").listing
    track = FrozenTrack(
        extraction, recipe_overrides={}, device="cpu", progress=False, listing=listing
    )
    return CellRunner({"frozen": track}, RunOptions(tmp_path / "out", progress=False))


# -- 1. settings the splits cannot serve ------------------------------------------------------
def test_infeasible_cells_are_refused_before_any_training_each_named(tmp_path):
    """A 7-way cell on a 6-class test split failed only after the 5-way cells had trained."""
    cells = [Cell("protonet", "toy", 5, 1), Cell("otam", "toy", 7, 1), Cell("otam", "toy", 5, 5)]
    with pytest.raises(InfeasibleCellsError) as err:
        run_cells(cells, provider, RunOptions(tmp_path, **OPTS))
    text = str(err.value)
    assert text.startswith("2 of 3 planned cell(s) need episodes")
    assert "toy test split: 7-way 1-shot test episodes, 1 query per class" in text
    assert "has only 6; choose --ways up to 6" in text and "cells: otam 7w1s" in text
    # 5-shot: 5 videos per class serve 4 shots with 1 query; training takes 3 queries
    assert "need 6; 6 class(es) fall short; choose --shots up to 4" in text
    assert "toy train split: 5-way 5-shot training episodes, 3 queries per class" in text
    assert "--recipe queries=Q" in text and "cells: otam 5w5s" in text
    assert "min_videos_policy" not in text
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing trained or written


def test_run_and_plan_name_infeasible_cells_in_runs_own_options(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", ToyProvider)
    assert _run(tmp_path, "--ways", "5", "9", "--shots", "1", "--plan") == 2
    captured = capsys.readouterr()
    assert "-> 2 cell(s) [5w1s, 9w1s INFEASIBLE]" in captured.out
    assert "INFEASIBLE: 1 cell(s) (marked)" in captured.out
    assert "9-way episodes need 9 classes, but the test split of toy has only 5" in captured.err
    assert "choose --ways up to 5" in captured.err
    assert _run(tmp_path, "--ways", "5", "9", "--shots", "1") == 2
    assert "cells: protonet 9w1s" in capsys.readouterr().err
    assert not (tmp_path / "out" / "models").exists()  # the 5-way cell did not train first
    assert _run(tmp_path, "--ways", "5", "--shots", "1", "--plan") == 0
    assert "INFEASIBLE" not in capsys.readouterr().out


def test_the_default_hint_names_no_option_run_lacks():
    """``min_videos_policy='drop'`` exists for make_manifest and ``data check``, not ``run``:
    the commands' manifests (draw_test_manifest) and training episodes name what fits."""
    from fsarbench.episodes import EpisodeSpec, check_feasible, class_pools, draw_test_manifest

    classes = np.repeat(np.arange(6), 3)
    with pytest.raises(ManifestError, match="min_videos_policy='drop'"):
        make_manifest(classes, way=5, shot=3, queries=1, episodes=2)  # the API has it
    with pytest.raises(ManifestError) as err:
        draw_test_manifest(
            classes, split_variant="toy", way=5, shot=3, queries=1, episodes=2, seed=0
        )
    assert "min_videos_policy" not in str(err.value) and "lower shot" in str(err.value)
    with pytest.raises(ManifestError) as err:
        check_feasible(class_pools(classes), EpisodeSpec(5, 3, 1), None)
    assert "min_videos_policy" not in str(err.value)


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny-synth")
    get_dataset("synth", root=base, config=TINY_SYNTH).videos("train")  # generated once
    return base


def _copy(tiny_synth, tmp_path):
    shutil.copytree(tiny_synth, tmp_path / "synth")
    return get_dataset("synth", root=tmp_path / "synth", config=TINY_SYNTH)


def _remove_test_videos(synth, n: int) -> str:
    """Delete ``n`` test videos of the first test class; its name."""
    first = synth.videos("test")[0].class_name
    for video in [v for v in synth.videos("test") if v.class_name == first][:n]:
        video.path.unlink()
    return first


@pytest.mark.video
def test_frozen_cells_are_judged_on_the_videos_present_before_extraction(
    tiny_synth, tmp_path, monkeypatch
):
    """4 listed videos per class serve 2-shot; with 2 of one class missing (left out by the
    extraction) they do not, and the run said so only after extracting and training."""
    synth = _copy(tiny_synth, tmp_path)
    name = _remove_test_videos(synth, 2)
    runner = _listing_runner(synth, tmp_path, monkeypatch)
    check_cells(runner, [Cell("protonet", "synth", 5, 1)])  # 2 present videos serve 1-shot
    with pytest.raises(InfeasibleCellsError) as err:
        check_cells(runner, [Cell("protonet", "synth", 5, 1), Cell("protonet", "synth", 5, 2)])
    text = str(err.value)
    assert (
        f"({name!r}) of synth-v1-seed0 test has 2 videos, but 2-shot episodes with 1 queries"
        in text
    )
    assert "2 listed test video(s) of synth are left out as missing" in text
    assert "cells: protonet 5w2s" in text and "5w1s" not in text


@pytest.mark.video
def test_finetune_cells_are_judged_on_the_probed_usable_videos(tiny_synth, tmp_path):
    synth = _copy(tiny_synth, tmp_path)
    _remove_test_videos(synth, 2)
    track = tiny_finetune_track(synth, tmp_path / "cache", recipe={"way": 5})
    runner = CellRunner({"finetune": track}, RunOptions(tmp_path / "out", progress=False))
    cells = [Cell("protonet", "synth", 5, 2, track="finetune")]
    cells += [Cell("protonet", "synth", 5, 4, track="finetune")]
    with pytest.raises(InfeasibleCellsError) as err:
        runner.run_cells(cells)
    text = str(err.value)
    assert "2 of 2 planned cell(s)" in text
    assert "left out as missing, unreadable or too short" in text
    assert "train split: 5-way 4-shot training episodes" in text  # 4 videos serve 3 shots
    assert not (tmp_path / "out" / "models").exists()


@pytest.mark.video
@pytest.mark.parametrize("track", ["frozen", "finetune"])
def test_a_split_class_without_a_usable_video_is_refused(tiny_synth, tmp_path, monkeypatch, track):
    """A test class folder renamed (HMDB51's 'fencing' as 'Fencing'): 5-way episodes over the
    other classes could still be drawn, so the run printed a number over 9 of 10 test classes
    as the dataset's, and Table 1 showed it unmarked."""
    synth = _copy(tiny_synth, tmp_path)
    name = _remove_test_videos(synth, 4)  # every video of the class
    monkeypatch.setattr(datasets_mod, "get_dataset", lambda *a, **k: synth)
    if track == "frozen":
        listing = FrozenFeatureProvider(cache_root=tmp_path / "cache").listing
        made = FrozenTrack(None, recipe_overrides={}, device="cpu", progress=False, listing=listing)
    else:
        made = tiny_finetune_track(synth, tmp_path / "cache", recipe={"way": 5})
    runner = CellRunner({track: made}, RunOptions(tmp_path / "out", progress=False))
    with pytest.raises(MissingClassesError) as err:
        runner.run_cells([Cell("protonet", "synth", 5, 1, track=track)])
    text = str(err.value)
    assert f"test split: 1 of {len(synth.class_names('test'))} classes have no usable video" in text
    assert f"({name})" in text and "'python -m fsarbench data check synth' lists" in text
    assert not (tmp_path / "out" / "models").exists()


# -- 2. --episodes bounds ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "message"),
    [("1000000000", "at most 1,000,000"), ("0", "at least 1"), ("-5", "at least 1")],
)
@pytest.mark.parametrize("command", ["run", "eval"])
def test_absurd_episode_counts_are_refused_before_any_work(command, value, message, capsys):
    argv = [command, "--episodes", value, "--out", "unused"]
    argv += ["--method", "protonet", "--plan"] if command == "run" else ["protonet"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --episodes: " in err and message in err


def test_the_bound_is_in_the_help_and_the_api():
    assert MAX_EPISODES == 1_000_000
    for command in ("run", "eval"):
        sub = build_parser()._subparsers._group_actions[0].choices[command]
        (action,) = [a for a in sub._actions if "--episodes" in a.option_strings]
        assert "1 to 1,000,000" in action.help
    with pytest.raises(EpisodeCountError, match="RunOptions.episodes must be at most 1,000,000"):
        RunOptions("unused", episodes=10**9)
    with pytest.raises(EpisodeCountError, match="at least 1"):
        RunOptions("unused", episodes=0)


# -- 3. recipe overrides the grid sets --------------------------------------------------------
def _synth_provider(name: str):
    return provider("synth")  # the toy features under the name whose recipe the tables know


def test_a_val_shot_override_is_kept_and_named_in_the_tables(tmp_path):
    """``--recipe val_shot=2`` was replaced by the unit's shot, and no note said anything."""
    over = {**OPTS["recipe_overrides"], "val_shot": 2}
    options = RunOptions(tmp_path, **{**OPTS, "recipe_overrides": over})
    (record,) = run_cells([Cell("protonet", "synth", 5, 1)], _synth_provider, options)
    assert record.recipe["val_shot"] == 2 and record.recipe["shot"] == 1
    assert recipe_changes(record)["val_shot"] == 2
    assert "val_shot=2" in recipe_changes_text([record])


def test_a_train_shot_trains_the_cells_model_on_episodes_of_that_shot(tmp_path, monkeypatch):
    """``--recipe train_shot=1`` (CLIP-FSAR's recipes set it): the 3-shot cell's model is
    trained on 1-shot episodes, validated at 3-shot, and its record and table say so."""
    from fsarbench.training import trainer as trainer_mod

    drawn = []
    real = trainer_mod.EpisodeSampler.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        drawn.append(self.spec.shot)

    monkeypatch.setattr(trainer_mod.EpisodeSampler, "__init__", spy)
    over = {**OPTS["recipe_overrides"], "train_shot": 1}
    options = RunOptions(tmp_path, **{**OPTS, "recipe_overrides": over})
    (record,) = run_cells([Cell("protonet", "synth", 5, 3)], _synth_provider, options)
    assert drawn and set(drawn) == {1}
    # the model is the 3-shot cell's own (not one shared across shots): records and settings
    # keep train_shot 3; the episodes' shot is the recipe's
    assert (record.shot, record.train_shot, record.episode_shot) == (3, 3, 1)
    assert (record.recipe["shot"], record.recipe["train_shot"], record.recipe["val_shot"]) == (
        3,
        1,
        3,
    )
    (table,) = summary_tables([record]).values()
    assert "[trained on 1-shot episodes]" in table and "[trained 3-shot]" not in table
    assert "protonet's 3-shot model trained on 1-shot episodes (the recipe's train_shot)" in table
    assert "train_shot=1" in recipe_changes_text([record])  # the override is named


def test_a_shot_override_the_grid_would_drop_is_refused(tmp_path, monkeypatch, capsys):
    """``--recipe shot=3``: every unit trained at its cell's shot, the 3 dropped silently.
    Refused, except with --share-model-across-shots (one model at the recipe's shot)."""
    over = {**OPTS["recipe_overrides"], "shot": 3}
    options = RunOptions(tmp_path / "a", **{**OPTS, "recipe_overrides": over})
    with pytest.raises(ShotOverrideError, match="--share-model-across-shots"):
        run_cells([Cell("protonet", "synth", 5, 1)], _synth_provider, options)
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", ToyProvider)
    assert _run(tmp_path, "--shots", "1", recipe=("shot=3", "val_shot=2")) == 2
    err = capsys.readouterr().err
    assert "--recipe shot=3 cannot apply to protonet on toy" in err and "(1 here)" in err
    assert not (tmp_path / "out" / "models").exists()
    # with one model for every shot, the recipe's shot is the training shot: honoured, shown
    over = {**OPTS["recipe_overrides"], "shot": 2}
    opts = {**OPTS, "recipe_overrides": over, "share_shots": True}
    options = RunOptions(tmp_path / "shared", **opts)
    cells = [Cell("protonet", "synth", 5, 1), Cell("protonet", "synth", 5, 3)]
    records = run_cells(cells, _synth_provider, options)
    assert {(r.shot, r.train_shot, r.recipe["shot"]) for r in records} == {(1, 2, 2), (3, 2, 2)}
    (table,) = summary_tables(records).values()
    assert "models shared across shots: trained 5-way 2-shot" in table
    row = next(line for line in table.splitlines() if line.startswith("| protonet"))
    assert row.count("[trained 2-shot]") == 2  # both cells: 1- and 3-shot, trained 2-shot


# -- 4. what a training-folder mismatch tells each caller -------------------------------------
def test_a_mismatch_in_python_names_resume_false_not_a_flag(tmp_path):
    data = provider("toy")
    recipe = frozen_recipe("protonet", {"steps": 2, "val_episodes": 0})
    head = fb.create_method("protonet", feature_dim=16, seq_len=4)
    train(head, data.splits["train"], None, recipe, out_dir=tmp_path, fingerprint={"seed": 0})
    with pytest.raises(RunMismatchError) as err:
        train(head, data.splits["train"], None, recipe, out_dir=tmp_path, fingerprint={"seed": 1})
    assert "seed: 0 -> 1" in str(err.value) and "resume=False" in str(err.value)
    assert "--overwrite" not in str(err.value)


def test_train_names_overwrite_for_unusable_selected_weights(tmp_path, monkeypatch, capsys):
    """``train`` offers --overwrite; its selected-weights errors named no way out."""
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", FakeProvider)
    argv = ["train", "protonet", "--dataset", "toy", "--out", str(tmp_path), *RECIPE]
    assert main(argv) == 0
    (tmp_path / "best.pt").write_bytes(b"truncated")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the selected weights cannot be read" in err and "pass --overwrite" in err
    assert "resume=False" not in err
    assert main([*argv, "--overwrite"]) == 0


def test_run_retrains_a_mismatched_folder_without_naming_a_flag_it_lacks(tmp_path, caplog):
    """``run`` has no --overwrite: it trains the unit again, and says why (only)."""
    cells = [Cell("protonet", "toy", 5, 1), Cell("protonet", "toy", 5, 2)]
    run_cells(cells, provider, RunOptions(tmp_path / "a", **OPTS))
    one, two = sorted((tmp_path / "a" / "models").iterdir())
    (tmp_path / "b" / "models" / two.name).mkdir(parents=True)
    shutil.copyfile(one / "last.pt", tmp_path / "b" / "models" / two.name / "last.pt")
    with caplog.at_level(logging.WARNING):
        run_cells(cells[1:], provider, RunOptions(tmp_path / "b", **OPTS))
    assert f"retraining {two.name} from scratch" in caplog.text
    assert "made with other settings" in caplog.text
    assert "--overwrite" not in caplog.text and "resume=False" not in caplog.text


def test_reuse_stale_says_it_reuses_other_episode_counts(tmp_path):
    sub = build_parser()._subparsers._group_actions[0].choices["run"]
    (action,) = [a for a in sub._actions if "--reuse-stale" in a.option_strings]
    assert "another --episodes count" in " ".join(action.help.split())
    cells = [Cell("protonet", "toy", 5, 1)]
    run_cells(cells, provider, RunOptions(tmp_path, **OPTS))
    opts = {**OPTS, "episodes": 250, "reuse_stale": True}
    (record,) = run_cells(cells, provider, RunOptions(tmp_path, **opts))
    assert record.episodes == 200
    assert any(d.startswith("manifest_hash:") for d in record.stale_accepted)
    assert load_records(tmp_path)[0].stale_accepted == record.stale_accepted


def test_train_overwrite_moves_the_replaced_runs_records_aside(tmp_path, monkeypatch, capsys):
    """--overwrite removed only the checkpoints: the replaced model's records stayed, and the
    leaderboard listed them beside the new run's."""
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", FakeProvider)
    argv = ["train", "protonet", "--dataset", "toy", "--out", str(tmp_path), *RECIPE]
    assert main(argv) == 0
    (tmp_path / "records").mkdir(exist_ok=True)
    (tmp_path / "records" / "old.json").write_text("{}")
    (tmp_path / "summary.csv").write_text("old\n")
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 0
    assert "the replaced run's records moved to" in capsys.readouterr().out
    (aside,) = tmp_path.glob("replaced-*")
    assert (aside / "replaced-records" / "old.json").exists()
    assert (aside / "replaced-summary.csv").exists()
    assert not any(p.name == "old.json" for p in tmp_path.rglob("records/*.json"))


@pytest.mark.parametrize(
    "bad", [["--recipe", "stpes=2"], ["--hparams", '{"metrc": "cosine"}'], ["--recipe", "lr=-1"]]
)
def test_train_overwrite_deletes_nothing_on_bad_arguments(tmp_path, monkeypatch, capsys, bad):
    """Review: ``--overwrite`` cleared the finished run's checkpoints before the new recipe
    and hyper-parameters were checked, so a typo deleted the run and then failed."""
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", FakeProvider)
    argv = ["train", "protonet", "--dataset", "toy", "--out", str(tmp_path), *RECIPE]
    assert main(argv) == 0
    kept = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert "best.pt" in kept
    capsys.readouterr()
    assert main([*argv, *bad, "--overwrite"]) == 2
    assert "error:" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == kept


def test_plan_extracts_nothing_and_marks_units_whose_features_are_missing(tmp_path, capsys):
    """``run --plan`` extracted every split's features first (2 minutes for synth, hours for
    a real dataset) just to print the plan; it now plans from the features' outline."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["run", "--method", "sgtm-otam", "protonet", "--dataset", "synth", "--shots", "1"]
    argv += ["--plan", "--cache", str(cache), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert not (cache / "features").exists()
    assert "2 model(s) to train for 2 cell(s):" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith(" *")}
    assert set(lines) == {"*sgtm-otam", "*protonet"}
    assert "38 steps" in lines["*sgtm-otam"] and "30 steps" in lines["*protonet"]
    assert "features not extracted yet: synth (marked *)" in text


def test_a_checkpoint_write_cut_short_is_removed_when_its_unit_is_next_used(tmp_path, caplog):
    """A SIGKILL during a checkpoint write left ``.last.pt.<random>.tmp`` (25 MB for TRX)
    in the unit's folder for good; preempted cluster jobs piled them up."""
    run_cells([Cell("protonet", "toy", 5, 1)], provider, RunOptions(tmp_path, **OPTS))
    (folder,) = (tmp_path / "models").iterdir()
    cut = folder / ".last.pt.k2x9_f.tmp"
    cut.write_bytes(b"half a checkpoint")
    (folder / "notes.txt").write_text("mine")
    with caplog.at_level(logging.WARNING):
        run_cells([Cell("protonet", "toy", 3, 1)], provider, RunOptions(tmp_path, **OPTS))
    assert not cut.exists() and (folder / "notes.txt").read_text() == "mine"
    assert f"removing {cut}: a write cut short" in caplog.text
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [folder.name]


def test_run_workers_reach_the_finetune_track():
    """'run --track finetune --workers 6' decoded with the default worker count: --workers
    reached the frozen track's extraction only. An explicit --option workers=N wins."""
    from fsarbench.cli.main import build_parser
    from fsarbench.cli.run_cmd import _setup

    argv = ["run", "--method", "protonet", "--track", "finetune", "--workers", "6"]
    _, tracks = _setup(build_parser().parse_args(argv))
    assert tracks["finetune"].overrides["options"]["workers"] == 6
    _, tracks = _setup(build_parser().parse_args([*argv, "--option", "workers=1"]))
    assert tracks["finetune"].overrides["options"]["workers"] == 1
    _, tracks = _setup(build_parser().parse_args(argv[:-2]))
    assert "workers" not in tracks["finetune"].overrides["options"]


def test_missing_backbone_weights_name_runs_own_flags(monkeypatch, capsys):
    """'run --all --track finetune --plan' offline ended with "pass --weights PATH ... or
    --weights none", flags run does not have."""
    import fsarbench.cli.run_cmd as run_cmd
    from fsarbench.features.backbones import BackboneWeightsError

    def missing(args):
        raise BackboneWeightsError("put resnet18.pth at ..., or pass --weights none")

    monkeypatch.setattr(run_cmd, "_run", missing)
    assert main(["run", "--all", "--track", "finetune", "--plan"]) == 2
    err = capsys.readouterr().err
    assert "'run --plan' builds each model to count its cost" in err
    assert "--option weights=PATH|none on the finetune track" in err


def test_eval_dataset_refuses_a_test_class_without_a_usable_video():
    """'eval --dataset' drew its episodes over the classes that have videos: a number over 9
    of 10 test classes under the dataset's name."""
    from fsarbench.experiments.feasibility import check_split_classes

    names = ["a", "b", "c"]
    check_split_classes("hmdb51", "test", np.array([0, 1, 2, 2]), names)  # every class: fine
    with pytest.raises(MissingClassesError, match=r"test split: 1 of 3 classes .* \(b\)"):
        check_split_classes("hmdb51", "test", np.array([0, 2, 2]), names)


@pytest.mark.video
def test_a_val_class_without_videos_is_refused_only_where_validation_runs(
    tiny_synth, tmp_path, monkeypatch
):
    """With --recipe val_episodes=0 the val split is never used: a class lost there changes
    no number, and was refused all the same."""
    synth = _copy(tiny_synth, tmp_path)
    first = synth.videos("val")[0].class_name
    for video in [v for v in synth.videos("val") if v.class_name == first]:
        video.path.unlink()
    monkeypatch.setattr(datasets_mod, "get_dataset", lambda *a, **k: synth)
    listing = FrozenFeatureProvider(cache_root=tmp_path / "cache").listing

    def runner(recipe: dict) -> CellRunner:
        track = FrozenTrack(
            None, recipe_overrides=recipe, device="cpu", progress=False, listing=listing
        )
        return CellRunner({"frozen": track}, RunOptions(tmp_path / "out", progress=False))

    cells = [Cell("protonet", "synth", 5, 1)]
    with pytest.raises(MissingClassesError, match=f"val split: 1 of .* \\({first}\\)"):
        check_cells(runner({}), cells)
    check_cells(runner({"val_episodes": 0}), cells)  # no validation: nothing refused


def test_a_test_split_left_too_small_for_any_shot_says_so_and_what_to_do():
    """After the extraction left out unreadable videos, a class had 1 usable video and the
    run said 'choose --shots up to 0' (refused by --shots) without naming the split."""
    import numpy as np

    from fsarbench.episode_streams import draw_test_manifest_fast
    from fsarbench.episodes import ManifestError
    from fsarbench.experiments.runner import TEST_REMEDIES

    classes = np.repeat(np.arange(6), [1, 4, 4, 4, 4, 4])
    with pytest.raises(ManifestError) as err:
        draw_test_manifest_fast(
            classes,
            split_variant="hmdb51-trx",
            way=5,
            shot=1,
            queries=1,
            episodes=10,
            seed=0,
            class_names=["fencing", *"bcdef"],
            remedies=TEST_REMEDIES,
        )
    text = str(err.value)
    assert "class 0 ('fencing') of hmdb51-trx test has 1 videos" in text
    assert "too few for any shot. Restore or replace those videos" in text
    assert "--shots up to" not in text


class _Leaky:
    """A registered dataset whose ``leak`` split lists the train split's videos."""

    def __init__(self, synth, leak: str) -> None:
        self.synth, self.leak = synth, leak

    def videos(self, split: str):
        return self.synth.videos("train" if split == self.leak else split)

    def __getattr__(self, name: str):
        return getattr(self.synth, name)


@pytest.mark.parametrize("leak", ["test", "val"])
def test_splits_sharing_classes_are_refused_before_any_work(
    tiny_synth, tmp_path, monkeypatch, leak
):
    """A dataset added with register_dataset whose test (or val) split held its train
    classes was trained and tested: `run` printed 66.67 +- 2.35 as a few-shot number."""
    from fsarbench.cli.train_cmd import _dataset_main_first
    from fsarbench.data.datasets import SplitListError

    leaky = _Leaky(_copy(tiny_synth, tmp_path), leak)
    monkeypatch.setattr(datasets_mod, "get_dataset", lambda *a, **k: leaky)
    first = sorted(v.class_name for v in leaky.videos("train"))[0]
    splits = "train and test" if leak == "test" else "train and val"
    message = r"synth: its splits put \d+ class name\(s\) in more than one split "
    message += rf"\(e\.g\. '{first}' in {splits}\)"

    provider = FrozenFeatureProvider(cache_root=tmp_path / "cache")
    finetune = tiny_finetune_track(leaky, tmp_path / "cache", recipe={"way": 5})

    def probe(name: str):
        return finetune.clip_data(name, finetune.recipe(Cell("protonet", name, 5, 1)).options)

    for call in (provider.listing, provider, probe):
        with pytest.raises(SplitListError, match=message):
            call("synth")
    with pytest.raises(SplitListError, match="few-shot splits must hold disjoint classes"):
        _dataset_main_first("synth", None)
    assert not (tmp_path / "cache" / "features").exists()  # refused before extracting


def test_disjoint_splits_compare_classes_as_folders_are_read():
    from types import SimpleNamespace as V

    from fsarbench.data.datasets import SplitListError, check_disjoint_splits

    listed = {
        "train": [V(class_name="Fencing", video_id="a")],
        "test": [V(class_name="x", video_id="b")],
    }
    check_disjoint_splits("mine", listed)  # apart: nothing to say
    listed["test"].append(V(class_name="fencing", video_id="c"))
    with pytest.raises(SplitListError, match=r"mine: its splits put 1 class name\(s\)"):
        check_disjoint_splits("mine", listed)
    listed["test"] = [V(class_name="x", video_id="a")]
    with pytest.raises(SplitListError, match=r"1 video name\(s\) .*'a' in train and test"):
        check_disjoint_splits("mine", listed)


def test_train_overwrite_keeps_the_old_model_of_a_dataset_it_refuses(tiny_synth, tmp_path):
    """--overwrite deleted best.pt and last.pt, then the split check refused the dataset."""
    from fsarbench.data.datasets import SplitListError

    leaky = _Leaky(_copy(tiny_synth, tmp_path), "test")
    datasets_mod.register_dataset("leaky-mine", lambda **k: leaky, flip_ok=False)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.pt", "last.pt"):
        (run / name).write_bytes(b"a model")
    argv = ["train", "protonet", "--dataset", "leaky-mine", "--out", str(run), "--overwrite"]
    try:
        with pytest.raises(SplitListError, match="leaky-mine: its splits put"):
            build_parser().parse_args(argv).func(build_parser().parse_args(argv))
    finally:
        datasets_mod.DATASETS.pop("leaky-mine", None)
        datasets_mod.NO_FLIP.discard("leaky-mine")
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt"]


class _Tagged:
    """synth with its classes named by split tags, as SSv2-Full's lists name them."""

    def __init__(self, synth) -> None:
        self.synth = synth

    def class_names(self, split: str) -> list[str]:
        return [f"{split}{i}" for i, _ in enumerate(self.synth.class_names(split))]

    def videos(self, split: str):
        import dataclasses

        names = self.class_names(split)
        return [
            dataclasses.replace(v, class_name=names[v.class_index])
            for v in self.synth.videos(split)
        ]

    def __getattr__(self, name: str):
        return getattr(self.synth, name)


def test_clip_fsar_refuses_split_tag_names_before_extracting_or_training(
    tiny_synth, tmp_path, monkeypatch
):
    """The refusal came at the first step of training (after extraction), or with names of
    the train classes only, at the first validation."""
    from fsarbench.cli.train_cmd import _check_method_class_names
    from fsarbench_baselines.clip_fsar import ClassNameTagError

    tagged = _Tagged(_copy(tiny_synth, tmp_path))
    runner = _listing_runner(tagged, tmp_path, monkeypatch)
    tiny = (("text_tower", "tiny"), ("text_weights", "none"))
    with pytest.raises(
        ClassNameTagError,
        match=r"46 class\(es\) are named by their split tags, not actions \(e\.g\. 'test0'",
    ):
        check_cells(runner, [Cell("clip-fsar", "synth", 5, 1, tiny)])
    check_cells(runner, [Cell("protonet", "synth", 5, 1)])  # other heads need no names
    with pytest.raises(ClassNameTagError, match="no prompt_names"):
        _check_method_class_names("clip-fsar", "synth", None, dict(tiny))
    _check_method_class_names("otam", "synth", None, {})


def test_run_refuses_split_tag_names_in_its_first_pass_and_plan(
    tiny_synth, tmp_path, monkeypatch, capsys
):
    """Checked grid by grid, a second grid's clip-fsar cell was refused after the first grid
    had trained, and --plan exited 0 for a run that would be refused."""
    tagged = _Tagged(_copy(tiny_synth, tmp_path))
    monkeypatch.setattr(datasets_mod, "get_dataset", lambda *a, **k: tagged)
    argv = ["run", "--method", "protonet", "clip-fsar", "--dataset", "synth", "--plan"]
    argv += ["--features", "weights=none", "tiny=true", "--out", str(tmp_path / "out")]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "are named by their split tags" in err and "prompt_names" in err
    assert not (tmp_path / "out" / "models").exists()


def test_a_clip_fsar_prompt_without_its_slot_is_refused_at_planning(
    tiny_synth, tmp_path, monkeypatch
):
    """A prompt without one {} was refused when its cell's method was built, after the
    cells planned before it had trained."""
    runner = _listing_runner(_copy(tiny_synth, tmp_path), tmp_path, monkeypatch)
    hparams = (("prompt", "a video of"), ("text_tower", "tiny"), ("text_weights", "none"))
    with pytest.raises(ValueError, match="must hold exactly one {} for the class name"):
        check_cells(
            runner, [Cell("protonet", "synth", 5, 1), Cell("clip-fsar", "synth", 5, 1, hparams)]
        )


def test_eval_refuses_split_tag_names_before_making_test_features(
    tiny_synth, tmp_path, monkeypatch, capsys
):
    tagged = _Tagged(_copy(tiny_synth, tmp_path))
    monkeypatch.setattr(datasets_mod, "get_dataset", lambda *a, **k: tagged)
    import fsarbench.experiments.features as features

    def no_extraction(*args, **kwargs):
        raise AssertionError("test features were made before the check")

    monkeypatch.setattr(features.FrozenFeatureProvider, "__call__", no_extraction)
    hparams = '{"text_tower": "tiny", "text_weights": "none"}'
    argv = ["eval", "clip-fsar", "--dataset", "synth", "--episodes", "10", "--hparams", hparams]
    assert main(argv) != 0
    assert "are named by their split tags" in capsys.readouterr().err


def _undecodable_class(tiny_synth, tmp_path, monkeypatch, split: str, position: int):
    """A tiny frozen provider over a copy of ``tiny_synth`` whose ``split`` class of the
    video at ``position`` has only zero-byte files; and that class's name."""
    synth = _copy(tiny_synth, tmp_path)
    name = synth.videos(split)[position].class_name
    for video in [v for v in synth.videos(split) if v.class_name == name]:
        video.path.write_bytes(b"")
    monkeypatch.setattr(datasets_mod, "get_dataset", lambda *a, **k: synth)
    tiny = {"backbone": "resnet18", "weights": "none", "resolution": 32, "num_frames": 2}
    provider = FrozenFeatureProvider(
        cache_root=tmp_path / "cache", progress=False, preset_overrides={**tiny, "train_views": 1}
    )
    return provider, name


@pytest.mark.video
def test_a_frozen_class_whose_files_exist_but_none_decodes_is_refused(
    tiny_synth, tmp_path, monkeypatch
):
    """Zero-byte (or corrupt) files of a whole class passed the listing's existence check;
    the extraction dropped them and the run printed 100.00 ± 0.00 over the other classes."""
    provider, first = _undecodable_class(tiny_synth, tmp_path, monkeypatch, "test", 0)
    with pytest.raises(MissingClassesError, match=f"test split: 1 of .* \\({first}\\)"):
        provider("synth")


@pytest.mark.video
def test_a_frozen_val_class_whose_files_exist_but_none_decodes_is_refused_where_it_validates(
    tiny_synth, tmp_path, monkeypatch
):
    """The provider leaves val unchecked (it does not know whether a cell validates); the
    checkpoint was then chosen on episodes over the other val classes, without a word."""
    from fsarbench.training.trainer import val_manifest_for

    provider, last = _undecodable_class(tiny_synth, tmp_path, monkeypatch, "val", -1)
    val = provider("synth").splits["val"]
    recipe = frozen_recipe("otam", {"val_episodes": 4})
    with pytest.raises(MissingClassesError, match=f"val split: 1 of .* \\({last}\\)"):
        val_manifest_for(val, recipe, 0)
    assert val_manifest_for(val, frozen_recipe("otam", {"val_episodes": 0}), 0) is None


@pytest.mark.video
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_two_listed_videos_that_are_one_file_are_refused(tiny_synth, tmp_path, link):
    """Paths as written differ, so a link from one listed video to another (a dead Kinetics
    link filled with another video of its class) passed: support and query of one episode."""
    import os

    from fsarbench.data.datasets import SplitListError, listed_apart

    synth = _copy(tiny_synth, tmp_path)
    a, b = synth.videos("test")[:2]
    b.path.unlink()
    (os.symlink if link == "symlink" else os.link)(a.path, b.path)
    with pytest.raises(SplitListError, match=f"{a.video_id}.*{b.video_id}.*are one file"):
        listed_apart("synth", synth)
