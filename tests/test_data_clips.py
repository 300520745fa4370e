"""ClipDataset / EpisodeClipDataset: skip-and-record policy, worker-count independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import write_bad_files, write_test_video

from fsarbench.data.clips import (
    ClipDataset,
    ClipOptions,
    EpisodeClipDataset,
    failures,
    make_loader,
)
from fsarbench.data.datasets import VideoRecord
from fsarbench.data.decode import VideoDecodeError, read_frames
from fsarbench.data.sampling import frame_rng, sample_frames
from fsarbench.data.transforms import get_transform
from fsarbench.episodes import make_manifest


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    recs = []
    for i in range(6):
        path = root / f"v{i}.mp4"
        write_test_video(path, frames=10 + 3 * i, seed=i)
        recs.append(VideoRecord(f"v{i}", f"c{i % 3}", i % 3, path))
    return recs


def _transform():
    return get_transform("trx-train", resize=28, crop=24)


def _all(ds, workers, batch=4):
    batches = list(make_loader(ds, batch_size=batch, num_workers=workers))
    return {
        k: (
            torch.cat([b[k] for b in batches])
            if isinstance(batches[0][k], torch.Tensor)
            else sum((b[k] for b in batches), [])
        )
        for k in batches[0]
    }


def test_clip_matches_manual_pipeline(videos):
    opts = ClipOptions(frames=4, sampler="trx", train=True, views=2, seed=3, epoch=1)
    ds = ClipDataset(videos, _transform(), opts)
    item = ds[3]  # video 1, view 1
    assert (item["index"], item["view"], item["ok"], item["error"]) == (1, 1, True, None)
    rng = frame_rng(3, "v1", 1, 1)
    idx = sample_frames("trx", 13, 4, train=True, rng=rng)
    expect = _transform()(read_frames(videos[1].path, idx), rng)
    torch.testing.assert_close(item["clip"], expect)
    assert item["clip"].shape == (4, 3, 24, 24)


def test_same_output_for_zero_and_two_workers(videos):
    opts = ClipOptions(frames=4, sampler="tsn", train=True, views=2, seed=5)
    ds = ClipDataset(videos, _transform(), opts)
    a, b = _all(ds, 0), _all(ds, 2, batch=3)
    torch.testing.assert_close(a["clip"], b["clip"], rtol=0, atol=0)
    assert a["index"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert a["view"].tolist() == b["view"].tolist() == [0, 1] * 6
    assert not torch.equal(a["clip"][0], a["clip"][1])  # views differ
    epoch2 = ClipDataset(
        videos,
        _transform(),
        ClipOptions(frames=4, sampler="tsn", train=True, views=2, seed=5, epoch=2),
    )
    assert not torch.equal(epoch2[0]["clip"], ds[0]["clip"])


def test_skip_records_bad_and_short_videos(videos, tmp_path):
    bad = write_bad_files(tmp_path)
    recs = [*videos[:2]] + [VideoRecord(k, "c", 0, p) for k, p in sorted(bad.items())]
    short = tmp_path / "short.mp4"
    write_test_video(short, frames=3)
    recs.append(VideoRecord("short", "c", 0, short))
    ds = ClipDataset(recs, get_transform("trx-test", resize=28, crop=24), ClipOptions(frames=4))
    out = _all(ds, 2)
    assert out["ok"].tolist() == [True, True, False, False, False, False, False, False]
    errors = out["error"]
    assert errors[:2] == [None, None]
    assert "missing.mp4: no such file" in errors[2]
    assert "text.mp4" in errors[3] and "truncated.mp4" in errors[4]
    assert "truncated_data.mp4" in errors[5] and "zero.mp4: empty file" in errors[6]
    assert errors[7] == f"{short}: too short: 3 frames, clips need 4"
    assert torch.count_nonzero(out["clip"][2:]) == 0
    batch = next(iter(make_loader(ds, batch_size=8)))
    assert [f.split(":")[0] for f in failures(batch, recs)] == [
        "missing",
        "text",
        "truncated",
        "truncated_data",
        "zero",
        "short",
    ]
    repeat = ClipDataset(
        recs[-1:],
        get_transform("trx-test", resize=28, crop=24),
        ClipOptions(frames=4, short="repeat"),
    )
    assert repeat[0]["ok"]


def test_raise_policy(videos, tmp_path):
    recs = [VideoRecord("gone", "c", 0, tmp_path / "gone.mp4")]
    ds = ClipDataset(recs, _transform(), ClipOptions(on_error="raise"))
    with pytest.raises(VideoDecodeError, match="gone.mp4: no such file"):
        ds[0]
    with pytest.raises(ValueError, match="on_error must be"):
        ClipDataset(recs, _transform(), ClipOptions(on_error="ignore"))


def test_episode_loading_same_for_any_worker_count(videos):
    m = make_manifest([r.class_index for r in videos], way=3, shot=1, queries=1, episodes=4, seed=1)
    ds = EpisodeClipDataset(m, videos, _transform(), ClipOptions(frames=4, train=True))
    a, b = _all(ds, 0, batch=2), _all(ds, 2, batch=2)
    for key in ("support", "query", "support_labels", "query_labels", "ok"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert a["support"].shape == (4, 3, 4, 3, 24, 24)
    assert a["query_labels"][0].tolist() == [0, 1, 2] and a["ok"].all()
    e0 = ds[0]
    v = int(m.support[0, 0])
    rng = frame_rng(0, videos[v].video_id, 0, 0)  # view = episode index 0
    idx = sample_frames("trx", 10 + 3 * v, 4, train=True, rng=rng)
    torch.testing.assert_close(
        e0["support"][0], _transform()(read_frames(videos[v].path, idx), rng)
    )
    with pytest.raises(ValueError, match="manifest indexes 6 videos, got 5 records"):
        EpisodeClipDataset(m, videos[:5], _transform())


def test_clip_uint8_roundtrip_of_constant_video(tmp_path):
    path = tmp_path / "c.mp4"
    video = write_test_video(path, frames=8, size=32, seed=3)
    ds = ClipDataset(
        [VideoRecord("c", "c", 0, path)],
        get_transform("trx-test", resize=0, crop=32),
        ClipOptions(frames=8),
    )
    clip = ds[0]["clip"]
    expect = torch.from_numpy(video[[0, 1, 2, 3, 4, 5, 6, 7]].astype(np.float32) / 255)
    assert (clip.permute(0, 2, 3, 1) - expect).abs().mean() < 0.03
