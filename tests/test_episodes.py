from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import fsarbench as fb

POOL = np.repeat(np.arange(12), 9)  # 12 classes x 9 videos, class-major


def manifest(**kw):
    args = dict(way=5, shot=2, queries=3, episodes=200, seed=3, dataset="synth", split="test")
    args.update(kw)
    return fb.make_manifest(POOL, **args)


def test_episodes_are_valid():
    m = manifest()
    assert m.support.shape == (200, 10) and m.query.shape == (200, 15)
    for e in range(m.episodes):
        assert len(set(m.classes[e])) == 5
        videos = np.concatenate([m.support[e], m.query[e]])
        assert len(set(videos)) == len(videos)
        assert (POOL[m.support[e]] == m.classes[e][m.support_labels[e]]).all()
        assert (POOL[m.query[e]] == m.classes[e][m.query_labels[e]]).all()


def test_same_arguments_same_bytes_and_seeds_differ():
    assert manifest().to_bytes() == manifest().to_bytes()
    assert manifest().hash != manifest(seed=4).hash
    assert manifest().hash != manifest(split="val").hash
    assert not np.array_equal(manifest().classes, manifest(seed=4).classes)


def test_episode_is_a_function_of_its_index():
    full = manifest(episodes=50)
    tail = manifest(episodes=20, start=30)
    np.testing.assert_array_equal(full.support[30:], tail.support)
    np.testing.assert_array_equal(full.query[30:], tail.query)


def test_worker_count_does_not_change_manifest():
    assert manifest(num_workers=2).to_bytes() == manifest(num_workers=0).to_bytes()


def test_identical_across_processes(tmp_path):
    code = (
        "import numpy as np, fsarbench as fb, sys;"
        "m = fb.make_manifest(np.repeat(np.arange(12), 9), way=5, shot=2, queries=3, episodes=200,"
        " seed=3, dataset='synth', split='test'); sys.stdout.write(m.hash)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == manifest().hash


def test_save_load_roundtrip(tmp_path):
    m = manifest()
    path = m.save(tmp_path / "m.json")
    loaded = fb.Manifest.load(path)
    assert loaded.to_bytes() == m.to_bytes()
    assert loaded.hash == m.hash
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(fb.ManifestError, match="not a valid fsarbench manifest"):
        fb.Manifest.load(tmp_path / "bad.json")


def test_errors_name_class_and_counts():
    pool = np.array([0] * 6 + [1] * 6 + [2] * 2)
    with pytest.raises(fb.ManifestError, match=r"class 2 \('pour'\) has 2 videos.*need 4"):
        fb.make_manifest(pool, way=3, shot=3, queries=1, episodes=3, class_names=["a", "b", "pour"])
    with pytest.raises(fb.ManifestError, match="5-way episodes need 5 classes.*only 3"):
        fb.make_manifest(pool, way=5, shot=1, episodes=3)
    with pytest.raises(fb.ManifestError, match="way and shot must be >= 1"):
        fb.make_manifest(pool, way=2, shot=0, episodes=3)


def test_drop_policy_records_dropped_classes():
    pool = np.array([0] * 6 + [1] * 6 + [2] * 2)
    m = fb.make_manifest(pool, way=2, shot=3, queries=1, episodes=5, min_videos_policy="drop")
    assert m.meta["dropped_classes"] == [2]
    assert 2 not in set(m.classes.ravel())


def test_select_shard():
    m = manifest()
    shard = m.select(np.arange(1, 200, 2))
    np.testing.assert_array_equal(shard.support, m.support[1::2])


@pytest.mark.parametrize("way, shot, queries", [(5, 1, 1), (5, 2, 3), (12, 4, 5)])
def test_drawer_draws_make_episodes_episodes_in_any_order(way, shot, queries):
    """The reused generator is reset to a fresh one's state: every episode as make_episode
    draws it, whatever was drawn before (backwards, repeated, beyond 2**64)."""
    from fsarbench.episodes import EpisodeDrawer, class_pools, make_episode

    spec = fb.EpisodeSpec(way, shot, queries, 3, "synth", "test")
    pools = class_pools(POOL)
    classes = np.array(sorted(pools))
    draw = EpisodeDrawer(pools, classes, spec)
    for i in [7, 3, 3, 0, 2**64 + 5, 1, 999_999, 2**128 - 1]:
        want = make_episode(pools, classes, spec, i)
        got = draw(i)
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True)), i
    with pytest.raises(ValueError, match="outside"):
        draw(2**128)


def _manifest_dict(**changes) -> dict:
    classes = np.repeat(np.arange(6), 4)
    ids = [f"v{i}" for i in range(len(classes))]
    data = fb.make_manifest(
        classes, way=3, shot=1, queries=1, episodes=20, seed=0, video_ids=ids
    ).to_dict()
    for key, value in changes.items():
        if key.startswith("spec_"):
            data["spec"][key[5:]] = value
        else:
            data[key] = value
    return data


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"spec_shot": True}, r"spec.shot is True: an integer >= 1"),
        ({"spec_queries": 1.0}, r"spec.queries is 1.0: an integer >= 0"),
        ({"spec_seed": "0"}, r"spec.seed is '0': an integer >= 0"),
        ({"spec_seed": -3}, r"spec.seed is -3: an integer >= 0"),
        ({"num_videos": 24.7}, r"num_videos is 24.7: an integer >= 1"),
        ({"spec_dataset": 5}, r"spec.dataset is 5, not text"),
        ({"meta": [1, 2]}, r"meta is list, not an object"),  # a traceback in regenerates
        ({"meta": {"first_episode": "abc"}}, r"meta.first_episode is 'abc': an integer >= 0"),
        ({"meta": {"first_episode": -1}}, r"meta.first_episode is -1: an integer >= 0"),
    ],
)
def test_a_manifest_file_s_field_types_are_checked(changes, message):
    """'shot': true was evaluated as "5-way True-shot" and written in a record its readers
    refused; a fractional num_videos was truncated."""
    with pytest.raises(fb.ManifestError, match=message):
        fb.Manifest.from_dict(_manifest_dict(**changes))


def test_negative_class_ids_are_refused():
    """One class id of -1 filed its accuracy under the last class's name (13 of 14 classes
    listed); all-negative ids crashed with an IndexError."""
    data = _manifest_dict()
    data["classes"][2][1] = -1
    with pytest.raises(fb.ManifestError, match="episode 2 names class -1: class ids are 0 or"):
        fb.Manifest.from_dict(data)


def test_a_pool_naming_one_video_twice_is_refused():
    """Two overlapping extraction shards held every video twice: a query was scored against
    itself as a support (10-shot 80.40 -> 83.00, no word)."""
    data = _manifest_dict()
    data["video_ids"][5] = data["video_ids"][1]
    with pytest.raises(fb.ManifestError, match="video_ids name 'v1' .* more than once"):
        fb.Manifest.from_dict(data)


def test_make_manifest_takes_numpy_integers_and_refuses_what_its_loader_refuses(tmp_path):
    """A negative seed drew and evaluated, then its saved manifest could not be read back; a
    numpy integer way (from a numpy grid) crashed in json.dumps with a bare TypeError."""
    vc = np.repeat(np.arange(6), 5)
    ManifestError, make_manifest, Manifest = fb.ManifestError, fb.make_manifest, fb.Manifest
    with pytest.raises(ManifestError, match=r"spec\.seed is -1: an integer >= 0"):
        make_manifest(vc, way=5, shot=1, queries=1, episodes=10, seed=-1)
    with pytest.raises(ManifestError, match=r"spec\.shot is 1\.0"):
        make_manifest(vc, way=5, shot=1.0, queries=1, episodes=10)
    plain = make_manifest(vc, way=5, shot=1, queries=1, episodes=10, seed=3)
    numpy = make_manifest(vc, way=np.int64(5), shot=np.int32(1), queries=1, episodes=10,
                          seed=np.int64(3))  # fmt: skip
    numpy.save(tmp_path / "m.json")
    assert Manifest.load(tmp_path / "m.json").hash == plain.hash
