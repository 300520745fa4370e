"""TRX and HyRSM heads: seconds per 10,000 5-way test episodes.

2,400 videos of random non-negative ``[T=8, D=2048]`` features, 1 query per class, 2 threads,
eval mode. Each row also gives the achieved GFLOP/s of the head's dominant matrix work
(counted from its shapes) beside a plain ``torch.matmul`` of the head's largest shape, timed
in the same run. Batches are the evaluator's defaults (500 episodes, fewer where their
gathered states would pass the CPU budget of 64 MiB: TRX 5-shot gathers ~11 MB per episode).
The per-video encode and the matching are timed separately; by default 1,000 episodes are
matched and that time is scaled to 10,000, the encode counted once. ``main(episodes=10_000)``
or ``BENCH_TRX_HYRSM_EPISODES=10000`` runs the full set.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from tabulate import tabulate

import fsarbench as fb
from fsarbench.evaluate import (
    default_batch_bytes,
    encode_videos,
    fit_batch,
    make_predictor,
    prepare_pool,
    summarise_predictions,
)

WAY, QUERIES, VIDEOS, CLASSES, T, D = 5, 1, 2_400, 24, 8, 2_048
TARGET_EPISODES = 10_000
TARGETS = {("trx", 1): 65.0, ("trx", 5): 135.0, ("hyrsm", 1): 33.0, ("hyrsm", 5): 33.0}


@dataclass
class Work:
    """Dominant matrix work of one head: FLOPs per video (encode) and per episode (match),
    and the largest matmul shape ``(m, k, n)`` for the plain-matmul comparison."""

    per_video: float
    per_episode: float
    shape: tuple[int, int, int]


def trx_work(shot: int, out_dim: int = 1152, cardinalities=(2, 3)) -> Work:
    """Encode: frame projections, tuple keys, per-video value Gram; match: key and value-cross
    bmm, plus class value Grams when a class has several videos (1-shot: the video's own)."""
    from math import comb

    m = WAY * shot
    per_video = per_episode = 0.0
    for w in cardinalities:
        r, p = w * T, comb(T, w)
        per_video += 2 * T * D * 2 * w * out_dim + 2 * p * r * out_dim + 2 * r * r * out_dim
        per_episode += 2 * 2 * (WAY * QUERIES) * r * m * r * out_dim  # keys + value cross
        if shot > 1:
            per_episode += 2 * WAY * (shot * r) ** 2 * out_dim  # class value Grams
    return Work(per_video, per_episode, (512 * T, D, 2 * max(cardinalities) * out_dim))


def hyrsm_work(shot: int) -> Work:
    """Encode: qkv/out/fusion-frame projections per frame, token projections; match: the
    fusion's token half on ``way + 1`` adapted tokens per query."""
    per_video = 2 * T * D * D * 5 + 2 * D * D * 4
    per_episode = 2 * WAY * QUERIES * (WAY + 1) * D * D
    return Work(per_video, per_episode, (500 * WAY * QUERIES * (WAY + 1), D, D))


def plain_matmul_gflops(shape: tuple[int, int, int], repeats: int = 3) -> float:
    """Best-of GFLOP/s of ``torch.matmul`` on ``[m, k] @ [k, n]`` float32."""
    m, k, n = shape
    a, b = torch.rand(m, k), torch.rand(k, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


def _row(name: str, shot: int, episodes: int, features: torch.Tensor, work: Work) -> list:
    method = fb.create_method(name, feature_dim=D, seq_len=T).eval()
    classes = np.repeat(np.arange(CLASSES), VIDEOS // CLASSES)
    manifest = fb.make_manifest(
        classes, way=WAY, shot=shot, queries=QUERIES, episodes=episodes, seed=shot
    )
    store, device, unique, position = prepare_pool(method, features, manifest, None)
    t0 = time.perf_counter()
    state = encode_videos(method, store, unique)
    encode_s = time.perf_counter() - t0
    batch = fit_batch(
        state, len(unique), manifest, 500, default_batch_bytes(device), method.support_means
    )
    predict = make_predictor(method, state, position, manifest, device, False)
    t0 = time.perf_counter()
    predicted = np.concatenate(
        [predict(lo, min(lo + batch, episodes)) for lo in range(0, episodes, batch)]
    )
    match_s = time.perf_counter() - t0
    result = summarise_predictions(predicted, manifest, "normal", encode_s + match_s)
    seconds = encode_s + match_s * TARGET_EPISODES / episodes
    n_videos = len(manifest.unique_videos())
    flops = work.per_video * n_videos + work.per_episode * episodes
    return [
        name,
        shot,
        f"{seconds:.1f}",
        f"{TARGETS[(name, shot)]:.0f}",
        f"{encode_s:.1f}",
        f"{match_s * 1e3 / episodes:.2f}",
        f"{flops / result.seconds / 1e9:.1f}",
        f"{plain_matmul_gflops(work.shape):.1f}",
        "x".join(map(str, work.shape)),
        f"{result.accuracy:.1f}",
    ]


def main(episodes: int | None = None) -> None:
    episodes = episodes or int(os.environ.get("BENCH_TRX_HYRSM_EPISODES", "1000"))
    torch.set_num_threads(2)
    torch.manual_seed(0)
    features = torch.rand(VIDEOS, T, D)
    rows = []
    for name, work_of in (("hyrsm", hyrsm_work), ("trx", trx_work)):
        for shot in (1, 5):
            rows.append(_row(name, shot, episodes, features, work_of(shot)))
            print(" | ".join(map(str, rows[-1])), flush=True)
    scaled = "" if episodes == TARGET_EPISODES else f" (match timed on {episodes}, scaled)"
    print(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(
        tabulate(
            rows,
            headers=[
                "head",
                "shot",
                f"s / {TARGET_EPISODES:,} ep{scaled}",
                "target s",
                "encode s",
                "match ms/ep",
                "head GFLOP/s",
                "matmul GFLOP/s",
                "matmul shape",
                "acc %",
            ],
        )
    )


if __name__ == "__main__":
    main()
