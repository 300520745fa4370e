"""Drawing test manifests: numpy's per-episode draws (``EpisodeDrawer``) against the
vectorised draw ``run``, ``eval`` and ``bundle verify`` use (``draw_test_manifest_fast``),
10,000 episodes per setting over a 280-video pool (``synth``'s test split) and a 2,000-video
one (Kinetics-100's). Both give the same episodes (checked here too); the ratio is measured
in this run.
"""

from __future__ import annotations

import time

import numpy as np
from tabulate import tabulate

from fsarbench.episode_streams import draw_test_manifest_fast
from fsarbench.episodes import draw_test_manifest

EPISODES = 10_000
POOLS = {"280 videos, 14 classes": (14, 20), "2,000 videos, 20 classes": (20, 100)}
SETTINGS = ((5, 1), (5, 5), (10, 1))


def _timed(draw, classes: np.ndarray, way: int, shot: int) -> tuple[float, object]:
    args = dict(split_variant="bench", way=way, shot=shot, queries=1, episodes=EPISODES, seed=0)
    t0 = time.perf_counter()
    manifest = draw(classes, **args)
    return time.perf_counter() - t0, manifest


def main() -> None:
    rows = []
    for pool, (n_classes, per_class) in POOLS.items():
        classes = np.repeat(np.arange(n_classes), per_class)
        for way, shot in SETTINGS:
            slow, reference = _timed(draw_test_manifest, classes, way, shot)
            fast, manifest = _timed(draw_test_manifest_fast, classes, way, shot)
            same = manifest.hash == reference.hash
            rows.append(
                [
                    pool,
                    f"{way}-way {shot}-shot",
                    f"{slow:.3f}",
                    f"{fast:.3f}",
                    f"{slow / fast:.0f}x",
                    "yes" if same else "NO",
                ]
            )
    print(
        tabulate(
            rows,
            headers=[
                "pool",
                "setting",
                "per-episode s",
                "vectorised s",
                "speed-up",
                "same episodes",
            ],
        )
    )
    print(f"{EPISODES:,} episodes per manifest, one query per class")


if __name__ == "__main__":
    main()
