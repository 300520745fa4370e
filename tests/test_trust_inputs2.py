"""Input files a user can hand-edit get a named error, not a number: manifests that repeat
episodes or were drawn from non-integer class ids, finetune options and grid files of the
wrong type, and a damaged exported backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.cli.main import main
from fsarbench.episodes import ManifestError, _equal_pairs

CLASSES = np.repeat(np.arange(10), 6)
TINY = np.repeat(np.arange(5), 2)  # 5 classes of 2 videos: 3,840 distinct 5-way 1-shot episodes


def _one_episode_repeated(times: int = 200) -> dict:
    data = fb.make_manifest(CLASSES, way=5, shot=1, queries=1, episodes=times).to_dict()
    for key in ("classes", "support", "query"):
        data[key] = [data[key][0]] * times
    return data


def test_a_manifest_of_one_episode_repeated_is_refused_on_load_and_by_eval(tmp_path, capsys):
    """200 copies of one episode printed '20.00 ± 0.00 (200 episodes ...)'."""
    with pytest.raises(
        ManifestError,
        match=r"episode 1 repeats episode 0: 199 of its 200 .*"
        r"\(19900 equal pairs, where its seeded sampler gives about 5\.18\)",
    ):
        fb.Manifest.from_dict(_one_episode_repeated())
    manifest, features = tmp_path / "m.json", tmp_path / "f.pt"
    manifest.write_text(json.dumps(_one_episode_repeated()))
    torch.save(torch.rand(len(CLASSES), 4, 8), features)
    argv = ["eval", "protonet", "--features", str(features), "--manifest", str(manifest)]
    assert main([*argv, "--out", str(tmp_path / "out")]) != 0
    captured = capsys.readouterr()
    assert "repeats episode 0" in captured.err and "± 0.00" not in captured.out
    assert not (tmp_path / "out" / "records").exists()


def test_a_concatenated_manifest_is_refused_before_evaluation():
    drawn = fb.make_manifest(CLASSES, way=5, shot=1, queries=1, episodes=30)
    twice = fb.Manifest(
        drawn.spec,
        np.concatenate([drawn.classes, drawn.classes]),
        np.concatenate([drawn.support, drawn.support]),
        np.concatenate([drawn.query, drawn.query]),
        drawn.num_videos,
    )
    method = fb.create_method("protonet", feature_dim=8, seq_len=4)
    with pytest.raises(ManifestError, match=r"episode 30 repeats episode 0: 30 of its 60"):
        fb.evaluate(method, torch.rand(len(CLASSES), 4, 8), twice, progress=False)


@pytest.mark.parametrize("kw", [{}, {"start": 500}])
def test_repeats_the_seeded_sampler_draws_over_a_small_pool_are_kept(tmp_path, kw):
    drawn = fb.make_manifest(TINY, way=5, shot=1, queries=1, episodes=1500, seed=3, **kw)
    later, _ = drawn.repeats()
    assert len(later) > 100  # a legitimate manifest with many repeats
    assert drawn.regenerates()
    loaded = fb.Manifest.load(drawn.save(tmp_path / "m.json"))
    assert loaded.hash == drawn.hash
    edited = drawn.to_dict()
    for key in ("classes", "support", "query"):
        edited[key][-1] = edited[key][int(later[0])]
    assert not fb.Manifest.from_dict(edited).regenerates()
    # one more repeat among hundreds is within chance (and weighs nothing); a manifest
    # appended to itself is not
    twice = drawn.to_dict()
    for key in ("classes", "support", "query"):
        twice[key] = twice[key] * 2
    with pytest.raises(ManifestError, match="does not regenerate from its spec"):
        fb.Manifest.from_dict(twice)


def test_a_single_hand_made_repeat_over_a_large_pool_is_refused():
    drawn = fb.make_manifest(np.repeat(np.arange(24), 100), way=5, shot=1, episodes=2000)
    assert len(drawn.repeats()[0]) == 0
    edited = drawn.to_dict()
    for key in ("classes", "support", "query"):
        edited[key][1500] = edited[key][7]
    with pytest.raises(ManifestError, match=r"episode 1500 repeats episode 7: 1 of its 2000"):
        fb.Manifest.from_dict(edited)


def test_a_drawn_manifest_whose_likely_episodes_repeat_more_than_on_average_is_kept():
    """Two classes with exactly shot + queries videos make a few episodes likely: the equal
    pairs then spread far wider than a Poisson count, and 1.5% of drawn manifests were
    refused, run's own before evaluation (seed 48: 114 pairs where 56 are expected). The
    sampler's own manifests are not checked, and a saved one is judged on the count's exact
    standard deviation."""
    classes = np.repeat(np.arange(10), [2, 2] + [3000] * 8)
    drawn = fb.make_manifest(classes, way=2, shot=1, queries=1, episodes=1350, seed=48)
    assert drawn.validate() is drawn
    loaded = fb.Manifest.from_dict(json.loads(json.dumps(drawn.to_dict())))
    assert _equal_pairs(loaded.repeats()[1]) == 114 and not loaded.drawn


def test_repeats_after_dropping_short_classes_still_regenerate():
    classes = np.concatenate([TINY, [7]])  # class 7 has one video: dropped
    drawn = fb.make_manifest(
        classes, way=5, shot=1, queries=1, episodes=800, min_videos_policy="drop"
    )
    assert drawn.meta["dropped_classes"] == [7] and len(drawn.repeats()[0]) > 0
    assert drawn.validate() is drawn


@pytest.mark.parametrize(
    ("bad", "named"),
    [(1.7, "video 3 has 1.7"), (float("nan"), "video 3 has nan"), ("2", "video 0 has '0'")],
)
def test_make_manifest_refuses_class_ids_that_are_not_whole_numbers(bad, named):
    """1.7 was truncated to class 1 without a word."""
    ids = [0, 0, 1, bad, 2, 2, 1, 0]
    with pytest.raises(ManifestError, match=f"whole-number class ids, but {named}"):
        fb.make_manifest(ids, way=2, shot=1, queries=1, episodes=3)
    with pytest.raises(ManifestError, match="video 0 has True"):
        fb.make_manifest([True, False, True, False], way=2, shot=1, queries=0, episodes=3)


def test_whole_class_ids_stored_as_floats_draw_the_integer_manifest():
    as_float = fb.make_manifest(CLASSES.astype(float), way=5, shot=1, queries=1, episodes=20)
    assert as_float.hash == fb.make_manifest(CLASSES, way=5, shot=1, queries=1, episodes=20).hash


def test_a_crop_option_that_does_not_fit_names_the_value_given(tmp_path, capsys):
    """--option crop=0 on synth (resize 64) said 'crop 224 is larger ...': not what was given."""
    from fsarbench.config import ConfigError
    from fsarbench.training.finetune_recipe import finetune_recipe

    with pytest.raises(ConfigError) as err:
        finetune_recipe("protonet", "synth", {"options": {"crop": 0}})
    text = str(err.value)
    assert text.startswith("options.crop = 0 (0 keeps the crop of transform 'seed-train', 224)")
    assert "options.resize = 64; set crop to at most 64 (--option crop=N)" in text
    argv = ["train", "protonet", "--dataset", "synth", "--track", "finetune", "--option", "crop=0"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]) != 0
    assert "options.crop = 0 (0 keeps" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("datasets: synth\n    methods: [protonet]", r"grids.g.datasets: 'synth' is not a list; "),
        ("datasets: [synth]\n    methods: otam", r"grids.g.methods: 'otam' is not a list; "),
        ("datasets: [synth]\n    methods: [otam]\n    shots: 1", r"shots: expected a list"),
        ("datasets: [synth]\n    methods: [otam]\n    ways: 5", r"ways: expected a list"),
    ],
)
def test_one_value_where_a_grid_wants_a_list_says_how_to_write_it(entry, message):
    """'datasets: synth' said "unknown name 'synth' ... Known: available"."""
    from fsarbench.config import ConfigError
    from fsarbench.experiments.grids import load_grid_file

    with pytest.raises(ConfigError, match=message + r".*write \[(synth|otam|1|5)\]"):
        load_grid_file(f"grids:\n  g:\n    {entry}\n", "g.yaml")
    keywords = "grids:\n  g:\n    datasets: available\n    methods: registered\n"
    assert load_grid_file(keywords, "g.yaml").grids["g"].datasets == "available"


def _finetune_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "backbone.trunk.conv.weight": torch.randn(8, 3, 3, 3),
        "backbone.trunk.fc.bias": torch.randn(8),
        "inner.proj": torch.randn(4),
    }


def _trunk_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("backbone.trunk."): v for k, v in state.items() if "trunk" in k}


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "unreadable"),
        (lambda p: p.write_bytes(b""), "unreadable: EOFError"),
        (lambda p: torch.save({"conv.weight": torch.zeros(8, 3, 3, 3)}, p), "its tensors have"),
        (lambda p: torch.save([1, 2], p), "holds a list, not a state dict"),
    ],
)
def test_a_damaged_exported_backbone_is_written_again(tmp_path, caplog, damage, cause):
    """A truncated backbone-<digest>.pt was kept for ever: every later extraction failed."""
    from fsarbench.training.export import export_backbone

    state = _finetune_state()
    path = export_backbone(state, tmp_path)
    damage(path)
    with caplog.at_level("WARNING", logger="fsarbench.training.export"):
        assert export_backbone(state, tmp_path) == path
    assert f"{path} is damaged ({cause}" in caplog.text
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert saved.keys() == _trunk_of(state).keys()
    assert all(torch.equal(saved[k], v) for k, v in _trunk_of(state).items())
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_a_sound_exported_backbone_is_kept_as_it_is(tmp_path, caplog, monkeypatch):
    from fsarbench.training import export

    state = _finetune_state()
    path = export.export_backbone(state, tmp_path)
    before = path.stat()

    def no_write(*args, **kwargs):
        raise AssertionError("a sound export was written again")

    monkeypatch.setattr(export, "atomic_write_bytes", no_write)
    with caplog.at_level("WARNING", logger="fsarbench.training.export"):
        assert export.export_backbone(state, tmp_path) == path
    assert path.stat().st_mtime_ns == before.st_mtime_ns and not caplog.text
