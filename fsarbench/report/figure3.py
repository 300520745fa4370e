"""Figure 3 of the seed paper from finetune checkpoints: one test video's frames boxed as
salient / non-salient / ambiguous by SGTM's actionness (eq. 2), the actionness curve, and
Grad-CAM maps of the backbone's last stage for SGTM and a comparison model side by side.

Grad-CAM needs a scalar per model: for a head with a saliency classifier (SGTM) it is the
video's summed pre-sigmoid actionness ``Σ_t Σ_c A`` — the quantity the masks rank by; for a
head without one (e.g. OTAM) it is the summed L2 norm of the frame features the matcher
compares (what the backbone puts weight on), since a few-shot head has no class score
without a support set.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fsarbench.training.video_method import VideoMethod

__all__ = [
    "load_finetune_model",
    "grad_cam",
    "saliency_groups",
    "plot_figure3",
    "shown_frames",
    "window_note",
]

#: The paper's colours (Fig. 3): blue salient, green non-salient, red ambiguous; frames a
#: strategy other than SGTM's leaves visible are "visible" (grey).
COLOURS = {
    "salient": "tab:blue",
    "non-salient": "tab:green",
    "ambiguous": "tab:red",
    "visible": "tab:gray",
    "masked": "tab:purple",
}


def load_finetune_model(path: str | Path) -> VideoMethod:
    """The :class:`VideoMethod` of a finetune checkpoint (``best.pt``/``last.pt``)."""
    from fsarbench.report.records import base_method_of
    from fsarbench.training.finetune import build_video_method
    from fsarbench.training.finetune_recipe import checkpoint_options
    from fsarbench.training.loop import load_checkpoint

    data = load_checkpoint(path)  # CheckpointError names an unreadable or foreign file
    recipe = data.get("recipe") or {}
    if "options" not in recipe or not isinstance(data.get("method"), dict):
        raise ValueError(f"{path} is not a finetune checkpoint (no backbone options/weights)")
    options = checkpoint_options(recipe["options"], where=str(path))
    name = base_method_of(str((data.get("fingerprint") or {}).get("method", "")))
    if not name:
        raise ValueError(f"{path} does not name its method (no fingerprint)")
    model = build_video_method(
        name,
        replace(options, weights="none"),  # the checkpoint's weights replace these
        torch.device("cpu"),
        num_train_classes=data.get("num_train_classes"),
        hparams=data.get("hparams") or {},
    )
    model.load_state_dict(data["method"])
    model.method_label = name
    return model.eval()


def _score(model: VideoMethod, feats: Tensor) -> Tensor:
    saliency = getattr(model.inner, "saliency", None)
    if saliency is not None:
        return saliency.actionness_logits(feats[None]).sum()
    return feats.norm(dim=-1).sum()


def grad_cam(model: VideoMethod, clip: Tensor) -> Tensor:
    """``clip [T, 3, H, W]`` (normalised) -> Grad-CAM ``[T, H, W]`` in [0, 1] per frame, on
    the backbone's ``layer4`` (torchvision ResNets)."""
    trunk = model.backbone.trunk
    if not hasattr(trunk, "layer4"):
        raise ValueError("Grad-CAM needs a ResNet backbone (a 'layer4' stage)")
    saved: dict[str, Tensor] = {}
    hook = trunk.layer4.register_forward_hook(lambda _m, _i, out: saved.__setitem__("a", out))
    try:
        with torch.enable_grad():
            feats = model.backbone(clip).float()  # [T, D]
            (grads,) = torch.autograd.grad(_score(model, feats), saved["a"])
    finally:
        hook.remove()
    weights = grads.mean((2, 3), keepdim=True)
    cam = F.relu((weights * saved["a"]).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=clip.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)
    return cam / peak[:, None, None]


def saliency_groups(logits: Tensor, masked: Tensor, strategy: str = "saliency") -> list[str]:
    """Each frame's group from the frames the model masks, ``masked [T]`` (bool), and the
    saliency ranks of ``logits [T]`` (``Σ_c A``). Under SGTM's own strategy a masked frame
    is ``salient`` in the upper half of the ranks, ``non-salient`` in the lower, and an
    unmasked one ``ambiguous``; under the ``top``/``bottom``/``middle`` variants the masked
    frames are ``salient``/``non-salient``/``masked`` and the rest ``visible``. Figure 3 boxed
    ``max(1, n // 2)`` top and bottom frames whatever the model masked (at n = 3 it left a
    masked frame out; for the top-4 variant it boxed two frames it never masks)."""
    order = torch.sort(logits, descending=True, stable=True).indices.tolist()
    rank = {t: r for r, t in enumerate(order)}
    if strategy != "saliency":  # one group masked: the most, least or middle salient
        group = {"top": "salient", "bottom": "non-salient"}.get(strategy, "masked")
        return [group if bool(masked[t]) else "visible" for t in range(len(order))]
    half = len(order) / 2
    return [
        ("salient" if rank[t] < half else "non-salient") if bool(masked[t]) else "ambiguous"
        for t in range(len(order))
    ]


def shown_frames(record, options) -> list[int]:
    """The video frames the test clip of ``record`` shows, as
    :class:`~fsarbench.training.clip_data.ClipStore` samples them (seed 0, epoch 0, view 0)
    under finetune ``options``."""
    from functools import partial

    from fsarbench.data.decode import read_clip
    from fsarbench.data.sampling import frame_rng, sample_frames

    rng = frame_rng(0, record.video_id, 0, 0)
    choose = partial(
        sample_frames,
        options.test_sampler,
        T=options.frames,
        train=False,
        rng=rng,
        short=options.short,
    )
    return [int(i) for i in read_clip(record.path, choose)[1]]


def window_note(inside: list[bool], groups: list[str]) -> str:
    """What the planted action window says of the saliency: how many shown frames lie in it
    and how many of the frames SGTM calls salient (``groups``) are among them."""
    salient = [j for j, g in enumerate(groups) if g == "salient"]
    hits = sum(inside[j] for j in salient)
    return (
        f"planted action window: {sum(inside)} of {len(inside)} shown frames; "
        f"{hits} of the {len(salient)} salient frames inside"
    )


def _pixels(clip: Tensor, norm: str) -> np.ndarray:
    from fsarbench.data.transforms import NORMS

    x = clip.clone()
    stats = NORMS[norm]
    if stats is not None:
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in stats)
        x = x * std + mean
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def plot_figure3(
    sgtm: VideoMethod,
    others: list[VideoMethod],
    clip: Tensor,
    title: str,
    window: list[bool] | None = None,
):
    """The figure (matplotlib) for ``clip [T, 3, H, W]``: frames with saliency boxes, the
    actionness curve, then one row of Grad-CAM overlays per model (SGTM first). ``window``
    (``[T]``, a ``synth-planted`` video's): which frames show its planted action, shaded on
    the curve and named under the title, the known answer the saliency is to find."""
    from fsarbench.report.figures import pyplot

    plt = pyplot()

    if getattr(sgtm.inner, "saliency", None) is None:
        raise ValueError("the first checkpoint must be an SGTM model (it has no Φ_cls)")
    with torch.no_grad():
        feats = sgtm.features(clip[None])  # [1, T, D]
        logits = sgtm.inner.actionness_logits(feats)[0]
        strategy = sgtm.inner.strategy
        if strategy is None or not strategy.needs_saliency:
            raise ValueError(
                "the first checkpoint's SGTM variant masks no frames by saliency (mask "
                f"{sgtm.inner.config.mask!r}): Figure 3 shows the frames a saliency mask picks"
            )
        masked = sgtm.inner.frame_mask(feats)[0]
    groups = saliency_groups(logits, masked, strategy.name)
    models = [sgtm, *others]
    cams = [grad_cam(m, clip) for m in models]
    t = clip.shape[0]
    pixels = _pixels(clip, sgtm.options.norm)
    fig = plt.figure(figsize=(1.6 * t, 1.7 * (len(models) + 2)))
    grid = fig.add_gridspec(len(models) + 2, t, height_ratios=[1, 0.8] + [1] * len(models))
    for j in range(t):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(pixels[j])
        ax.set_xticks([]), ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(COLOURS[groups[j]])
            spine.set_linewidth(3)
        mark = " (window)" if window is not None and window[j] else ""
        ax.set_title(f"t={j}: {groups[j]}{mark}", fontsize=7, color=COLOURS[groups[j]])
    curve = fig.add_subplot(grid[1, :])
    for j in [j for j in range(t) if window is not None and window[j]]:
        curve.axvspan(j - 0.5, j + 0.5, color="gold", alpha=0.3, lw=0)
    curve.plot(range(t), torch.sigmoid(logits).numpy(), marker="o", color="black")
    curve.set(xlim=(-0.5, t - 0.5), ylabel="actionness", xticks=range(t))
    curve.set_ylim(-0.05, 1.05)
    for row, (model, cam) in enumerate(zip(models, cams), start=2):
        for j in range(t):
            ax = fig.add_subplot(grid[row, j])
            ax.imshow(pixels[j])
            ax.imshow(cam[j].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(getattr(model, "method_label", "model"), fontsize=8)
    n = int(masked.sum())
    lines = [title, f"mask {strategy.name!r}: {n} of {t} frames masked"]
    if window is not None:
        lines.append(window_note(window, groups) + " (shaded)")
    fig.suptitle("\n".join(lines), fontsize=9)
    return fig
