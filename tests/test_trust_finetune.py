"""The finetune track's probe of the videos, and its training episodes: a video that cannot
be decoded, or a class left too small, is named before the first step (not mid-run)."""

from __future__ import annotations

import shutil

import pytest

from fsarbench.data.datasets import get_dataset
from fsarbench.data.decode import VideoDecodeError, count_frames, read_clip, read_frames
from fsarbench.data.health import check_split
from fsarbench.data.synth import SynthConfig
from fsarbench.episodes import ManifestError
from fsarbench.training.clip_data import usable_split
from fsarbench.training.finetune_recipe import FinetuneOptions

SMALL = SynthConfig(videos_per_class=2, size=32, min_frames=8, max_frames=10)

pytestmark = pytest.mark.video


@pytest.fixture
def synth(tmp_path_factory, tmp_path):
    """A fresh copy of a small synth (files are edited by the tests)."""
    base = tmp_path_factory.getbasetemp() / "finetune-synth"
    if not base.exists():
        get_dataset("synth", root=base, config=SMALL).videos("train")
    shutil.copytree(base, tmp_path / "synth")
    return get_dataset("synth", root=tmp_path / "synth", config=SMALL)


def _header_only(path) -> None:
    """Truncate ``path`` until its header still counts frames but no frame decodes."""
    data = path.read_bytes()
    for keep in range(len(data) * 95 // 100, 0, -max(1, len(data) // 200)):
        path.write_bytes(data[:keep])
        try:
            if count_frames(path) > 0:
                read_frames(path, [0])
        except VideoDecodeError:
            try:
                if count_frames(path) > 0:
                    return
            except VideoDecodeError:
                continue
    pytest.skip("could not make a header-only file from this video")


def test_the_probe_decodes_a_frame_not_only_the_header(synth):
    video = synth.videos("train")[0]
    _header_only(video.path)
    health = check_split([video], "train", frames=1)
    assert video.video_id in health[0].unreadable


def test_a_video_without_decodable_frames_is_left_out_and_recorded(synth, monkeypatch):
    """A file whose count is 0 (PyAV's count of some truncated files) was flagged "too short"
    by the probe but kept, and failed the run at its first episode."""
    from fsarbench.data import health

    records = synth.videos("train")
    real = health.read_clip

    def zero_count(path, choose):  # the container counts no frame for records[0]
        return choose(0) if path == records[0].path else real(path, choose)

    monkeypatch.setattr(health, "read_clip", zero_count)
    split, skipped = usable_split(
        records, "train", dataset=synth.variant, flip_ok=False, way=5, shot=1, queries=1
    )
    assert records[0].video_id not in {r.video_id for r in split.records}
    assert f"train/{records[0].video_id}: no decodable frame" in skipped


def test_a_class_too_small_for_training_episodes_is_named_before_the_first_step(synth):
    from fsarbench.training.clip_data import TrainEpisodes
    from fsarbench.training.finetune import finetune_recipe

    records = synth.videos("train")
    records[0].path.unlink()  # its class keeps one video: 1-shot with 1 query needs 2
    split, _ = usable_split(
        records, "train", dataset=synth.variant, flip_ok=False, way=5, shot=1, queries=1
    )
    recipe = finetune_recipe(
        "protonet",
        "synth",
        {"recipe": {"way": 5, "shot": 1, "queries": 1}, "options": {"frames": 2}},
    )
    with pytest.raises(ManifestError, match=f"class .*{records[0].class_name}|1 videos"):
        TrainEpisodes(split, recipe, 0, "main", 0, 4)


def _finetune_track(synth, tmp_path):
    """A finetune track over ``synth`` with its cache (and probe cache) under ``tmp_path``."""
    from fsarbench.experiments import tracks

    return tracks.FinetuneTrack(
        root=None,
        cache_root=tmp_path / "cache",
        recipe_overrides={},
        option_overrides={},
        device="cpu",
        progress=False,
        open_dataset=lambda name: synth,
    )


def test_test_features_must_be_the_probed_videos(synth, tmp_path, monkeypatch):
    """A test video missing at the probe (episodes drawn without it) and back by the time the
    trained backbone extracts the test split shifted every later video's features."""
    from fsarbench.experiments import tracks

    track = _finetune_track(synth, tmp_path)
    video = synth.videos("test")[1]
    saved = video.path.read_bytes()
    video.path.unlink()
    options = FinetuneOptions()
    assert f"test/{video.video_id}: missing" in track.clip_data("synth", options).skipped
    video.path.write_bytes(saved)  # restored while the model trains
    monkeypatch.setattr(tracks, "extract_finetune_test", lambda *a, **k: (object(), {}))
    message = rf"read 1 video\(s\) the probe left out \(\[.{video.video_id}.\]\)"
    with pytest.raises(RuntimeError, match=message):
        track.test_features("synth", {}, options)
    missing = {video.video_id: "missing"}
    monkeypatch.setattr(tracks, "extract_finetune_test", lambda *a, **k: ("feats", missing))
    assert track.test_features("synth", {}, options) == "feats"  # the same videos: served


def test_a_test_video_damaged_past_the_probe_is_left_out_by_the_next_run(
    synth, tmp_path, monkeypatch
):
    """A file damaged in its middle passes the probe (first and last frames); the trained
    backbone's extraction then failed on it in every re-run, --bad-videos skip or not."""
    from fsarbench.experiments import tracks

    video = synth.videos("test")[2]
    options = FinetuneOptions()
    first = _finetune_track(synth, tmp_path)
    assert not any(video.video_id in s for s in first.clip_data("synth", options).skipped)
    bad = {video.video_id: "frames 0..3 of 9: broken"}
    monkeypatch.setattr(tracks, "extract_finetune_test", lambda *a, **k: ("feats", bad))
    with pytest.raises(RuntimeError, match="now recorded as unreadable: re-run"):
        first.test_features("synth", {}, options)
    again = _finetune_track(synth, tmp_path)  # the next run, in a new process
    skipped = again.clip_data("synth", options).skipped
    cause = "unreadable in the test extraction: frames 0..3 of 9: broken"
    assert f"test/{video.video_id}: {cause}" in skipped  # the extraction's cause, kept
    assert again.test_features("synth", {}, options) == "feats"


def test_an_impossible_crop_is_refused_before_any_work():
    from fsarbench.config import ConfigError
    from fsarbench.training.finetune_recipe import FinetuneOptions

    with pytest.raises(
        ConfigError,
        match=r"options.crop = 24 does not fit the resized frame "
        r"of transform 'seed-train': options.resize = 16; set crop to at most 16",
    ):
        FinetuneOptions(resize=16, crop=24)
    with pytest.raises(ConfigError, match="unknown transform preset 'bogus'"):
        FinetuneOptions(train_transform="bogus")
    assert FinetuneOptions(resize=32, crop=16).crop == 16


def test_a_warm_up_longer_than_the_stage_is_said_aloud():
    """A smoke test's `--recipe steps=2` on a recipe warmed up over 250 steps is allowed (the
    recipe is in the record) but never silent."""
    from fsarbench.training.loop import lr_factor
    from fsarbench.training.recipe import Recipe

    with pytest.warns(UserWarning, match=r"warmup_steps = 1000 is not below the stage's 3"):
        factor = lr_factor(Recipe(steps=3, warmup_steps=1000), 3)
    assert factor(2) == pytest.approx(3 / 1000)


def _cut_faststart_mp4(path, *, at_packet_boundary: bool, frames: int = 40) -> None:
    """An mp4 with its index up front (``movflags=faststart``, as many downloads are) cut
    after about 60% of its frames: the header still counts every frame and the first ones
    decode. The cut lands inside a packet or exactly where one ends; which of the two a
    fixed fraction of the bytes gives depends on the encoder's output, which differs
    between CPUs (CI met the packet boundary)."""
    import av
    import numpy as np

    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": "5"}
        rng = np.random.default_rng(0)
        for _ in range(frames):
            pixels = rng.integers(0, 255, (32, 32, 3), np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode())
    with av.open(str(path)) as video:
        packets = [(p.pos, p.size) for p in video.demux(video=0) if p.size]
    start, size = packets[frames * 6 // 10]
    path.write_bytes(path.read_bytes()[: start if at_packet_boundary else start + size // 2])


@pytest.mark.parametrize("at_packet_boundary", [False, True], ids=["mid-packet", "boundary"])
def test_the_probe_finds_a_file_cut_short_after_its_first_frames(tmp_path, at_packet_boundary):
    """Header and first frame intact, the rest cut off: the probe passed it and training
    failed at the first episode that sampled a late frame (again on every resume). Cut at
    a packet boundary, decord opened it as a 24-frame video and the probe passed it."""
    from fsarbench.data.datasets import VideoRecord

    path = tmp_path / "cut.mp4"
    _cut_faststart_mp4(path, at_packet_boundary=at_packet_boundary)
    assert read_frames(path, [0], backend="pyav").shape[0] == 1  # its first frames decode
    # no clip of it is read, early frames or not (a clip before the cut was read by PyAV
    # after decord had refused the file, by the header's count)
    with pytest.raises(VideoDecodeError, match="truncated"):
        read_clip(path, lambda n: list(range(8)))
    video = VideoRecord(video_id="cut", class_name="c", class_index=0, path=path)
    health = check_split([video], "train", frames=1)
    assert "cut" in health[0].unreadable


def test_decord_refuses_an_mp4_cut_at_a_packet_boundary(tmp_path):
    """decord counts the packets it demuxes: the header's 40 frames are the reference."""
    pytest.importorskip("decord")
    path = tmp_path / "cut.mp4"
    _cut_faststart_mp4(path, at_packet_boundary=True)
    for read in (
        lambda: count_frames(path, backend="decord"),
        lambda: read_frames(path, [0], backend="decord"),
        lambda: read_clip(path, lambda n: [0, n - 1], backend="decord"),
    ):
        with pytest.raises(VideoDecodeError, match=r"truncated: its 24 frames end at 0\.96 s"):
            read()


def test_probe_results_are_reused_only_for_unchanged_files(synth, tmp_path, monkeypatch):
    import json
    import os

    from fsarbench.data import health
    from fsarbench.data.probe_cache import ProbeCache

    records = synth.videos("train")[:3]
    probed = []
    real = health._probe
    monkeypatch.setattr(health, "_probe", lambda r: probed.append(r.video_id) or real(r))
    store = tmp_path / "probes.json"
    first = check_split(records, "train", frames=1, probes=ProbeCache(store))
    assert len(probed) == 3
    again = check_split(records, "train", frames=1, probes=ProbeCache(store))
    assert len(probed) == 3 and again == first  # nothing probed twice
    stat = records[1].path.stat()
    os.utime(records[1].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # edited
    check_split(records, "train", frames=1, probes=ProbeCache(store))
    assert probed[3:] == [records[1].video_id]
    data = json.loads(store.read_text())
    data["versions"]["probe"] = 1  # made by the first-frame-only probe
    store.write_text(json.dumps(data))
    check_split(records, "train", frames=1, probes=ProbeCache(store))
    assert len(probed) == 7
    store.write_text("{not json")
    assert check_split(records, "train", frames=1, probes=ProbeCache(store)) == first
    assert len(probed) == 10


def test_the_probe_cache_works_without_decord(tmp_path, monkeypatch):
    """decord is not installed off x86-64 Linux (the probe falls back to PyAV): the cache
    imported it to name the decoder versions and failed there."""
    import importlib.metadata
    import sys

    from fsarbench.data.probe_cache import ProbeCache

    real = importlib.metadata.version

    def without_decord(name):
        if name == "decord":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` fails
    monkeypatch.setattr(importlib.metadata, "version", without_decord)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    first = ProbeCache(tmp_path / "p.json")
    first.store(video, 12)
    first.save()
    again = ProbeCache(tmp_path / "p.json")
    assert again.lookup(video) == 12
    assert '"decord": "absent"' in (tmp_path / "p.json").read_text()


@pytest.mark.parametrize("protocol", ["seed", "trx"])
def test_a_video_shorter_than_the_clip_is_dropped_and_recorded(synth, monkeypatch, protocol):
    """The finetune track stretched videos shorter than T by repeating frames under every
    protocol (TRX drops them, as the frozen track does), and recorded nothing."""
    from fsarbench.data import health
    from fsarbench.experiments import tracks
    from fsarbench.experiments.cells import Cell

    video = synth.videos("test")[2]
    real = health.read_clip

    def five_frames(path, choose):  # the container counts 5 frames for this video
        return real(path, lambda n: choose(5)) if path == video.path else real(path, choose)

    monkeypatch.setattr(health, "read_clip", five_frames)

    def track(**options):
        return tracks.FinetuneTrack(
            root=None,
            cache_root=None,
            recipe_overrides={},
            option_overrides=options,
            device="cpu",
            progress=False,
            open_dataset=lambda name: synth,
        )

    cell = Cell("protonet", "synth", 5, 1, track="finetune", protocol=protocol)
    dropped = track().data(cell)
    assert f"test/{video.video_id}: too short: 5 frames, clips need 8" in dropped.skipped
    assert len(dropped.test_classes) == len(synth.videos("test")) - 1
    assert track().recipe(cell).identity()["options"]["short"] == "drop"
    kept = track(short="repeat").data(cell)  # the named option: stretched, and recorded
    assert not kept.skipped and len(kept.test_classes) == len(synth.videos("test"))
    assert track(short="repeat").recipe(cell).identity()["options"]["short"] == "repeat"


def test_an_adapter_on_the_finetune_track_is_refused():
    """``--recipe adapter=linear_ln`` entered the recipe identity (a new row of results)
    but no adapter was built."""
    from fsarbench.config import ConfigError
    from fsarbench.training.finetune_recipe import finetune_recipe

    with pytest.raises(ConfigError, match="builds no frame adapter"):
        finetune_recipe("otam", "synth", {"recipe": {"adapter": "linear_ln"}})
    assert finetune_recipe("otam", "synth").recipe.adapter == "none"


def test_a_checkpoint_made_before_the_short_option_keeps_its_policy():
    """Checkpoints made before ``short`` existed were trained with short videos stretched;
    rebuilt with today's default, ``eval --checkpoint`` tested them on another video set."""
    from fsarbench.config import config_to_dict
    from fsarbench.training.finetune_recipe import checkpoint_options, finetune_recipe

    stored = config_to_dict(finetune_recipe("otam", "ssv2-small").options)
    old = {k: v for k, v in stored.items() if k != "short"}
    assert checkpoint_options(old, where="old best.pt").short == "repeat"
    assert checkpoint_options(stored, where="best.pt").short == "drop"


def _damaged_in_the_middle(folder, frames: int = 40) -> None:
    """A video stored as JPEG frames (the TRX layout) whose middle frame is garbage: its
    first and last frames decode, the one in between does not (deterministically, unlike a
    damaged mp4, whose decoding past the damage varies with decord's decoder threads)."""
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(frames):
        pixels = rng.integers(0, 255, (32, 32, 3), np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i + 1:05d}.jpg")
    (folder / f"img_{frames // 2:05d}.jpg").write_bytes(b"\xff\xd8 not a jpeg")


def test_a_full_data_check_finds_a_file_damaged_in_its_middle(tmp_path, capsys):
    """The probe decodes the first and last frames only: `data check` said OK for a file
    whose middle frames fail, and training failed at the first episode sampling them."""
    from fsarbench.data.datasets import VideoRecord

    path = tmp_path / "middle"
    _damaged_in_the_middle(path)
    record = VideoRecord("middle", "c", 0, path)
    with pytest.raises(VideoDecodeError):
        read_frames(path, range(count_frames(path)))
    assert not check_split([record], "train", frames=8)[0].unreadable  # the quick probe
    cause = check_split([record], "train", frames=8, full=True)[0].unreadable["middle"]
    assert cause.startswith("frames ") and " of 40: " in cause


def test_data_check_full_and_no_probe_exclude_each_other(capsys):
    from fsarbench.cli.main import main

    with pytest.raises(SystemExit):
        main(["data", "check", "synth", "--full", "--no-probe"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_failed_test_videos_keep_the_cause_the_extraction_recorded():
    """train --test-episodes and eval of a finetune checkpoint recorded every failed test
    video as 'unreadable or too short', a missing file too; run recorded the real causes."""
    from types import SimpleNamespace

    from fsarbench.experiments.features import failure_causes

    cache = SimpleNamespace(
        video_ids=["a", "b", "c"],
        errors={
            "0/0": "FileNotFoundError: a.mp4 is missing",
            "2/1": "decord could not\nread frames",
        },
    )
    assert failure_causes(cache, [0, 2]) == {
        "a": "FileNotFoundError: a.mp4 is missing",
        "c": "decord could not read frames",  # a later view's error counts too
    }
    assert failure_causes(cache, [1]) == {"b": "unreadable"}


def test_train_and_eval_name_a_finetune_record_alike():
    """eval of train's checkpoint wrote a second record of the same model: its recipe kept
    `workers` (speed only) and its features lacked the backbone, so the config hash, and the
    record id, differed; summary.csv and the leaderboard showed the model twice."""
    import dataclasses

    from fsarbench.training.finetune_recipe import (
        checkpoint_options,
        finetune_recipe,
        options_to_dict,
        record_identity,
    )

    recipe = finetune_recipe("protonet", "synth")
    recipe = dataclasses.replace(recipe, options=dataclasses.replace(recipe.options, workers=3))
    stored = recipe.to_dict()  # what a finetune checkpoint holds
    resolved = {**stored, "options": options_to_dict(checkpoint_options(stored["options"], "t"))}
    by_train = record_identity(recipe.to_dict(), {"test": "abc"})
    by_eval = record_identity(resolved, {"test": "abc"})
    assert by_train == by_eval
    assert by_train[0] == recipe.identity() and "workers" not in by_train[0]["options"]
    assert by_train[1] == {
        "backbone": recipe.options.backbone,
        "weights": recipe.options.weights,
        "split_md5": {"test": "abc"},
    }


def test_train_refuses_a_train_class_without_a_usable_video(synth, tmp_path, monkeypatch, capsys):
    """`train --track finetune` trained on the other classes and printed a test number under
    the dataset's name, where `run` refuses the same data (MissingClassesError)."""
    from fsarbench.cli import train_cmd
    from fsarbench.cli.main import main

    monkeypatch.setattr(train_cmd, "_dataset_main_first", lambda name, root: synth)
    first = synth.videos("train")[0].class_name
    for video in synth.videos("train"):
        if video.class_name == first:
            video.path.unlink()
    argv = ["train", "protonet", "--dataset", "synth", "--track", "finetune", "--no-progress"]
    argv += ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]
    argv += ["--option", "weights=none", "frames=2", "--recipe", "steps=1", "val_episodes=0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "synth train split: 1 of" in err and first in err
    assert not (tmp_path / "out" / "best.pt").exists()


def test_train_validates_at_the_val_splits_classes_as_run_does(synth, tmp_path):
    """`train --recipe way=10` was refused over an 8-class val split that `run` (and the
    loop's val_way_shot) validates at 8-way."""
    from fsarbench.cli import train_cmd
    from fsarbench.training.finetune import finetune_recipe

    classes = len(synth.class_names("val"))
    recipe = finetune_recipe(
        "protonet", "synth", {"recipe": {"way": classes + 2}, "options": {"frames": 2}}
    )
    kept, _ = train_cmd._usable(synth, "val", recipe, "skip", None, cache=str(tmp_path))
    assert kept.num_classes == classes


def test_train_workers_reaches_the_finetune_track(monkeypatch, tmp_path):
    """`train --track finetune --workers 0` still started the recipe's decode workers."""
    from fsarbench.cli import train_cmd
    from fsarbench.cli.main import main

    seen = []
    monkeypatch.setattr(train_cmd, "_run_finetune", lambda *a: seen.append(a[-1]) or 0)
    base = ["train", "protonet", "--dataset", "synth", "--track", "finetune"]
    base += ["--out", str(tmp_path / "out")]
    assert main([*base, "--workers", "0"]) == 0
    assert main([*base, "--workers", "0", "--option", "workers=3"]) == 0
    assert seen == [{"workers": 0}, {"workers": 3}]  # --option workers=N wins, as in run


def test_train_refuses_episodes_per_step_not_split_over_the_ranks_before_the_probe(
    monkeypatch, tmp_path, capsys
):
    """Under torchrun, an episodes_per_step the ranks could not share was refused only after
    every video had been probed."""
    from fsarbench.cli import train_cmd
    from fsarbench.cli.main import main
    from fsarbench.training import finetune as ft

    monkeypatch.setattr(ft, "world_size", lambda: 2)

    def probed(*a, **k):
        raise AssertionError("videos were probed before the refusal")

    monkeypatch.setattr(train_cmd, "_dataset_main_first", probed)
    argv = ["train", "protonet", "--dataset", "synth", "--track", "finetune", "--no-progress"]
    argv += ["--out", str(tmp_path / "out"), "--recipe", "episodes_per_step=3"]
    assert main(argv) == 2
    assert "episodes_per_step=3 must be a multiple of the 2 ranks" in capsys.readouterr().err
