"""Tables name a recipe changed by --recipe/--option (it enters the config hash, not the
method name, so a run with it replaced the default record under the plain name)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from report_fixtures import save_simulated_record

import fsarbench as fb
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.summary_tables import summary_tables
from fsarbench.experiments.units import unit_for, unit_recipe
from fsarbench.report.recipe_changes import recipe_changes, recipe_changes_text
from fsarbench.training.finetune_recipe import finetune_recipe
from fsarbench.training.recipe import frozen_recipe


def _unit_recipe(
    method: str, dataset: str, track: str, protocol: str, shot: int, over=None, share=False
):
    """The recipe a run trains ``method``'s ``shot``-shot unit with (as CellRunner does)."""
    cell = Cell(method, dataset, 5, shot, track=track, protocol=protocol)
    if track == "finetune":
        base = finetune_recipe(method, dataset, over, protocol=protocol)
        unit = unit_for(
            cell, recipe_way=base.recipe.way, recipe_shot=base.recipe.shot, share_shots=share
        )
        inner = unit_recipe(base.recipe, unit, (over or {}).get("recipe") or {})
        return dataclasses.replace(base, recipe=inner)
    base = frozen_recipe(method, (over or {}).get("recipe"), dataset=dataset)
    unit = unit_for(cell, recipe_way=base.way, recipe_shot=base.shot, share_shots=share)
    return unit_recipe(base, unit, (over or {}).get("recipe") or {})


def _record(tmp_path, method="protonet", dataset="ucf101", track="frozen", protocol="seed"):
    m = fb.make_manifest(np.repeat(np.arange(10), 6), way=5, shot=1, queries=1, episodes=20)
    rec = save_simulated_record(tmp_path, m, method, 0.5, np.random.default_rng(0))
    return dataclasses.replace(rec, dataset=dataset, track=track, protocol=protocol)


@pytest.mark.parametrize("track", ["frozen", "finetune"])
@pytest.mark.parametrize("method", fb.list_methods())
def test_a_default_run_names_no_change(method, track, tmp_path):
    record = _record(tmp_path, method, track=track, protocol="trx")
    for shot in (1, 5):
        recipe = _unit_recipe(method, "ucf101", track, "trx", shot).identity()
        assert recipe_changes(dataclasses.replace(record, recipe=recipe, shot=shot)) == {}


@pytest.mark.parametrize("track", ["frozen", "finetune"])
def test_a_model_trained_at_another_way_or_shot_is_named(track, tmp_path):
    """A 5-shot cell of a model shared across shots (trained 1-shot), or of one trained
    10-way (--recipe way=10), was ranked beside per-shot 5-way models with no note: the
    default was recomputed at the record's own training way and shot."""
    record = _record(tmp_path, "otam", track=track)
    inner = "recipe." if track == "finetune" else ""
    for cell_shot in (1, 5):
        shared = _unit_recipe("otam", "ucf101", track, "seed", cell_shot, share=True).identity()
        trained = shared[inner.rstrip(".")]["shot"] if inner else shared["shot"]
        changes = recipe_changes(dataclasses.replace(record, recipe=shared, shot=cell_shot))
        if trained == cell_shot:  # the shared model is the cell's own
            assert changes == {}
        else:
            assert changes[f"{inner}shot"] == trained and changes[f"{inner}val_shot"] == trained
    over = {"recipe": {"way": 10}}
    wide = _unit_recipe("otam", "ucf101", track, "seed", 5, over).identity()
    assert recipe_changes(dataclasses.replace(record, recipe=wide, shot=5)) == {f"{inner}way": 10}
    text = recipe_changes_text([dataclasses.replace(record, recipe=wide, shot=5)])
    assert f"(--recipe/--option): {inner}way=10 for " in text


def test_overrides_are_named_in_the_tables(tmp_path):
    record = _record(tmp_path, "otam", track="finetune")
    over = {"recipe": {"lr": 0.01}, "options": {"short": "repeat"}}
    changed = _unit_recipe("otam", "ucf101", "finetune", "seed", 1, over).identity()
    default = _unit_recipe("trx", "ucf101", "finetune", "seed", 1).identity()
    records = [
        dataclasses.replace(record, recipe=changed),
        dataclasses.replace(record, method="trx", recipe=default),
    ]
    assert recipe_changes(records[0]) == {"options.short": "repeat", "recipe.lr": 0.01}
    text = recipe_changes_text(records)
    assert text.endswith("options.short=repeat, recipe.lr=0.01 for otam.")
    (table,) = summary_tables(records).values()
    assert table.endswith(text)


def test_a_colour_jitter_set_or_unset_against_the_protocol_is_named(tmp_path):
    """``color_jitter`` is left out of recipe dicts while unset: set under ``seed``, or unset
    under ``hyrsm`` (whose default sets it), neither showed as a change."""
    record = _record(tmp_path, "hyrsm", track="finetune", protocol="seed")
    on = {"options": {"color_jitter": "query"}}
    seeded = _unit_recipe("hyrsm", "ucf101", "finetune", "seed", 1, on).identity()
    assert recipe_changes(dataclasses.replace(record, recipe=seeded)) == {
        "options.color_jitter": "query"
    }
    hyrsm = dataclasses.replace(record, protocol="hyrsm")
    off = {"options": {"color_jitter": False}}
    unset = _unit_recipe("hyrsm", "ucf101", "finetune", "hyrsm", 1, off).identity()
    assert "color_jitter" not in unset["options"]
    assert recipe_changes(dataclasses.replace(hyrsm, recipe=unset)) == {
        "options.color_jitter": False
    }
    default = _unit_recipe("hyrsm", "ucf101", "finetune", "hyrsm", 1).identity()
    assert recipe_changes(dataclasses.replace(hyrsm, recipe=default)) == {}


@pytest.mark.parametrize("dataset", ["synth", "ucf101", "kinetics100-hyrsm", "ssv2-small"])
def test_frame_features_apart_from_the_preset_are_named(dataset, tmp_path):
    """A run with --features (or the CLIP grid) into a folder replaced the preset's records
    under the plain method name, and no table said the features were other ones."""
    from fsarbench.experiments.features import feature_preset
    from fsarbench.report.recipe_changes import feature_changes

    preset = dataclasses.asdict(feature_preset(dataset))
    made = {k: v for k, v in preset.items() if k != "tiny"}  # as FrozenFeatureProvider records
    record = dataclasses.replace(_record(tmp_path, "otam", dataset=dataset), features=made)
    assert feature_changes(record) == {} and recipe_changes_text([record]) == ""
    clip = {**made, "backbone": "clip-vit-b16", "weights": "pretrained", "tiny": True}
    other = dataclasses.replace(record, method="trx", features=clip)
    assert feature_changes(other) == {
        "backbone": "clip-vit-b16",
        "weights": "pretrained",
        "tiny": True,
    }
    text = recipe_changes_text([record, other])
    assert text == (
        "Frame features changed from the dataset's preset (--features or the grid): "
        "backbone=clip-vit-b16, weights=pretrained, tiny=True for trx."
    )
    (table,) = summary_tables([record, other]).values()
    assert table.endswith(text)
    finetune = dataclasses.replace(other, track="finetune")
    assert feature_changes(finetune) == {}  # its backbone is a recipe option


def test_a_row_mixing_a_changed_cell_with_default_ones_names_the_cell(tmp_path):
    """'--recipe steps=50 --shots 1' into a default run's folder: the note said 'steps=50
    for protonet', as if the whole row, 3- and 5-shot too, had it."""
    base = _record(tmp_path, "protonet")
    one = _unit_recipe("protonet", "ucf101", "frozen", "seed", 1, {"recipe": {"steps": 50}})
    five = _unit_recipe("protonet", "ucf101", "frozen", "seed", 5)
    records = [
        dataclasses.replace(base, recipe=one.identity()),
        dataclasses.replace(base, shot=5, recipe=five.identity()),
    ]
    text = recipe_changes_text(records)
    assert text.endswith("steps=50 for protonet (5-way 1-shot).")
    assert recipe_changes_text(records[:1]).endswith("steps=50 for every method.")


def test_compare_names_frame_features_apart_from_the_preset(tmp_path, capsys):
    """'compare my-head trx' gave its verdict without a word that my-head ran on 96-px
    features (leaderboard and tables said so)."""
    from fsarbench.cli.main import main
    from fsarbench.experiments.features import feature_preset

    made = {k: v for k, v in dataclasses.asdict(feature_preset("synth")).items() if k != "tiny"}
    m = fb.make_manifest(np.repeat(np.arange(10), 6), way=5, shot=1, queries=1, episodes=50)
    rng = np.random.default_rng(1)
    for name, features in (("mine", {**made, "resolution": 96}), ("theirs", made)):
        save_simulated_record(tmp_path, m, name, 0.6, rng, dataset="synth", features=features)
    assert main(["compare", "mine", "theirs", "--runs", str(tmp_path), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "Note: Frame features changed from the dataset's preset" in out
    assert "resolution=96 for mine." in out


def test_tables_name_episode_and_training_seeds_other_than_the_defaults(tmp_path):
    """A table of episode seed 9 and training seed 7 read exactly like one of the defaults."""
    from report_fixtures import save_simulated_record

    m = fb.make_manifest(np.repeat(np.arange(10), 6), way=5, shot=1, episodes=20, seed=9)
    rng = np.random.default_rng(0)
    other = save_simulated_record(tmp_path / "a", m, "otam", 0.5, rng, train_seed=7)
    (table,) = summary_tables([other]).values()
    assert "test episodes drawn with episode seed 9." in table
    assert "models trained with training seed 7." in table
    plain = fb.make_manifest(np.repeat(np.arange(10), 6), way=5, shot=1, episodes=20)
    default = save_simulated_record(tmp_path / "b", plain, "otam", 0.5, rng, train_seed=0)
    (table,) = summary_tables([default]).values()
    assert "seed" not in table.split("\n\n", 1)[1].replace("seed protocol", "")
