"""Finetune on the CPU: time of one training episode (forward + backward) and the bytes of
activations kept for backward, plain vs chunked vs checkpointed backbone; then where the
training loop's step time goes (waiting for clips, forward, backward, optimiser) on a tiny
generated ``synth`` dataset decoded by DataLoader workers, as ``train`` prints it."""

from __future__ import annotations

import tempfile

import torch
from tabulate import tabulate

from benchmarks.common import timed
from fsarbench.training.finetune import FinetuneOptions, build_video_method
from fsarbench.training.timing import PHASES

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


def step_breakdown(steps: int = 3, workers: int = 2) -> dict[str, float]:
    """Mean seconds per step by phase of a short finetune run (ProtoNet, ResNet-18 at 64 px,
    8 frames, 2 five-way 1-shot episodes per step) on a generated synth dataset."""
    from fsarbench.data.datasets import get_dataset
    from fsarbench.data.synth import SynthConfig
    from fsarbench.training.finetune import ClipSplit, finetune, finetune_recipe

    over = {
        "recipe": {"steps": steps, "episodes_per_step": 2, "micro_batch": 1, "way": WAY},
        "options": {"backbone": "resnet18", "weights": "none", "frames": FRAMES},
    }
    over["options"].update({"resize": 72, "crop": CROP, "workers": workers})
    over["recipe"].update({"shot": SHOT, "queries": QUERIES, "val_episodes": 0})
    with tempfile.TemporaryDirectory() as tmp:
        config = SynthConfig(videos_per_class=6, size=80, min_frames=12, max_frames=16)
        ds = get_dataset("synth", root=tmp, config=config)
        recipe = finetune_recipe("protonet", "synth", over)
        model = build_video_method("protonet", recipe.options, torch.device("cpu"))
        split = ClipSplit(ds.videos("train"), ds.variant, ds.flip_ok)
        result = finetune(model, split, None, recipe, progress=False, step_timing=True)
    return result.step_times


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
    per = step_breakdown()
    print(
        f"\nTraining loop step breakdown (ProtoNet + ResNet-18, 2 x {WAY}-way {SHOT}-shot "
        f"episodes of {FRAMES} frames at {CROP} px per step, 2 decode workers), ms per step:"
    )
    rows = [[k, f"{1e3 * per[k]:.0f}", f"{100 * per[k] / per['total']:.0f}%"] for k in PHASES]
    rows += [["other", f"{1e3 * per['other']:.0f}", ""], ["total", f"{1e3 * per['total']:.0f}", ""]]
    print(tabulate(rows, ["phase", "ms / step", "share"], tablefmt="github"))
