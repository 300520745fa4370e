"""Feature-extraction throughput against the backbone's forward pass alone.

Generated mp4 files are decoded by fsarbench.data's ClipDataset in DataLoader workers while
the main process runs resnet18 (random init) at 112 px; the target is extraction frames/s
>= 0.85 x forward-only frames/s on the same clips (decoding hidden behind compute).
128 videos (16 batches), so worker start-up and the first batch's decode, which nothing can
hide, weigh ~1/16 (with 32 videos they alone pulled the ratio to ~0.65). On 2 cores decoding
takes CPU from the forward: the decode-only row's CPU share bounds the ratio at ~0.87-0.9.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate
from torch.utils.data import DataLoader

from fsarbench.features.backbones import create_backbone
from fsarbench.features.extract import (
    SplitExtractConfig,
    clip_dataset,
    collate_clips,
    encode_clips,
    extract_features,
)

VIDEOS, FRAMES_PER_FILE, HEIGHT, WIDTH = 128, 48, 120, 160
CONFIG = SplitExtractConfig(
    backbone="resnet18",
    weights="none",
    num_frames=8,
    resolution=112,
    batch_size=8,
    workers=2,
    progress=False,
).resolved("test")


def write_videos(folder: Path) -> list:
    """``VIDEOS`` mpeg4 files of moving noise blocks; their VideoRecords."""
    import av

    from fsarbench.data.datasets import VideoRecord

    rng = np.random.default_rng(0)
    records = []
    for i in range(VIDEOS):
        path = folder / f"video{i:03d}.mp4"
        base = rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
        with av.open(str(path), "w") as out:
            stream = out.add_stream("mpeg4", rate=25)
            stream.height, stream.width, stream.pix_fmt = HEIGHT, WIDTH, "yuv420p"
            for f in range(FRAMES_PER_FILE):
                frame = np.roll(base.repeat(8, 0).repeat(8, 1), f * 2, axis=1)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            out.mux(stream.encode())
        records.append(VideoRecord(f"video{i:03d}", f"class{i % 4}", i % 4, path))
    return records


def forward_only(backbone, clips: torch.Tensor) -> float:
    """Seconds to encode ``clips [N, T, 3, H, W]`` in batches, no decoding."""
    start = time.perf_counter()
    for b in range(0, len(clips), CONFIG.batch_size):
        encode_clips(backbone, clips[b : b + CONFIG.batch_size], torch.device("cpu"))
    return time.perf_counter() - start


def decode_only(dataset) -> float:
    """Seconds to decode every clip with the extraction's workers, no forward."""
    loader = DataLoader(
        dataset, batch_size=CONFIG.batch_size, num_workers=CONFIG.workers, collate_fn=collate_clips
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def main() -> None:
    backbone = create_backbone(CONFIG.backbone, weights=CONFIG.weights)
    with tempfile.TemporaryDirectory() as tmp:
        records = write_videos(Path(tmp))
        dataset = clip_dataset(records, CONFIG)
        clips = torch.stack([dataset[i]["clip"] for i in range(len(dataset))])
        frames = clips.shape[0] * clips.shape[1]
        forward_only(backbone, clips[: CONFIG.batch_size])  # warm-up
        t_forward = min(forward_only(backbone, clips) for _ in range(2))
        t_decode = decode_only(dataset)
        _, stats = extract_features(
            dataset,
            backbone,
            cache_dir=Path(tmp) / "cache",
            num_frames=CONFIG.num_frames,
            batch_size=CONFIG.batch_size,
            num_workers=CONFIG.workers,
            progress=False,
        )
    other = stats.seconds - stats.wait_seconds - stats.forward_seconds
    rows = [
        ["backbone forward only", f"{t_forward:.2f}", f"{frames / t_forward:.0f}", "1.00"],
        [
            "decode only (2 workers)",
            f"{t_decode:.2f}",
            f"{frames / t_decode:.0f}",
            f"{t_forward / t_decode:.2f}",
        ],
        [
            "extraction (decode + forward + cache)",
            f"{stats.seconds:.2f}",
            f"{stats.frames_per_s:.0f}",
            f"{stats.frames_per_s * t_forward / frames:.2f}",
        ],
    ]
    print(
        f"resnet18 (random init), {CONFIG.resolution} px, {VIDEOS} mp4 files "
        f"{WIDTH}x{HEIGHT} x {FRAMES_PER_FILE} frames, T={CONFIG.num_frames}, "
        f"{CONFIG.batch_size} videos per forward, torch threads {torch.get_num_threads()}"
    )
    print(tabulate(rows, headers=["stage", "seconds", "frames/s", "ratio to forward"]))
    print(
        f"extraction's own split: waiting for clips {stats.wait_seconds:.2f} s, backbone "
        f"{stats.forward_seconds:.2f} s (forward-only run: {t_forward:.2f} s), rest "
        f"{other:.2f} s (start-up, hand-over to the writer, final flush)"
    )
    print("target: extraction / forward >= 0.85")


if __name__ == "__main__":
    main()
