"""Finetune memory options on the CPU: time of one training episode (forward + backward) and
the bytes of activations kept for backward, plain vs chunked vs checkpointed backbone."""

from __future__ import annotations

import torch
from tabulate import tabulate

from benchmarks.common import timed
from fsarbench.training.finetune import FinetuneOptions, build_video_method

WAY, SHOT, QUERIES, FRAMES, CROP = 5, 1, 2, 8, 64


class _SavedBytes:
    """Counts the bytes autograd saves for backward inside the ``with`` block."""

    def __init__(self) -> None:
        self.total = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        self.total += t.numel() * t.element_size()
        return t

    def __enter__(self) -> _SavedBytes:
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.__exit__(*exc)


def _episode_step(model, clips: torch.Tensor) -> int:
    with _SavedBytes() as saved:
        feats = model.features(clips)
    feats.square().mean().backward()
    model.zero_grad(set_to_none=True)
    return saved.total


def main() -> None:
    n = WAY * (SHOT + QUERIES)
    clips = torch.randn(n, FRAMES, 3, CROP, CROP, generator=torch.Generator().manual_seed(0))
    rows, base = [], None
    settings = [
        ("plain", {}),
        ("frame_chunk=16", {"frame_chunk": 16}),
        ("checkpoint + frame_chunk=16", {"frame_chunk": 16, "checkpoint_backbone": True}),
    ]
    for label, opts in settings:
        options = FinetuneOptions(backbone="resnet18", weights="none", frames=FRAMES, **opts)
        model = build_video_method("protonet", options, torch.device("cpu")).train()
        _episode_step(model, clips)  # warm-up
        seconds, saved = timed(lambda m=model: _episode_step(m, clips), repeat=3)
        base = base or (seconds, saved)
        rows.append(
            [
                label,
                f"{seconds:.3f}",
                f"{seconds / base[0]:.2f}",
                f"{saved / 2**20:.1f}",
                f"{saved / base[1]:.3f}",
            ]
        )
    print(
        f"ResNet-18, {n} videos x {FRAMES} frames at {CROP} px, fp32 on "
        f"{torch.get_num_threads()} CPU thread(s); best of 3"
    )
    print(
        tabulate(
            rows, ["backbone", "s / episode", "x plain", "saved MiB", "x plain"], tablefmt="github"
        )
    )
