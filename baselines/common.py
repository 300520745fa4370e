"""Pieces several heads share: class means over an arbitrary support order (from the core,
where the evaluator's pair tables use them too)."""

from __future__ import annotations

from fsarbench.pairs import class_mean, one_hot_weights

__all__ = ["class_mean", "one_hot_weights"]
