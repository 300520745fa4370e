"""The finetune track meets videos damaged past the frames the probe decodes: every damaged
video of the splits is found and recorded at once (not one per re-run, each retraining); a
test video found damaged after training keeps the trained model; a resumed run does not mix
two versions of the training files; ``train`` honours ``--bad-videos`` on the test split and
clears checkpoint writes a kill cut short."""

from __future__ import annotations

import argparse
import os
import shutil

import numpy as np
import pytest
from finetune_fixtures import TINY_SYNTH, tiny_finetune_track, tiny_recipe
from PIL import Image

from fsarbench.data.datasets import get_dataset
from fsarbench.data.decode import VideoDecodeError
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.runner import CellRunner, FinetuneTrack, RunOptions
from fsarbench.training import damaged as damaged_mod

pytestmark = pytest.mark.video

RUN = {"way": 5, "val_every": 1, "val_episodes": 6, "queries": 1}
CELL = Cell("protonet", "synth", 5, 1, track="finetune", label="protonet")


@pytest.fixture
def synth(tmp_path_factory, tmp_path):
    """A fresh copy of the tiny synth (the tests damage its files)."""
    base = tmp_path_factory.getbasetemp() / "damaged-synth"
    if not base.exists():
        get_dataset("synth", root=base, config=TINY_SYNTH).videos("train")
    shutil.copytree(base, tmp_path / "synth")
    return get_dataset("synth", root=tmp_path / "synth", config=TINY_SYNTH)


def _track(synth, cache) -> FinetuneTrack:
    return tiny_finetune_track(synth, cache, recipe=RUN)


def _damage_in_the_middle(record, frames: int = 12) -> None:
    """Replace ``record``'s video by a frame folder whose first and last frames decode and
    whose middle frame does not: it passes the probe and fails when a clip samples it."""
    record.path.unlink()
    record.path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(frames):
        pixels = rng.integers(0, 255, (32, 32, 3), np.uint8)
        Image.fromarray(pixels).save(record.path / f"img_{i + 1:05d}.jpg")
    (record.path / f"img_{frames // 2:05d}.jpg").write_bytes(b"\xff\xd8 not a jpeg")


def test_every_damaged_video_is_found_and_recorded_at_the_first_failure(
    synth, tmp_path, monkeypatch
):
    """One damaged video stopped each run, which recorded it alone: 40 damaged videos took 40
    runs, each training the model again from its first step."""
    from fsarbench.training import finetune as finetune_mod

    damaged = [synth.videos("train")[0], synth.videos("train")[5], synth.videos("val")[1]]
    for record in damaged:
        _damage_in_the_middle(record)
    cache = tmp_path / "cache"
    first = _track(synth, cache)
    assert not first.clip_data("synth", first.recipe(CELL).options).skipped  # the probe passes

    def meets_the_first(*args, **kwargs):  # the loader met one of them
        raise VideoDecodeError(damaged[2].path, "unreadable JPEG frame img_00006.jpg")

    monkeypatch.setattr(finetune_mod, "finetune", meets_the_first)
    runner = CellRunner({"finetune": first}, RunOptions(tmp_path / "a", episodes=40))
    with pytest.raises(RuntimeError) as err:
        runner.run_cells([CELL])
    message = str(err.value)
    assert message.startswith("synth: validation could not read")
    assert "It and 2 other damaged video(s) of its splits (decoded in full) are now" in message
    assert message.count(str(damaged[2].path)) == 1  # named once, not again in the list
    assert message.endswith("Or replace the files first")
    monkeypatch.undo()
    again = _track(synth, cache)  # the next run: every one of them is left out
    skipped = again.clip_data("synth", again.recipe(CELL).options).skipped
    left_out = {s.split(": ")[0] for s in skipped}
    assert left_out == {f"train/{damaged[0].video_id}", f"train/{damaged[1].video_id}"} | {
        f"val/{damaged[2].video_id}"
    }
    (record,) = CellRunner({"finetune": again}, RunOptions(tmp_path / "a", episodes=40)).run_cells(
        [CELL]
    )
    assert sorted(s.split(": ")[0] for s in record.skipped_videos) == sorted(left_out)


def test_find_damaged_names_the_split_and_the_cause(synth):
    train = synth.videos("train")
    _damage_in_the_middle(train[2])
    first = VideoDecodeError(train[2].path, "unreadable")
    split = type("Split", (), {"records": train})()
    found = damaged_mod.find_damaged({"train": split}, first, min_frames=2, jobs=2)
    assert list(found) == [train[2].path]
    assert "img_00006.jpg" in found[train[2].path]
    assert damaged_mod.split_of({"train": split}, train[2].path) == "train"
    assert damaged_mod.split_of({"train": split}, "elsewhere.mp4") == "?"


def _fingerprint(track, monkeypatch, tmp_path) -> dict:
    """The training fingerprint ``track`` gives the unit of CELL (training stopped there)."""
    from fsarbench.training import finetune as finetune_mod

    seen = {}

    def capture(*args, fingerprint, **kwargs):
        seen.update(fingerprint)
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune_mod, "finetune", capture)
    with pytest.raises(KeyboardInterrupt):
        CellRunner({"finetune": track}, RunOptions(tmp_path / "fp", episodes=40)).run_cells([CELL])
    monkeypatch.undo()
    return seen


def test_changed_training_files_are_a_different_run(synth, tmp_path, monkeypatch):
    """Killed, then resumed after half the train videos were replaced: the resumed run went on
    training the same model on the new files, and its record looked like a clean run's."""
    before = _fingerprint(_track(synth, tmp_path / "cache"), monkeypatch, tmp_path)
    video = synth.videos("train")[3]
    stat = video.path.stat()
    os.utime(video.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # re-downloaded
    after = _fingerprint(_track(synth, tmp_path / "cache"), monkeypatch, tmp_path)
    assert before["data"]["files"] != after["data"]["files"]
    assert {k: v for k, v in before.items() if k != "data"} == {
        k: v for k, v in after.items() if k != "data"
    }


def test_a_test_video_found_damaged_after_training_keeps_the_model(synth, tmp_path, monkeypatch):
    """A test video recorded unreadable by the trained backbone's extraction changed the
    unit's folder name and training fingerprint: the next run trained the model again
    (bit-identical weights) beside the old folder."""
    track = _track(synth, tmp_path / "cache")
    before = track.data(CELL)
    fingerprint = _fingerprint(track, monkeypatch, tmp_path)
    test_video = synth.videos("test")[4]
    damaged_mod.record_damaged(synth.variant, {test_video.path: "damaged"}, tmp_path / "cache")
    again = _track(synth, tmp_path / "cache")
    after = again.data(CELL)
    assert f"test/{test_video.video_id}: damaged" in after.skipped
    assert after.info != before.info  # the records name the test videos left out
    assert after.model_info == before.model_info  # the model does not depend on them
    assert _fingerprint(again, monkeypatch, tmp_path) == fingerprint


@pytest.mark.parametrize("split", ["test", "train"])
def test_a_replaced_video_changes_the_cells_identity_not_the_models_name(synth, tmp_path, split):
    """A test (or train) video replaced under the same id left the finetune cell's record
    served as current by the next run (51.60, while eval of the same model gave 50.80), and
    a new cell of the unit sat beside it on other data: the record names its files now."""
    before = _track(synth, tmp_path / "cache").data(CELL)
    video = synth.videos(split)[2]
    stat = video.path.stat()
    os.utime(video.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a fixed file
    after = _track(synth, tmp_path / "cache").data(CELL)
    other = "train_val" if split == "test" else "test"
    key = "test" if split == "test" else "train_val"
    assert after.info["files"][key] != before.info["files"][key]
    assert after.info["files"][other] == before.info["files"][other]
    assert after.model_info == before.model_info  # the model folder keeps its name


def _args(synth, tmp_path, policy: str) -> argparse.Namespace:
    return argparse.Namespace(bad_videos=policy, cache=str(tmp_path / "cache"))


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_train_records_test_videos_its_extraction_could_not_read(synth, tmp_path, capsys, policy):
    """``train --test-episodes`` left such videos out silently, even under --bad-videos
    error, naming them only in the record."""
    from fsarbench.cli import train_cmd
    from fsarbench.data.probe_cache import ProbeCache, probe_cache_path
    from fsarbench.training.clip_data import UnusableSplitError

    video = synth.videos("test")[2]
    bad = {video.video_id: "frames 0..5 of 12: unreadable JPEG frame"}
    if policy == "error":
        with pytest.raises(UnusableSplitError, match=f"test/{video.video_id}: frames 0..5"):
            train_cmd._left_out_in_extraction(_args(synth, tmp_path, policy), synth, bad)
    else:
        train_cmd._left_out_in_extraction(_args(synth, tmp_path, policy), synth, bad)
        assert f"left out 1 more video(s) in extraction: test/{video.video_id}" in (
            capsys.readouterr().out
        )
    probes = ProbeCache(probe_cache_path(tmp_path / "cache", synth.variant))
    assert "unreadable in the test extraction" in str(probes.lookup(video.path))


def test_train_clears_checkpoint_writes_a_kill_cut_short(tmp_path, caplog):
    """``run`` removed a killed checkpoint write's ``.last.pt.<random>.tmp``; ``train`` left
    it for good (120 MB for a ResNet-18 finetune), also after --overwrite."""
    from fsarbench.cli import train_cmd

    out = tmp_path / "run"
    out.mkdir()
    cut = out / ".last.pt.x1y2z3.tmp"
    cut.write_bytes(b"half a checkpoint")
    (out / "last.pt").write_bytes(b"kept")
    with train_cmd._folder_held(out):
        assert not cut.exists() and (out / "last.pt").exists()
        assert (out / ".train.lock").exists()
    assert f"removing {cut}: a write cut short" in caplog.text


def test_only_torchruns_rank_0_clears_and_locks_the_train_folder(tmp_path, monkeypatch):
    """``train --overwrite`` runs before the process group exists, where every rank called
    itself rank 0: all ranks deleted and moved the old run's files at once (a rename race)."""
    from fsarbench.cli import train_cmd

    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"old")
    (out / ".last.pt.x.tmp").write_bytes(b"cut")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    train_cmd._clear_checkpoints(out)
    with train_cmd._folder_held(out):
        pass
    assert (out / "last.pt").exists() and (out / ".last.pt.x.tmp").exists()
    assert not (out / ".train.lock").exists()
    monkeypatch.setenv("RANK", "0")
    train_cmd._clear_checkpoints(out)
    assert not (out / "last.pt").exists()


def test_a_train_folder_in_use_stops_a_torchrun_train_at_once(tmp_path, monkeypatch):
    """A second torchrun 'train' into a folder in use: rank 0 waited for the lock while the
    other ranks waited for rank 0 until the process group's timeout, then failed."""
    import subprocess
    import sys
    import time

    from fsarbench.cli import train_cmd
    from fsarbench.locks import LockTimeout

    out = tmp_path / "run"
    out.mkdir()
    holding, release = tmp_path / "holding", tmp_path / "release"
    script = (
        "import pathlib, time\n"
        "from fsarbench.locks import held\n"
        f"with held(pathlib.Path({str(out / '.train.lock')!r}), what='x'):\n"
        f"    pathlib.Path({str(holding)!r}).touch()\n"
        f"    while not pathlib.Path({str(release)!r}).exists(): time.sleep(0.05)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(600):
            if holding.exists():
                break
            time.sleep(0.05)
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("WORLD_SIZE", "2")
        busy = "under torchrun a second train does not wait"
        with pytest.raises(LockTimeout, match=busy), train_cmd._folder_held(out):
            pass
        monkeypatch.setenv("WORLD_SIZE", "1")  # one process: waits (here up to 0.3 s)
        monkeypatch.setenv("FSAR_LOCK_TIMEOUT", "0.3")
        with pytest.raises(LockTimeout, match="still locked after"), train_cmd._folder_held(out):
            pass
    finally:
        release.touch()
        holder.wait(timeout=60)
    with train_cmd._folder_held(out):  # free again
        assert (out / ".train.lock").exists()


def _train_argv(out, cache, policy: str) -> list[str]:
    recipe = tiny_recipe(recipe={"way": 5, "val_episodes": 2})
    argv = ["train", "protonet", "--dataset", "synth", "--track", "finetune", "--device", "cpu"]
    argv += ["--out", str(out), "--cache", str(cache), "--no-progress", "--bad-videos", policy]
    argv += ["--test-episodes", "5", "--shots", "1"]
    argv += ["--recipe", *(f"{k}={v}" for k, v in recipe["recipe"].items())]
    return [*argv, "--option", *(f"{k}={v}" for k, v in recipe["options"].items())]


def test_train_probes_the_test_split_under_its_bad_video_policy(synth, tmp_path, capsys):
    """``train --test-episodes`` never probed the test split: a missing test video was left
    out under --bad-videos error too, and named only inside the record."""
    import fsarbench as fb
    from fsarbench.cli.main import main
    from fsarbench.data import datasets

    missing = synth.videos("test")[0]
    missing.path.unlink()
    factory = datasets.DATASETS["synth"]
    datasets.DATASETS["synth"] = lambda **kw: synth
    try:
        assert main(_train_argv(tmp_path / "e", tmp_path / "cache", "error")) == 2
        assert "unreadable or missing videos in" in capsys.readouterr().err
        assert not (tmp_path / "e" / "best.pt").exists()  # stopped before training
        assert main(_train_argv(tmp_path / "s", tmp_path / "cache", "skip")) == 0
    finally:
        datasets.DATASETS["synth"] = factory
    out = capsys.readouterr().out
    assert f"test: left out 1 video(s): test/{missing.video_id}: missing" in out
    assert "more video(s) in extraction" not in out  # the probe's, not a second finding
    (record,) = fb.load_records(tmp_path / "s")
    tests = [s for s in record.skipped_videos if s.startswith("test/")]
    assert len(tests) == 1 and tests[0].startswith(f"test/{missing.video_id}: ")


def test_eval_hparams_compare_as_the_method_builds_them():
    """A JSON list for a stored tuple (TRX's cardinalities) made every such eval a variant
    and kept it out of the paper tables."""
    from fsarbench.cli.eval_checks import changed_hparams

    checkpoint = {"method": {}, "hparams": {"cardinalities": (2, 3), "pe_scale": 0.1}}
    same = {"cardinalities": [2, 3], "pe_scale": 0.1, "dropout": 0.1}  # dropout: the default
    assert changed_hparams(checkpoint, same, "trx", "synth") == {}
    assert changed_hparams(checkpoint, {"cardinalities": [2]}, "trx", "synth") == {
        "cardinalities": [2]
    }
    assert changed_hparams({"weights": 1}, {"cardinalities": [2]}, "trx", "synth") == {}


def test_a_torchrun_rank_records_the_damaged_video_without_a_long_search(
    synth, tmp_path, monkeypatch
):
    """Under torchrun the other ranks wait in a collective while the failing rank searched
    every video: the search outlasted the process group's timeout and nothing was recorded."""
    from fsarbench.cli import train_cmd
    from fsarbench.data.probe_cache import ProbeCache, probe_cache_path

    def no_search(*args, **kwargs):
        raise AssertionError("searched under torchrun")

    monkeypatch.setattr(damaged_mod, "find_damaged", no_search)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    video = synth.videos("train")[1]
    split = type("Split", (), {"records": synth.videos("train")})()
    recipe = type("Recipe", (), {"options": type("Options", (), {"min_frames": 2})()})()
    args = argparse.Namespace(
        dataset="synth", cache=str(tmp_path / "cache"), bad_videos="skip", root="/data/s"
    )
    err = VideoDecodeError(video.path, "broken")
    message = str(train_cmd._damaged(args, synth, {"train": split}, recipe, err))
    assert "data check synth --root /data/s --full" in message
    assert "training could not read" in message and "It is now recorded as unreadable" in message
    assert "Decoded in full" not in message  # no full decode ran under torchrun
    args.bad_videos = "error"  # --overwrite alone met the same refusal again
    message = str(train_cmd._damaged(args, synth, {"train": split}, recipe, err))
    assert "re-run with --bad-videos skip --overwrite" in message
    probes = ProbeCache(probe_cache_path(tmp_path / "cache", synth.variant))
    assert probes.lookup(video.path) == "broken"


def test_a_decode_error_without_a_path_records_nothing(tmp_path):
    """A worker's message that names no path gives ``path == ""``: recorded as such it
    would have stored the current folder as an unreadable video."""
    assert damaged_mod.met(VideoDecodeError("", "gone")) == {}
    err = VideoDecodeError(tmp_path / "v.mp4", "broken")
    assert damaged_mod.met(err) == {tmp_path / "v.mp4": "broken"}


def test_under_torchrun_only_rank_0_probes_and_every_rank_takes_its_answer(monkeypatch):
    """Each rank probed for itself; a file damaged mid-way decodes or not from one read to
    the next, so ranks kept other videos (479 and 480) and trained on different splits,
    and rank 0's record named only its own left-out videos."""
    import fsarbench.cli.train_cmd as train_cmd
    import fsarbench.distributed.collectives as collectives
    import fsarbench.distributed.env as dist_env_mod

    probed = []
    monkeypatch.setattr(train_cmd, "_usable", lambda *a, **k: probed.append(a) or ("kept", []))
    monkeypatch.setattr(collectives, "broadcast_object", lambda obj, src=0: ("rank 0's", ["v"]))
    monkeypatch.setattr(dist_env_mod, "is_main", lambda: False)
    assert train_cmd._usable_as_rank0("ds", "train") == ("rank 0's", ["v"])
    assert probed == []  # rank 1 did not probe
    monkeypatch.setattr(dist_env_mod, "is_main", lambda: True)
    monkeypatch.setattr(collectives, "broadcast_object", lambda obj, src=0: obj)
    assert train_cmd._usable_as_rank0("ds", "train") == ("kept", []) and len(probed) == 1
