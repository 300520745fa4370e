"""Frame readers behind one function: decord (sampled frames only), PyAV, JPEG folders.

``read_frames(path, indices)`` returns ``uint8 [T, H, W, 3]`` RGB frames in the order of
``indices`` (repeats allowed). A folder is read as pre-extracted JPEG frames; a file goes
through decord when it is installed, with PyAV as the fallback. Every failure is a
:class:`VideoDecodeError` naming the path and the cause.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "VideoDecodeError",
    "TruncatedVideoError",
    "read_frames",
    "read_clip",
    "count_frames",
    "READERS",
    "have_decord",
]

JPEG_SUFFIXES = (".jpg", ".jpeg")

log = logging.getLogger(__name__)


class VideoDecodeError(RuntimeError):
    """A video that cannot be read: ``path`` and human-readable ``cause``.

    Re-raised from a DataLoader worker, it is rebuilt from the worker's whole message (torch
    passes that one string): ``path`` and ``cause`` are then read back from its last line."""

    def __init__(self, path: str | Path, cause: str | None = None):
        if cause is None:  # torch's worker re-raise: one message ending with our own
            found = re.findall(r"cannot decode (.+?): (.*)", str(path))
            path, cause = found[-1] if found else ("", str(path))
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot decode {self.path}: {cause}")

    def __reduce__(self):  # picklable across DataLoader workers
        return (type(self), (self.path, self.cause))


class TruncatedVideoError(VideoDecodeError):
    """A file found cut short (fewer frames than its header counts or its duration holds):
    every backend reads the same bytes, so no other backend is tried. PyAV, tried after
    decord had refused a cut-off file, trusted the header's count and read the frames
    before the cut: a test clip placed by that count was extracted and counted."""


def have_decord() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def _precheck(path: Path) -> None:
    """Missing, empty and unreadable files get a precise cause before any decoder runs."""
    if not path.exists():
        raise VideoDecodeError(path, "no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def _check_indices(path: Path, indices: Sequence[int], n: int) -> list[int]:
    idx = [int(i) for i in indices]
    if not idx:
        raise ValueError("indices must not be empty")
    bad = [i for i in idx if i < 0 or i >= n]
    if bad:
        raise VideoDecodeError(path, f"frame index {bad[0]} out of range for {n} frames")
    return idx


# ---- decord -------------------------------------------------------------------------------


def _decord_reader(path: Path):
    import decord

    try:
        return decord.VideoReader(str(path), num_threads=1)
    except Exception as err:  # decord raises bare RuntimeError/DECORDError
        raise VideoDecodeError(path, f"decord cannot open it ({_first_line(err)})") from None


def _decord_frames(path: Path, vr) -> int:
    """Frames of an opened reader; a file decord cannot seek in, or one cut short, is
    refused. decord counts the packets it demuxes, so a file cut at a packet boundary opens
    as a shorter video: checked wherever the header states no count (webm) or more frames
    than decord finds."""
    n = len(vr)
    ends = _decord_frame_ends(path, vr, n)
    try:
        st = path.stat()
        header = _header_of(str(path), st.st_size, st.st_mtime_ns)
    except VideoDecodeError:  # a file only decord opens: no header to check against
        return n
    if n and header.exact_count and n < header.frames:
        _check_count(path, n, header)
    if n and (header.frames <= 0 or n < header.frames):
        _check_not_cut(path, n, float(ends[-1]), header)
    return n


def _decord_frame_ends(path: Path, vr, n: int) -> np.ndarray:
    """End time in seconds of each of decord's ``n`` frames. decord seeks by these times:
    a file whose frames carry none (an AVI with packed B-frames: the "no timestamp" value,
    about -3.7e17 s) is read with other frames than the ones asked for, out of order, so it
    is refused here (PyAV, decoding in order, reads it right)."""
    if not n:
        return np.zeros(0)
    try:
        times = np.asarray(vr.get_frame_timestamp(range(n)), dtype=np.float64)
    except Exception as err:  # IndexError: a header that counts frames no packet holds
        raise VideoDecodeError(
            path, f"decord demuxes none of the {n} frames its header counts ({_first_line(err)})"
        ) from None
    if not np.isfinite(times).all() or np.abs(times).max() > _NO_TIME_S:
        raise VideoDecodeError(
            path,
            "decord cannot seek in it: its frames carry no timestamps (an AVI with packed "
            "B-frames?); PyAV reads it in order",
        )
    return times[:, 1]


#: Larger than any video's time in seconds (a year): a frame time beyond it is FFmpeg's
#: "no timestamp" value as decord converts it.
_NO_TIME_S = 3.2e7


def _decord_read(path: Path, indices: Sequence[int]) -> np.ndarray:
    vr = _decord_reader(path)
    idx = _check_indices(path, indices, _decord_frames(path, vr))
    try:
        return vr.get_batch(idx).asnumpy()
    except Exception as err:
        raise VideoDecodeError(path, f"decord failed reading frames ({_first_line(err)})") from None


def _decord_count(path: Path) -> int:
    return _decord_frames(path, _decord_reader(path))


# ---- PyAV ---------------------------------------------------------------------------------


def _av_open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise VideoDecodeError(
            path, f"not a readable video container ({_first_line(err)})"
        ) from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "the container has no video stream")
    return container


def _av_decode(
    path: Path, stop: int | None = None, keep: set[int] | None = None
) -> tuple[int, dict[int, np.ndarray], float | None]:
    """Decode frames ``0..stop`` in order (all when ``stop`` is None); RGB arrays of those in
    ``keep`` (all when None). Returns (frames decoded, index -> ``uint8 [H, W, 3]``, end
    time in seconds of the last decoded frame, ``None`` where the stream has no timestamps)."""
    import av

    n, frames, end = 0, {}, None
    with _av_open(path) as container:
        step = _frame_step(container.streams.video[0])
        try:
            for frame in container.decode(video=0):
                if keep is None or n in keep:
                    frames[n] = _rgb24(frame)
                end = None if frame.time is None else frame.time + step
                n += 1
                if stop is not None and n > stop:
                    break
        except av.FFmpegError as err:
            if not n:
                raise VideoDecodeError(path, f"corrupt video data ({_first_line(err)})") from None
    return n, frames, end


def _rgb24(frame) -> np.ndarray:
    """``uint8 [H, W, 3]`` of a PyAV video frame, converted by swscale on one thread (the
    same pixels: slices are converted alike). With PyAV's default (threads by core count) a
    decode worker forked from a process that had converted frames hung in swscale's
    slice-thread teardown (``avpriv_slicethread_free``, all threads in futex waits), and the
    whole test run with it."""
    return frame.to_ndarray(format="rgb24", threads=1)


def _frame_step(stream) -> float:
    """Seconds per frame of a PyAV video stream (0 when it states no rate)."""
    return 1 / float(stream.average_rate) if stream.average_rate else 0.0


@dataclass(frozen=True)
class _Header:
    """What a container's header states: ``frames`` (0: none), the video's duration in
    seconds (``None``: none) and the seconds per frame."""

    frames: int
    duration: float | None
    step: float
    exact_count: bool = False  # an AVI's count: its header's, exact even where the
    # duration is estimated from the file's size (an AVI cut near its end keeps the count)


def _read_header(path: Path) -> _Header:
    """The header of ``path``. The duration is the video stream's own (Matroska: its
    ``DURATION`` tag), else the container's when it holds nothing but video (an audio
    track may run longer)."""
    with _av_open(path) as container:
        stream = container.streams.video[0]
        duration = _tagged_duration(stream)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif (
            duration is None
            and container.duration is not None
            and all(s.type == "video" for s in container.streams)
        ):
            duration = container.duration / 1_000_000  # AV_TIME_BASE
        exact = "avi" in container.format.name.split(",")
        return _Header(int(stream.frames), duration, _frame_step(stream), exact)


def _tagged_duration(stream) -> float | None:
    """Seconds of a Matroska/WebM stream's ``DURATION`` tag (``HH:MM:SS.nnnnnnnnn``, what
    FFmpeg's muxer writes per stream), ``None`` where there is none or it does not parse."""
    found = re.fullmatch(
        r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", str(stream.metadata.get("DURATION", ""))
    )
    if found is None:
        return None
    hours, minutes, seconds = found.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _check_count(path: Path, frames: int, header: _Header) -> None:
    """An AVI found with fewer frames than its header counts, by more than two frames and
    2% (the tolerance of :func:`_check_not_cut`), is refused as cut short: its duration,
    estimated from the file's size once the index at its end is gone, shrinks with the cut."""
    if header.frames - frames > max(2, 0.02 * header.frames):
        raise TruncatedVideoError(
            path,
            f"truncated: {frames} of the {header.frames} frames its header counts are in the "
            "file (a cut-off download or copy?)",
        )


@functools.lru_cache(maxsize=4096)
def _header_of(path: str, size: int, mtime_ns: int) -> _Header:
    """:func:`_read_header` of a file as it is now (size and time in the key): a clip
    decoded at every training step opens its header once per process, not at each read."""
    return _read_header(Path(path))


def _check_not_cut(path: Path, frames: int, end: float | None, header: _Header) -> None:
    """A container that states no frame count (webm) is counted by decoding or demuxing it,
    which stops quietly where a cut-off file ends: refused when its frames end short of the
    duration its header states by more than two frame intervals and 2% (a variable frame
    rate's last frame may outlast the mean interval)."""
    stated, step = header.duration, header.step
    if stated is None or end is None or not step:
        return
    if stated - end > max(2 * step, 0.02 * stated):
        raise TruncatedVideoError(
            path,
            f"truncated: its {frames} frames end at {end:.2f} s of the {stated:.2f} s its "
            "header states (a cut-off download or copy?)",
        )


def _av_read(path: Path, indices: Sequence[int]) -> np.ndarray:
    wanted = [int(i) for i in indices]
    n, frames, _ = _av_decode(path, stop=max(wanted) if wanted else 0, keep=set(wanted))
    if wanted and max(wanted) >= n and max(wanted) < _av_header_frames(path):
        raise TruncatedVideoError(
            path, f"truncated or corrupt: only {n} of {_av_header_frames(path)} frames decode"
        )
    idx = _check_indices(path, wanted, n)
    return _stack(path, [frames[i] for i in idx], idx)


def _av_header_frames(path: Path) -> int:
    """Frame count the container header states (0 when it states none)."""
    return _read_header(path).frames


def _av_count(path: Path) -> int:
    header = _read_header(path)
    if header.frames > 0:
        return header.frames
    n, _, end = _av_decode(path, keep=set())
    _check_not_cut(path, n, end, header)
    return n


def _stack(path: Path, frames: list[np.ndarray], idx: list[int]) -> np.ndarray:
    """``[T, H, W, 3]``; a video whose frame size changes is refused, naming the sizes (decord
    rescales such frames to the first one's size, PyAV and JPEG folders do not)."""
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        first = frames[0].shape
        i = next(k for k, f in enumerate(frames) if f.shape != first)
        raise VideoDecodeError(
            path,
            f"frame size changes within the video: {first[1]}x{first[0]} at frame {idx[0]}, "
            f"{frames[i].shape[1]}x{frames[i].shape[0]} at frame {idx[i]}",
        )
    return np.stack(frames)


# ---- JPEG folders -------------------------------------------------------------------------


def _natural_key(p: Path) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _jpeg_files(path: Path) -> list[Path]:
    files = sorted(
        (p for p in path.iterdir() if p.suffix.lower() in JPEG_SUFFIXES), key=_natural_key
    )
    if not files:
        raise VideoDecodeError(path, "folder holds no .jpg frames")
    return files


def _jpeg_read(path: Path, indices: Sequence[int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    files = _jpeg_files(path)
    idx = _check_indices(path, indices, len(files))
    out = []
    for i in idx:
        try:
            with Image.open(files[i]) as img:
                out.append(np.asarray(img.convert("RGB")))
        except (UnidentifiedImageError, OSError) as err:
            # the folder is the video: a run leaves it out by this path
            raise VideoDecodeError(path, f"unreadable JPEG frame {files[i].name} ({err})") from None
    return _stack(path, out, idx)


def _jpeg_count(path: Path) -> int:
    return len(_jpeg_files(path))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


Reader = tuple[Callable[[Path, Sequence[int]], np.ndarray], Callable[[Path], int]]
READERS: dict[str, Reader] = {
    "decord": (_decord_read, _decord_count),
    "pyav": (_av_read, _av_count),
    "jpeg": (_jpeg_read, _jpeg_count),
}


def _backends(path: Path, backend: str) -> list[str]:
    if path.is_dir():
        return ["jpeg"]
    if backend == "auto":
        return ["decord", "pyav"] if have_decord() else ["pyav"]
    if backend not in READERS:
        raise ValueError(f"unknown backend {backend!r}; backends: auto, {', '.join(READERS)}")
    return [backend]


def _run(path: Path, backend: str, op: int, *args) -> object:
    return _first_backend_that_reads(path, backend, lambda name: READERS[name][op](path, *args))


def _first_backend_that_reads(path: Path, backend: str, read: Callable[[str], Any]) -> Any:
    """``read(name)`` with each backend for ``path`` in turn, returning the first result;
    every backend's cause, joined, when none reads it."""
    _precheck(path)
    errors = []
    for name in _backends(path, backend):
        try:
            result = read(name)
        except TruncatedVideoError:
            raise  # cut short: another backend would read the same bytes
        except VideoDecodeError as err:
            errors.append(err)
        else:
            _note_fallback(path, name, errors)
            return result
    if len(errors) == 1:
        raise errors[0]
    raise VideoDecodeError(path, "; ".join(dict.fromkeys(e.cause for e in errors)))


def _check_decodable(path: Path) -> None:
    """Refuse a file whose header counts more frames than PyAV decodes (an mp4 cut off,
    which decord cannot open): a clip placed by the header's count read the frames before
    the cut. Decoded in full once per file and process (:func:`_decodable_frames`)."""
    st = path.stat()
    header = _header_of(str(path), st.st_size, st.st_mtime_ns)
    if header.frames > 0:
        _check_count(path, _decodable_frames(str(path), st.st_size, st.st_mtime_ns), header)


@functools.lru_cache(maxsize=4096)
def _decodable_frames(path: str, size: int, mtime_ns: int) -> int:
    """Frames PyAV decodes from the file as it is now (size and time in the key)."""
    return _av_decode(Path(path), keep=set())[0]


_FALLBACK_NOTED: list[Path] = []


def _note_fallback(path: Path, used: str, errors: list[VideoDecodeError]) -> None:
    """Say once per process that a file was read by a later backend than the first (PyAV
    after decord: every frame up to the last one asked for is decoded, slower)."""
    if errors and not _FALLBACK_NOTED:
        _FALLBACK_NOTED.append(path)
        log.warning(
            "%s is read with %s (%s); files decord cannot read are read so, more slowly, "
            "and are not named again",
            path,
            used,
            errors[0].cause,
        )


def read_frames(path: str | Path, indices: Sequence[int], *, backend: str = "auto") -> np.ndarray:
    """Frames ``indices`` of the video (file or JPEG folder) at ``path``.

    Returns:
        ``uint8 [len(indices), H, W, 3]`` RGB.
    Raises:
        VideoDecodeError: missing, empty, corrupt, truncated or non-video input, or an index
            past the last decodable frame.
    """
    return _run(Path(path), backend, 0, indices)  # type: ignore[return-value]


def count_frames(path: str | Path, *, backend: str = "auto") -> int:
    """Number of frames of the video (file or JPEG folder) at ``path``."""
    return int(_run(Path(path), backend, 1))  # type: ignore[arg-type]


def read_clip(
    path: str | Path, choose: Callable[[int], Sequence[int]], *, backend: str = "auto"
) -> tuple[np.ndarray, list[int]]:
    """Open the video once, pick indices from its frame count, read only those frames.

    Args:
        choose: ``num_frames -> indices`` (e.g. a sampler with its rng bound); exceptions it
            raises (such as a too-short video) propagate unchanged.
    Returns:
        (``uint8 [T, H, W, 3]``, the indices read).
    """
    path = Path(path)
    return _first_backend_that_reads(path, backend, lambda name: _OPEN_READ[name](path, choose))


def _decord_clip(path: Path, choose: Callable[[int], Sequence[int]]):
    vr = _decord_reader(path)
    n = _decord_frames(path, vr)
    idx = _check_indices(path, choose(n), n)
    try:
        return vr.get_batch(idx).asnumpy(), idx
    except Exception as err:
        raise VideoDecodeError(path, f"decord failed reading frames ({_first_line(err)})") from None


def _count_then_read(name: str):
    read, count = READERS[name]

    def clip(path: Path, choose: Callable[[int], Sequence[int]]):
        if name == "pyav":  # its count is the header's: checked against what decodes
            _check_decodable(path)
        idx = [int(i) for i in choose(count(path))]
        return read(path, idx), idx

    return clip


_OPEN_READ = {
    "decord": _decord_clip,
    "pyav": _count_then_read("pyav"),
    "jpeg": _count_then_read("jpeg"),
}
