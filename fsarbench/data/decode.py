"""Frame readers behind one function: decord (sampled frames only), PyAV, JPEG folders.

``read_frames(path, indices)`` returns ``uint8 [T, H, W, 3]`` RGB frames in the order of
``indices`` (repeats allowed). A folder is read as pre-extracted JPEG frames; a file goes
through decord when it is installed, with PyAV as the fallback. Every failure is a
:class:`VideoDecodeError` naming the path and the cause.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["VideoDecodeError", "read_frames", "read_clip", "count_frames", "READERS", "have_decord"]

JPEG_SUFFIXES = (".jpg", ".jpeg")


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


def _decord_read(path: Path, indices: Sequence[int]) -> np.ndarray:
    vr = _decord_reader(path)
    idx = _check_indices(path, indices, len(vr))
    try:
        return vr.get_batch(idx).asnumpy()
    except Exception as err:
        raise VideoDecodeError(path, f"decord failed reading frames ({_first_line(err)})") from None


def _decord_count(path: Path) -> int:
    return len(_decord_reader(path))


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
) -> tuple[int, dict[int, np.ndarray]]:
    """Decode frames ``0..stop`` in order (all when ``stop`` is None); RGB arrays of those in
    ``keep`` (all when None). Returns (frames decoded, index -> ``uint8 [H, W, 3]``)."""
    import av

    n, frames = 0, {}
    with _av_open(path) as container:
        try:
            for frame in container.decode(video=0):
                if keep is None or n in keep:
                    frames[n] = frame.to_ndarray(format="rgb24")
                n += 1
                if stop is not None and n > stop:
                    break
        except av.FFmpegError as err:
            if not n:
                raise VideoDecodeError(path, f"corrupt video data ({_first_line(err)})") from None
    return n, frames


def _av_read(path: Path, indices: Sequence[int]) -> np.ndarray:
    wanted = [int(i) for i in indices]
    n, frames = _av_decode(path, stop=max(wanted) if wanted else 0, keep=set(wanted))
    if wanted and max(wanted) >= n and max(wanted) < _av_header_frames(path):
        raise VideoDecodeError(
            path, f"truncated or corrupt: only {n} of {_av_header_frames(path)} frames decode"
        )
    idx = _check_indices(path, wanted, n)
    return np.stack([frames[i] for i in idx])


def _av_header_frames(path: Path) -> int:
    """Frame count the container header states (0 when it states none)."""
    with _av_open(path) as container:
        return int(container.streams.video[0].frames)


def _av_count(path: Path) -> int:
    n = _av_header_frames(path)
    return n if n > 0 else _av_decode(path, keep=set())[0]


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
            raise VideoDecodeError(files[i], f"unreadable JPEG frame ({err})") from None
    return np.stack(out)


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
    _precheck(path)
    errors = []
    for name in _backends(path, backend):
        try:
            return READERS[name][op](path, *args)
        except VideoDecodeError as err:
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    raise VideoDecodeError(path, "; ".join(e.cause for e in errors))


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
    _precheck(path)
    errors = []
    for name in _backends(path, backend):
        try:
            return _OPEN_READ[name](path, choose)
        except VideoDecodeError as err:
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    raise VideoDecodeError(path, "; ".join(e.cause for e in errors))


def _decord_clip(path: Path, choose: Callable[[int], Sequence[int]]):
    vr = _decord_reader(path)
    idx = _check_indices(path, choose(len(vr)), len(vr))
    try:
        return vr.get_batch(idx).asnumpy(), idx
    except Exception as err:
        raise VideoDecodeError(path, f"decord failed reading frames ({_first_line(err)})") from None


def _count_then_read(name: str):
    read, count = READERS[name]

    def clip(path: Path, choose: Callable[[int], Sequence[int]]):
        idx = [int(i) for i in choose(count(path))]
        return read(path, idx), idx

    return clip


_OPEN_READ = {
    "decord": _decord_clip,
    "pyav": _count_then_read("pyav"),
    "jpeg": _count_then_read("jpeg"),
}
