"""Matching heads over 10,000 5-way test episodes: seconds per head and shot.

Pool of 2,400 videos (24 classes x 100), T=8, D=2048 random non-negative float32 features,
eval mode, 2 threads, through ``fsarbench.evaluate``. The frame-similarity GEMM dominates
OTAM and Bi-MHM, so beside each time the table gives the GEMM rate that time implies and the
rate of a plain ``torch.matmul`` of the same total size, measured in the same run. For the
per-video heads it also gives their floor on this machine: that GEMM at the plain-matmul rate
plus the time to gather the episodes' frames (measured alone, at the fastest of the batch
sizes; each the best of as many rounds as the head's time) — what exact float32 arithmetic
cannot go below without visiting fewer (query, support) pairs — and the time's ratio to it.
The batch column is the fastest of ``BATCH_CANDIDATES`` on the first episodes; beside it the
head's own default (``episode_batch``, what ``evaluate`` and ``run`` use when given no batch).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from tabulate import tabulate

import fsarbench as fb

VIDEOS_PER_CLASS, CLASSES, T, D = 100, 24, 8, 2048
WAY, EPISODES = 5, 10_000
HEADS = ("protonet", "otam", "bimhm")
SHOTS = (1, 5)
BATCH_CANDIDATES = (8, 16, 32, 64, 128)
SWEEP_EPISODES = 500
REPEATS = 2
TARGETS = {("otam", 1): 3.0, ("otam", 5): 3.0, ("bimhm", 1): 1.0, ("bimhm", 5): 1.0}


def similarity_flops(head: str, shot: int, episodes: int) -> float:
    """Multiply-adds x 2 of the similarity GEMM over ``episodes`` episodes."""
    if head == "protonet":  # temporal means against class means
        return 2.0 * episodes * WAY * WAY * D
    return 2.0 * episodes * (WAY * T) * (WAY * shot * T) * D


def plain_matmul_gflops(
    total_flops: float, generator: torch.Generator, repeats: int = REPEATS
) -> float:
    """GFLOP/s of repeated ``[4096, D] x [D, 4096]`` matmuls adding up to ``total_flops``,
    the best of ``repeats`` rounds: the floor is what the machine can do, so its least
    disturbed measurement (as the head's time is the best of its runs)."""
    a = torch.rand(4096, D, generator=generator)
    b = torch.rand(D, 4096, generator=generator)
    per_call = 2.0 * 4096 * 4096 * D
    calls = max(1, round(total_flops / per_call))
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return calls * per_call / best / 1e9


def gather_seconds(
    features: torch.Tensor, manifest, batch_episodes: int, repeats: int = REPEATS
) -> float:
    """Wall seconds of the evaluator's gathers alone (:func:`fsarbench.state_gather` into
    reused buffers) for every episode's support and query frames, batch by batch; the best
    of ``repeats`` passes."""
    support = torch.as_tensor(manifest.support)
    query = torch.as_tensor(manifest.query)
    best = float("inf")
    for _ in range(repeats):
        buffers: dict = {}
        t0 = time.perf_counter()
        for start in range(0, len(support), batch_episodes):
            fb.state_gather(features, support[start : start + batch_episodes], buffers, "support")
            fb.state_gather(features, query[start : start + batch_episodes], buffers, "query")
        best = min(best, time.perf_counter() - t0)
    return best


def timed_eval(method, features, manifest, batch_episodes: int) -> tuple[float, float, float]:
    """(wall seconds, process CPU seconds, accuracy) of one full evaluation."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fb.evaluate(method, features, manifest, progress=False, batch_episodes=batch_episodes)
    return time.perf_counter() - t0, time.process_time() - c0, result.accuracy


def best_batch(method, features, manifest) -> int:
    """The ``batch_episodes`` candidate fastest on the first episodes of ``manifest``."""
    head = manifest.select(np.arange(SWEEP_EPISODES))
    times = {b: timed_eval(method, features, head, b)[0] for b in BATCH_CANDIDATES}
    return min(times, key=times.get)


def main(threads: int = 2) -> None:
    """Print the table; ``threads`` is the torch thread count (2 is the reference setting)."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    features = torch.rand(CLASSES * VIDEOS_PER_CLASS, T, D, generator=g)
    video_classes = np.repeat(np.arange(CLASSES), VIDEOS_PER_CLASS)
    rows = []
    for shot in SHOTS:
        manifest = fb.make_manifest(
            video_classes, way=WAY, shot=shot, queries=1, episodes=EPISODES, seed=0, dataset="bench"
        )
        # the gather's floor: its fastest batch (a large batch's gather leaves the cache, and
        # measured at a head's own batch it raised that head's floor)
        gather = min(gather_seconds(features, manifest, b) for b in BATCH_CANDIDATES)
        for head in HEADS:
            method = fb.create_method(head, feature_dim=D, seq_len=T).eval()
            batch = best_batch(method, features, manifest)
            # best of REPEATS full runs: on a shared VM the minimum is the least disturbed
            seconds, cpu, accuracy = min(
                timed_eval(method, features, manifest, batch) for _ in range(REPEATS)
            )
            flops = similarity_flops(head, shot, EPISODES)
            plain = plain_matmul_gflops(flops, g)
            achieved = flops / seconds / 1e9
            floor = ""
            if head != "protonet":
                floor = f"{flops / plain / 1e9 + gather:.2f}"
            target = TARGETS.get((head, shot))
            default = method.preferred_episode_batch("cpu", shot)
            rows.append(
                [
                    head,
                    shot,
                    batch,
                    "" if default is None else default,
                    f"{seconds:.2f}",
                    floor,
                    "" if target is None else f"{target:g}",
                    f"{cpu:.2f}",
                    f"{accuracy:.2f}",
                    f"{flops / 1e9:.1f}",
                    f"{achieved:.1f}",
                    f"{plain:.1f}",
                    f"{achieved / plain:.2f}",
                    "" if not floor else f"{seconds / float(floor):.2f}",
                ]
            )
            print(
                f"  {head} {shot}-shot: {seconds:.2f} s (batch {batch}, "
                f"load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    print(
        tabulate(
            rows,
            headers=[
                "head",
                "shot",
                "batch_episodes",
                "head's default (episode_batch)",
                f"s / {EPISODES:,} eps (best of {REPEATS})",
                "floor s (GEMM at plain rate + gather)",
                "target s",
                "CPU s",
                "acc %",
                "GEMM GFLOP",
                "GEMM GF/s (end-to-end)",
                "plain matmul GF/s",
                "ratio",
                "time / floor (target <= 1.3)",
            ],
        )
    )
    print(
        f"threads={torch.get_num_threads()}, load average now {os.getloadavg()[0]:.1f} "
        "(shared machine: times are noisy)"
    )


if __name__ == "__main__":
    main()
