"""HyRSM's colour jitter of training query clips (``AUGMENTATION.SUPPORT_QUERY_DIFF``).

HyRSM's few-shot loader (used by HyRSM and CLIP-FSAR) jitters the colours of every training
query clip with its ``ColorJitter`` and the base config's values: brightness, contrast and
saturation factors drawn from ``[0.5, 1.5]``, a hue shift from ``[-0.25, 0.25]``, one draw per
clip for all its frames (``CONSISTENT: true``), the four applied in a random order, after a
greyscale conversion with probability 0.3 (``GRAY_FIRST``). It works on float pixels in
``[0, 1]`` after the crop and before the mean/std normalisation.

Here the decode workers only draw the parameters (:func:`draw_color_jitter`, from the clip's
own random stream, after its frames, crop and flip: those stay as they were), a small host
tensor per clip, and the model applies them on its device (:func:`apply_color_jitter`) to
the ``uint8`` crop converted to ``[0, 1]``, in float32, with the reference's formulas: no
rounding back to ``uint8`` in between, and no float pixels between processes.

Parameter rows (``float64 [10]``, :data:`PARAMS`): ``on`` (0 leaves the clip as it is),
``gray`` (1: greyscale first), the brightness, contrast, saturation and hue factors, then the
order of the four operations (ids of :data:`OPERATIONS`; -1 for an operation left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ColorJitter",
    "HYRSM_COLOR_JITTER",
    "NO_JITTER",
    "OPERATIONS",
    "PARAMS",
    "apply_color_jitter",
    "draw_color_jitter",
]

#: the four operations, by id, in the order the reference draws their factors
OPERATIONS = ("brightness", "contrast", "saturation", "hue")
#: the columns of a parameter row
PARAMS = ("on", "gray", *OPERATIONS, "first", "second", "third", "fourth")
#: a row that leaves its clip untouched
NO_JITTER = np.array([0, 0, 1, 1, 1, 0, -1, -1, -1, -1], dtype=np.float64)
#: ITU-R 601-2 luma weights, as float32 (the reference's ``rgb_to_grayscale``)
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ColorJitter:
    """The jitter's ranges: brightness, contrast and saturation factors from ``[max(0, 1 -
    x), 1 + x]``, a hue shift from ``[-hue, hue]`` (at most 0.5), greyscale with probability
    ``grayscale``. An operation whose range is a single neutral value is left out, as the
    reference leaves it out."""

    brightness: float = 0.5
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.25
    grayscale: float = 0.3

    def __post_init__(self) -> None:
        for name in (*OPERATIONS, "grayscale"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"colour jitter {name} = {value!r} must be a number >= 0")
        if self.hue > 0.5:
            raise ValueError(f"colour jitter hue = {self.hue!r} must be at most 0.5")
        if self.grayscale > 1:
            raise ValueError(f"colour jitter grayscale = {self.grayscale!r} is a probability")

    def ranges(self) -> list[tuple[float, float] | None]:
        """``(low, high)`` per operation of :data:`OPERATIONS`, ``None`` where left out."""
        out: list[tuple[float, float] | None] = []
        for name in OPERATIONS[:3]:
            x = getattr(self, name)
            out.append((max(0.0, 1.0 - x), 1.0 + x) if x else None)
        out.append((-self.hue, self.hue) if self.hue else None)
        return out


#: HyRSM's base-config values (``configs/pool/run/training/finetune.yaml``'s AUGMENTATION)
HYRSM_COLOR_JITTER = ColorJitter()


def draw_color_jitter(
    rng: np.random.Generator, jitter: ColorJitter = HYRSM_COLOR_JITTER
) -> np.ndarray:
    """One clip's parameter row ``float64 [10]``, drawn as the reference draws them: the
    factors in the order of :data:`OPERATIONS`, then their order, then greyscale."""
    row = NO_JITTER.copy()
    row[0] = 1
    present = []
    for op, bounds in enumerate(jitter.ranges()):
        if bounds is not None:
            row[2 + op] = rng.uniform(*bounds)
            present.append(op)
    order = [present[i] for i in rng.permutation(len(present))]
    row[6 : 6 + len(order)] = order
    row[1] = float(rng.random() < jitter.grayscale)
    return row


def apply_color_jitter(clip: Tensor, row: np.ndarray | Tensor) -> Tensor:
    """``clip float [T, 3, H, W]`` in ``[0, 1]`` jittered by one parameter row (on the host);
    the factors are Python floats, as in the reference, so the arithmetic is its own."""
    row = np.asarray(row, dtype=np.float64)
    if row.shape != (len(PARAMS),):
        raise ValueError(f"a colour jitter row has {len(PARAMS)} values, got {row.shape}")
    if not row[0]:
        return clip
    if row[1]:
        clip = _grayscale(clip)
    for op in row[6:]:
        if op >= 0:
            clip = _OPS[int(op)](clip, float(row[2 + int(op)]))
    return clip


def _luma(clip: Tensor) -> Tensor:
    """``[T, 3, H, W]`` -> ``[T, H, W]``, ``0.299 R + 0.587 G + 0.114 B`` in float32."""
    r, g, b = clip.unbind(-3)
    return r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]


def _grayscale(clip: Tensor) -> Tensor:
    return _luma(clip).unsqueeze(-3).expand_as(clip).contiguous()


def _blend(a: Tensor, b: Tensor | float, ratio: float) -> Tensor:
    return (ratio * a + (1 - ratio) * b).clamp(0, 1)


def _brightness(clip: Tensor, factor: float) -> Tensor:
    return _blend(clip, 0.0, factor)


def _contrast(clip: Tensor, factor: float) -> Tensor:
    """Towards each frame's mean grey level."""
    mean = _luma(clip).mean(dim=(-2, -1), keepdim=True).unsqueeze(-3)
    return _blend(clip, mean, factor)


def _saturation(clip: Tensor, factor: float) -> Tensor:
    return _blend(clip, _grayscale(clip), factor)


def _hue(clip: Tensor, shift: float) -> Tensor:
    """Shift the hue cyclically by ``shift`` (a fraction of the colour circle)."""
    h, s, v = _rgb_to_hsv(clip)
    return _hsv_to_rgb((h + shift) % 1.0, s, v)


def _rgb_to_hsv(clip: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r, g, b = clip.unbind(-3)
    maxc, minc = clip.amax(dim=-3), clip.amin(dim=-3)
    equal = maxc == minc
    chroma = maxc - minc
    s = chroma / torch.where(equal, torch.ones_like(maxc), maxc)
    divisor = torch.where(equal, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return h, s, maxc


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    i = sector.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    # per channel, the value of each of the six sectors
    table = torch.stack(
        [
            torch.stack((v, q, p, p, t, v)),
            torch.stack((t, v, v, q, p, p)),
            torch.stack((p, p, t, v, v, q)),
        ]
    )  # [3, 6, T, H, W]
    pick = i.unsqueeze(0).unsqueeze(0).expand(3, 1, *i.shape)
    return table.gather(1, pick).squeeze(1).transpose(0, 1).contiguous()


_OPS = (_brightness, _contrast, _saturation, _hue)
