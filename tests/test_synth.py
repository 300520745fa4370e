"""The embedded synthetic benchmark: deterministic real mp4 files, class design, resume,
and (slow) that it makes its point with random-init ResNet-18 features."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import torch

from fsarbench.data.clips import ClipDataset, ClipOptions
from fsarbench.data.datasets import get_dataset
from fsarbench.data.decode import count_frames
from fsarbench.data.synth import SynthConfig, ensure_synth, generation_workers, plan_classes
from fsarbench.data.transforms import get_transform

SMALL = SynthConfig(videos_per_class=2, size=32, min_frames=8, max_frames=10)


def _md5s(root):
    meta = json.loads((root / "synth.json").read_text())
    return {v["path"]: v["md5"] for v in meta["videos"]}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return ensure_synth(tmp_path_factory.mktemp("synth"), seed=0, config=SMALL)


def test_class_plan_makes_the_benchmark_point():
    classes = plan_classes(0)
    by_split = {s: [c for c in classes if c.split == s] for s in ("train", "val", "test")}
    assert [len(v) for v in by_split.values()] == [24, 8, 14]
    names = [c.name for c in classes]
    assert len(set(names)) == len(names)
    test = {c.name: c for c in by_split["test"]}
    pairs = [c for c in test.values() if c.category == "temporal" and c.name.endswith("_fwd")]
    assert len(pairs) >= 2
    for fwd in pairs:
        rev = test[fwd.partner]
        assert rev.actions == fwd.actions[::-1] and rev.partner == fwd.name
    assert {c.category for c in test.values()} == {"appearance", "temporal", "composite"}
    assert plan_classes(0) == classes and plan_classes(1) != classes


def test_generation_is_deterministic(small, tmp_path):
    again = ensure_synth(tmp_path / "b", seed=0, config=SMALL)
    assert again.name == small.name
    assert _md5s(again) == _md5s(small)
    other = ensure_synth(tmp_path / "c", seed=1, config=SMALL)
    assert set(_md5s(other).values()).isdisjoint(_md5s(small).values())
    files = sorted(p.relative_to(small) for p in small.rglob("*.mp4"))
    assert len(files) == 46 * 2 and not list(small.parent.glob("*.partial"))


@pytest.mark.parametrize("kind", ["standard", "planted"])
def test_worker_processes_write_the_same_bytes(tmp_path, kind):
    """The videos are rendered over processes; their order, files and metadata are those of
    the one-process generation."""
    one = ensure_synth(tmp_path / "one", seed=0, config=SMALL, kind=kind, workers=1)
    three = ensure_synth(tmp_path / "three", seed=0, config=SMALL, kind=kind, workers=3)
    assert (one / "synth.json").read_text() == (three / "synth.json").read_text()
    for path in one.rglob("*.mp4"):
        assert path.read_bytes() == (three / path.relative_to(one)).read_bytes()


def test_forked_workers_cannot_collect_the_callers_garbage(tmp_path, monkeypatch):
    """A forked worker that garbage-collected an inherited decord reader deadlocked in its
    destructor (seen in CI: the reader's threads do not exist in the child). Garbage is
    collected before the fork and everything else is frozen out of the children's GC."""
    import gc
    from concurrent.futures import ProcessPoolExecutor

    from fsarbench.data import synth

    frozen = []

    class Recording(ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            frozen.append(gc.get_freeze_count())
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(synth, "ProcessPoolExecutor", Recording)
    ensure_synth(tmp_path, seed=0, config=SMALL, kind="planted", workers=2)
    assert frozen and frozen[0] > 0 and gc.get_freeze_count() == 0


def test_generation_workers_setting(monkeypatch):
    monkeypatch.setenv("FSAR_SYNTH_WORKERS", "3")
    assert generation_workers() == 3
    monkeypatch.setenv("FSAR_SYNTH_WORKERS", "three")
    with pytest.raises(ValueError, match="FSAR_SYNTH_WORKERS='three'"):
        generation_workers()
    monkeypatch.delenv("FSAR_SYNTH_WORKERS")
    assert 1 <= generation_workers() <= 8


def test_videos_decode_through_the_clip_pipeline(small):
    ds = get_dataset("synth", root=small.parent, config=SMALL)
    assert ds.available()
    meta = {v["video_id"]: v for v in ds.meta()["videos"]}
    test = ds.videos("test")
    assert len(test) == 28 and len(ds.class_names("test")) == 14
    assert {ds.class_info("test")[r.class_name]["category"] for r in test} == {
        "appearance",
        "temporal",
        "composite",
    }
    for r in test[::7]:
        assert count_frames(r.path) == meta[r.video_id]["frames"]
    clips = ClipDataset(
        test[:4],
        get_transform("trx-test", resize=32, crop=32),
        ClipOptions(frames=8, sampler="uniform"),
    )
    item = clips[0]
    assert item["ok"] and item["clip"].shape == (8, 3, 32, 32) and item["clip"].std() > 0.05
    assert set(ds.split_md5s()) == {"train", "val", "test"}


def test_generation_resumes_from_partial_folder(small, tmp_path):
    final = tmp_path / small.name
    partial = tmp_path / f"{small.name}.partial"
    shutil.copytree(small, partial)
    (partial / "synth.json").unlink()
    victim = next(partial.rglob("*.mp4"))
    victim.unlink()
    keep = next(p for p in partial.rglob("*.mp4"))
    os.utime(keep, (1, 1))
    assert ensure_synth(tmp_path, seed=0, config=SMALL) == final
    assert _md5s(final) == _md5s(small)
    assert (final / keep.relative_to(partial)).stat().st_mtime == 1  # not rewritten
    assert not partial.exists()


@pytest.mark.slow
def test_synth_makes_its_point(tmp_path):
    """Order-aware matching beats mean pooling on the reversed pairs; appearance classes are
    easy for both. Random-init ResNet-18 features, default-size synth, test split."""
    from fsarbench.data.synth_check import check_synth

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    ds = get_dataset("synth", root=tmp_path)
    ds.videos("test")
    gen = time.perf_counter() - t0
    res = check_synth(ds, size=64, episodes=300)
    print(f"\ngeneration {gen:.1f} s; total {time.perf_counter() - t0:.1f} s")
    print(json.dumps(res, indent=1))
    t = res["temporal"]
    assert t["way"] == 5
    assert t["aligned"] > t["mean"] + 25 and t["dtw"] > t["mean"] + 25
    assert t["mean"] < 62  # 3 pairs: mean pooling cannot separate a pair's members
    a = res["appearance"]
    assert a["mean"] > a["chance"] + 35 and a["aligned"] > a["chance"] + 35
