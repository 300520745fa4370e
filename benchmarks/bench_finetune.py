"""Finetune on the CPU: time of one training episode (forward + backward) and the bytes of
activations kept for backward, plain vs chunked vs checkpointed backbone; then where the
training loop's step time goes (waiting for clips, forward, backward, optimiser) on a tiny
generated ``synth`` dataset decoded by DataLoader workers, as ``train`` prints it.

With ``--device cuda`` both run on the GPU (bf16 autocast, channels-last, pinned clips copied
one micro-batch ahead) at a GPU user's size: ResNet-50 at 224 px, 4 episodes per step, one
decode worker per spare CPU core (at most 12); the step breakdown then shows whether decoding
starves the GPU ("data" is the time the step waited for its clips)."""

from __future__ import annotations

import os
import tempfile

import torch
from tabulate import tabulate

from benchmarks.common import bench_device, synchronize, timed
from fsarbench.distributed.precision import select_precision
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
    with _SavedBytes() as saved, model.precision.autocast():
        feats = model.features(clips)
    feats.float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    synchronize(clips.device)
    return saved.total


def _size(device: torch.device) -> dict[str, object]:
    """Backbone, crop, episodes per step, decode workers and steps measured on ``device``."""
    if device.type == "cuda":
        workers = max(2, min(12, (os.cpu_count() or 4) - 2))
        return {"backbone": "resnet50", "crop": 224, "episodes": 4, "workers": workers, "steps": 8}
    return {"backbone": "resnet18", "crop": CROP, "episodes": 2, "workers": 2, "steps": 3}


def step_breakdown(device: torch.device | None = None) -> dict[str, float]:
    """Mean seconds per step by phase of a short finetune run (ProtoNet, 8 frames, five-way
    1-shot episodes; :func:`_size` of ``device``) on a generated synth dataset."""
    device = device or torch.device("cpu")
    size = _size(device)
    steps, workers, crop = size["steps"], size["workers"], size["crop"]
    from fsarbench.data.datasets import get_dataset
    from fsarbench.data.synth import SynthConfig
    from fsarbench.training.finetune import ClipSplit, finetune, finetune_recipe

    over = {
        "recipe": {
            "steps": steps,
            "episodes_per_step": size["episodes"],
            "micro_batch": 1,
            "way": WAY,
        },
        "options": {"backbone": size["backbone"], "weights": "none", "frames": FRAMES},
    }
    over["options"].update({"resize": crop * 9 // 8, "crop": crop, "workers": workers})
    over["recipe"].update({"shot": SHOT, "queries": QUERIES, "val_episodes": 0})
    with tempfile.TemporaryDirectory() as tmp:
        config = SynthConfig(videos_per_class=6, size=80, min_frames=12, max_frames=16)
        ds = get_dataset("synth", root=tmp, config=config)
        recipe = finetune_recipe("protonet", "synth", over)
        model = build_video_method("protonet", recipe.options, device)
        split = ClipSplit(ds.videos("train"), ds.variant, ds.flip_ok)
        result = finetune(
            model, split, None, recipe, device=device, progress=False, step_timing=True
        )
    return result.step_times


def main() -> None:
    device = bench_device()
    size = _size(device)
    crop = size["crop"]
    n = WAY * (SHOT + QUERIES)
    clips = torch.randn(n, FRAMES, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    clips = clips.to(device)
    rows, base = [], None
    settings = [  # bn: train (the default) normalises whole support and query sets: no chunks
        ("plain", {}),
        ("checkpoint", {"checkpoint_backbone": True}),
        ("bn=frozen frame_chunk=16", {"bn": "frozen", "frame_chunk": 16}),
        (
            "bn=frozen checkpoint + frame_chunk=16",
            {"bn": "frozen", "frame_chunk": 16, "checkpoint_backbone": True},
        ),
    ]
    for label, opts in settings:
        options = FinetuneOptions(backbone=size["backbone"], weights="none", frames=FRAMES, **opts)
        model = build_video_method("protonet", options, device).train()
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
        del model
    where = (
        f"{torch.cuda.get_device_name(device)}, {select_precision(device).name} autocast"
        if device.type == "cuda"
        else f"fp32 on {torch.get_num_threads()} CPU thread(s)"
    )
    print(f"{size['backbone']}, {n} videos x {FRAMES} frames at {crop} px, {where}; best of 3")
    print(
        tabulate(
            rows, ["backbone", "s / episode", "x plain", "saved MiB", "x plain"], tablefmt="github"
        )
    )
    per = step_breakdown(device)
    print(
        f"\nTraining loop step breakdown (ProtoNet + {size['backbone']}, {size['episodes']} x "
        f"{WAY}-way {SHOT}-shot episodes of {FRAMES} frames at {crop} px per step, "
        f"{size['workers']} decode workers, {size['steps']} steps), ms per step:"
    )
    rows = [[k, f"{1e3 * per[k]:.0f}", f"{100 * per[k] / per['total']:.0f}%"] for k in PHASES]
    rows += [["other", f"{1e3 * per['other']:.0f}", ""], ["total", f"{1e3 * per['total']:.0f}", ""]]
    print(tabulate(rows, ["phase", "ms / step", "share"], tablefmt="github"))
    if per["data"] > 0.2 * per["total"]:
        print(
            f"waiting for clips is {100 * per['data'] / per['total']:.0f}% of the step: decoding "
            "starves the model; raise --option workers=N or lower the decode cost"
        )
