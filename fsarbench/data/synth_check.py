"""Does ``synth`` make its point? Random-init ResNet-18 features, two simple matchers.

Decodes the test split through the normal clip pipeline, extracts per-frame features with
``torchvision.models.resnet18(weights=None)`` (global average pooling, fixed torch seed),
and compares on 1-shot episodes drawn from one category at a time:

- ``mean``: cosine of mean-pooled features to each support (order-agnostic, ProtoNet-like);
- ``aligned``: mean over t of the cosine of frame t to support frame t (order-aware);
- ``dtw``: OTAM-like monotone alignment of frame cosines (order-aware, flexible speed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from fsarbench.data.clips import ClipDataset, ClipOptions, make_loader
from fsarbench.data.datasets import VideoRecord
from fsarbench.data.transforms import ClipTransform, TransformConfig
from fsarbench.episodes import make_manifest

__all__ = ["extract_features", "MATCHERS", "episode_accuracy", "check_synth"]


@torch.no_grad()
def extract_features(
    records: Sequence[VideoRecord],
    *,
    frames: int = 8,
    size: int = 112,
    seed: int = 0,
    num_workers: int = 0,
) -> torch.Tensor:
    """``float [N, frames, 512]`` random-init ResNet-18 frame features of ``records``."""
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    net.eval()
    transform = ClipTransform(TransformConfig(size, "square", size, norm="imagenet"))
    ds = ClipDataset(
        records, transform, ClipOptions(frames=frames, sampler="uniform", on_error="raise")
    )
    out = []
    for batch in make_loader(ds, batch_size=16, num_workers=num_workers):
        clips = batch["clip"]  # [B, T, 3, H, W]
        out.append(net(clips.flatten(0, 1)).view(clips.shape[0], frames, -1))
    return torch.cat(out)


def _mean(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """q ``[Q,T,D]``, s ``[S,T,D]`` -> ``[Q,S]`` cosine of mean-pooled features."""
    return F.normalize(q.mean(1), dim=-1) @ F.normalize(s.mean(1), dim=-1).T


def _frame_cos(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``[Q,S,T,T]`` cosine of every query frame with every support frame."""
    qn, sn = F.normalize(q, dim=-1), F.normalize(s, dim=-1)
    return torch.einsum("qtd,sud->qstu", qn, sn)


def _aligned(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return _frame_cos(q, s).diagonal(dim1=-2, dim2=-1).mean(-1)


def _dtw(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Best monotone path (steps right/down/diagonal) of frame cosines, averaged."""
    cos = _frame_cos(q, s)
    T = cos.shape[-1]
    acc = torch.full(cos.shape[:2] + (T + 1, T + 1), -1e9)
    acc[..., 0, 0] = 0
    steps = torch.zeros_like(acc)
    for i in range(1, T + 1):
        for j in range(1, T + 1):
            prev = torch.stack([acc[..., i - 1, j - 1], acc[..., i - 1, j], acc[..., i, j - 1]])
            n = torch.stack([steps[..., i - 1, j - 1], steps[..., i - 1, j], steps[..., i, j - 1]])
            best = (prev / n.clamp(min=1)).argmax(0, keepdim=True)
            acc[..., i, j] = prev.gather(0, best)[0] + cos[..., i - 1, j - 1]
            steps[..., i, j] = n.gather(0, best)[0] + 1
    return acc[..., T, T] / steps[..., T, T]


MATCHERS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mean": _mean,
    "aligned": _aligned,
    "dtw": _dtw,
}


def episode_accuracy(
    features: torch.Tensor, classes: Sequence[int], *, way: int, episodes: int = 300, seed: int = 0
) -> dict[str, float]:
    """Mean 1-shot accuracy (%) of each matcher over ``episodes`` episodes of the pool."""
    m = make_manifest(classes, way=way, shot=1, queries=1, episodes=episodes, seed=seed)
    q = features[torch.as_tensor(m.query)]  # [E, way, T, D]
    s = features[torch.as_tensor(m.support)]  # [E, way, T, D]
    acc = {}
    for name, match in MATCHERS.items():
        per_ep = torch.stack([match(q[e], s[e]) for e in range(m.episodes)])  # [E, Q, S]
        hits = per_ep.argmax(-1) == torch.arange(way)
        acc[name] = 100 * hits.float().mean().item()
    return acc


def check_synth(
    dataset, *, size: int = 112, episodes: int = 300, num_workers: int = 0
) -> dict[str, dict[str, float]]:
    """Accuracy per category (temporal: 5-way; others: as many ways as classes, up to 5)."""
    records = dataset.videos("test")
    feats = extract_features(records, size=size, num_workers=num_workers)
    info = dataset.class_info("test")
    out = {}
    for category in ("temporal", "appearance", "composite"):
        keep = [i for i, r in enumerate(records) if info[r.class_name]["category"] == category]
        classes = [records[i].class_index for i in keep]
        way = min(5, len(set(classes)))
        res = episode_accuracy(feats[keep], classes, way=way, episodes=episodes)
        out[category] = {"way": way, "chance": 100 / way, **res}
    return out
