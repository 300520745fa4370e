"""The evaluator's own cost: 10,000 5-way 1-shot episodes over 2,400 videos (T=8, D=2048)
with a trivial method (mean-pooled prototypes). Target: under 2 s on 2 CPU cores, without
materialising every episode's raw features (that gather alone would be 6.5 GB)."""

from __future__ import annotations

import torch

import fsarbench as fb
from benchmarks.common import feature_pool, peak_rss_mib, timed


def main() -> None:
    torch.set_num_threads(2)
    feats, classes = feature_pool()
    base_rss = peak_rss_mib()
    method = fb.create_method("protonet", feature_dim=2048, seq_len=8)
    t_manifest, manifest = timed(lambda: fb.make_manifest(classes, way=5, shot=1, episodes=10_000))
    t_eval, result = timed(lambda: fb.evaluate(method, feats, manifest, progress=False), repeat=3)
    gather_gb = 10_000 * 10 * 8 * 2048 * 4 / 1e9
    rows = [
        ("manifest (10,000 episodes)", f"{t_manifest:.2f} s"),
        ("evaluate (encode 2,400 + match 10,000)", f"{t_eval:.2f} s  (target < 2 s)"),
        ("manifest + evaluate", f"{t_manifest + t_eval:.2f} s"),
        (
            "peak RSS above the feature pool",
            f"{peak_rss_mib() - base_rss:.0f} MiB (a full raw gather would be {gather_gb:.1f} GB)",
        ),
        ("accuracy (random features)", f"{result}"),
    ]
    for name, value in rows:
        print(f"{name:<42} {value}")
