"""Rendering of the synthetic benchmark's frames (pure numpy, ``uint8 [H, W, 3]``).

Atomic actions are large coloured objects that differ in colour, shape, texture and motion,
because features come from a CNN with global average pooling (position is pooled away). A
video is a sequence of segments; each segment shows one atomic action (or an overlay of two:
the ambiguous middle of composite classes) over a background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ACTIONS", "Action", "Segment", "render_video", "scene_background", "neutral_background"]


@dataclass(frozen=True)
class Action:
    """An atomic action: an object of ``colour`` (RGB 0-255), ``shape`` and ``texture``
    doing ``motion`` over its segment."""

    name: str
    colour: tuple[int, int, int]
    shape: str  # disc, square, ring, cross, diamond, bar
    texture: str  # solid, hstripes, vstripes, checker
    motion: str  # right, left, up, down, grow, shrink, pulse, spin


ACTIONS: tuple[Action, ...] = (
    Action("red-disc-right", (230, 40, 40), "disc", "solid", "right"),
    Action("green-square-grow", (40, 200, 60), "square", "solid", "grow"),
    Action("blue-ring-down", (40, 70, 230), "ring", "solid", "down"),
    Action("yellow-cross-shrink", (240, 220, 30), "cross", "solid", "shrink"),
    Action("magenta-square-left", (220, 40, 210), "square", "hstripes", "left"),
    Action("cyan-disc-pulse", (30, 220, 230), "disc", "checker", "pulse"),
    Action("orange-diamond-up", (250, 140, 20), "diamond", "solid", "up"),
    Action("white-bar-spin", (245, 245, 245), "bar", "vstripes", "spin"),
    Action("black-disc-grow", (15, 15, 15), "disc", "solid", "grow"),
    Action("purple-ring-right", (120, 30, 170), "ring", "checker", "right"),
    Action("lime-cross-pulse", (160, 250, 60), "cross", "hstripes", "pulse"),
    Action("brown-square-down", (130, 80, 30), "square", "checker", "down"),
)


@dataclass(frozen=True)
class Segment:
    """``actions`` (one, or two overlaid at half opacity) shown for ``length`` frames."""

    actions: tuple[int, ...]
    length: int


@dataclass(frozen=True)
class Jitter:
    """Per-video variation: colour gain, object scale, centre offset, speed, noise."""

    gain: np.ndarray  # [3]
    scale: float
    offset: tuple[float, float]
    speed: float
    noise: float
    brightness: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Jitter:
        return cls(
            gain=rng.uniform(0.85, 1.15, 3),
            scale=float(rng.uniform(0.85, 1.15)),
            offset=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08))),
            speed=float(rng.uniform(0.7, 1.3)),
            noise=float(rng.uniform(2, 8)),
            brightness=float(rng.uniform(-15, 15)),
        )


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``[size, size]`` in ``[-1, 1]`` (y, x)."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    return np.meshgrid(c, c, indexing="ij")


def _pose(motion: str, p: float, j: Jitter) -> tuple[float, float, float, float]:
    """(centre y, centre x, radius, angle) of an object at segment progress ``p`` in [0,1]."""
    q = min(1.0, p * j.speed)
    cy, cx, r, ang = j.offset[0], j.offset[1], 0.5 * j.scale, 0.0
    shift = 0.5 * (q - 0.5)
    moves = {"right": (0, shift), "left": (0, -shift), "up": (-shift, 0), "down": (shift, 0)}
    if motion in moves:
        cy, cx = cy + moves[motion][0], cx + moves[motion][1]
    elif motion == "grow":
        r *= 0.55 + 0.6 * q
    elif motion == "shrink":
        r *= 1.15 - 0.6 * q
    elif motion == "pulse":
        r *= 0.85 + 0.25 * np.sin(2 * np.pi * 2 * q)
    elif motion == "spin":
        ang = np.pi * q
    return cy, cx, r, ang


def _mask(shape: str, y: np.ndarray, x: np.ndarray, r: float) -> np.ndarray:
    """Boolean ``[H, W]`` of a shape of radius ``r`` centred at the origin of (y, x)."""
    d = np.sqrt(y**2 + x**2)
    masks = {
        "disc": lambda: d < r,
        "square": lambda: np.maximum(abs(y), abs(x)) < 0.8 * r,
        "ring": lambda: (d < r) & (d > 0.55 * r),
        "cross": lambda: (np.minimum(abs(y), abs(x)) < 0.3 * r) & (np.maximum(abs(y), abs(x)) < r),
        "diamond": lambda: abs(y) + abs(x) < 1.1 * r,
        "bar": lambda: (abs(y) < 0.35 * r) & (abs(x) < 1.2 * r),
    }
    return masks[shape]()


def _texture(texture: str, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Multiplier ``[H, W]`` in (0, 1] patterning the object's colour."""
    k = 6 * np.pi
    patterns = {
        "solid": lambda: np.ones_like(y),
        "hstripes": lambda: 0.55 + 0.45 * (np.sin(k * y) > 0),
        "vstripes": lambda: 0.55 + 0.45 * (np.sin(k * x) > 0),
        "checker": lambda: 0.55 + 0.45 * ((np.sin(k * y) > 0) ^ (np.sin(k * x) > 0)),
    }
    return patterns[texture]()


def _draw(frame: np.ndarray, a: Action, p: float, j: Jitter, alpha: float) -> None:
    """Composite action ``a`` at progress ``p`` onto ``frame`` (float [H, W, 3]) in place."""
    gy, gx = _grid(frame.shape[0])
    cy, cx, r, ang = _pose(a.motion, p, j)
    y, x = gy - cy, gx - cx
    if ang:
        y, x = np.cos(ang) * y - np.sin(ang) * x, np.sin(ang) * y + np.cos(ang) * x
    m = _mask(a.shape, y, x, r)
    colour = np.clip(np.asarray(a.colour) * j.gain, 0, 255)
    obj = colour[None, None, :] * _texture(a.texture, y, x)[..., None]
    frame[m] = (1 - alpha) * frame[m] + alpha * obj[m]


def scene_background(
    size: int, hue: np.ndarray, pattern: str, freq: float, rng: np.random.Generator
) -> np.ndarray:
    """A class's scene: colour ``hue`` (RGB) modulated by a stripe/ring/checker ``pattern``."""
    gy, gx = _grid(size)
    phase = rng.uniform(0, 2 * np.pi)
    waves = {
        "diag": np.sin(freq * (gy + gx) + phase),
        "rings": np.sin(freq * np.sqrt(gy**2 + gx**2) * 2 + phase),
        "checker": np.sign(np.sin(freq * gy + phase) * np.sin(freq * gx)),
        "gradient": gy + 0.3 * np.sin(freq * gx + phase),
    }
    shade = 0.75 + 0.25 * waves[pattern]
    gain = rng.uniform(0.9, 1.1, 3)
    return np.clip(hue[None, None, :] * gain * shade[..., None], 0, 255)


def neutral_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Grey with soft random blotches, the same distribution for every temporal class."""
    gy, gx = _grid(size)
    level = rng.uniform(105, 150)
    blot = sum(
        np.sin(rng.uniform(1, 4) * gy + rng.uniform(0, 6))
        * np.sin(rng.uniform(1, 4) * gx + rng.uniform(0, 6))
        for _ in range(3)
    )
    grey = level + 12 * blot
    return np.repeat(grey[..., None], 3, axis=2)


def render_video(
    background: np.ndarray, segments: list[Segment], rng: np.random.Generator
) -> np.ndarray:
    """``uint8 [sum(lengths), H, W, 3]``: each segment's actions over ``background``."""
    frames = []
    jitters = {a: Jitter.draw(rng) for s in segments for a in s.actions}
    base_jitter = Jitter.draw(rng)
    for seg in segments:
        alpha = 1.0 if len(seg.actions) == 1 else 0.55
        for t in range(seg.length):
            p = t / max(1, seg.length - 1)
            frame = background.copy()
            for a in seg.actions:
                _draw(frame, ACTIONS[a], p, jitters[a], alpha)
            frame += base_jitter.brightness + rng.normal(0, base_jitter.noise, frame.shape)
            frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(frames)
