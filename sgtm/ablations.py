"""The paper's ablation grids as data, for the experiment runner.

``ABLATIONS[table]`` is a list of :class:`Ablation` rows ``(variant, overrides, label)``:
build each with ``fb.create_method(variant, ..., **overrides)``. ``PAPER_RESULTS`` holds the
numbers the paper reports for the same rows (Kinetics unless the key says otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Ablation", "ABLATIONS", "PAPER_RESULTS", "LAMBDAS", "MASK_RATIOS", "MASK_RATIOS_FULL"]


class Ablation(NamedTuple):
    """One row of an ablation: a registered variant, hyper-parameter overrides, a label."""

    variant: str
    overrides: dict[str, Any]
    label: str


#: Table 5's reconstruction-loss weights λ (eq. 8); 0.5 is the default.
LAMBDAS: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
#: Figure 4's four masking ratios (of T = 8 frames); 0.5 is the default.
MASK_RATIOS: tuple[float, ...] = (0.25, 0.375, 0.5, 0.75)
#: Every whole number of masked frames from 1 to 7 of T = 8 (a finer Figure 4).
MASK_RATIOS_FULL: tuple[float, ...] = tuple(i / 8 for i in range(1, 8))


def _sweep(
    key: str, values: tuple[float, ...], default: float, label: Callable[[float], str]
) -> list[Ablation]:
    """Rows of ``sgtm-otam`` over ``values`` of ``key``; the default gets no override, so it
    is the very same model (and cached training) as plain ``sgtm-otam``."""
    return [Ablation("sgtm-otam", {} if v == default else {key: v}, label(v)) for v in values]


# Labels follow ``fsarbench/experiments/grids.yaml`` so records and tables agree.
ABLATIONS: dict[str, list[Ablation]] = {
    "main": [
        Ablation("sgtm-otam", {}, "Ours+OTAM"),
        Ablation("sgtm-bimhm", {}, "Ours+Bi-MHM"),
    ],
    "table3": [
        Ablation("sgtm-otam-baseline", {}, "Baseline"),
        Ablation("sgtm-otam-enc", {}, "1 (+ Encoder)"),
        Ablation("sgtm-otam-tml", {}, "2 (+ Encoder, TML)"),
        Ablation("sgtm-otam", {}, "Ours (+ Encoder, TML, SGTM)"),
    ],
    "table4": [
        Ablation("sgtm-otam-top4", {}, "4 frames with the highest saliency"),
        Ablation("sgtm-otam-bottom4", {}, "4 frames with the lowest saliency"),
        Ablation("sgtm-otam-middle4", {}, "4 frames with saliency in the middle"),
        Ablation("sgtm-otam", {}, "Ours"),
    ],
    "table5": _sweep("lambda_recon", LAMBDAS, 0.5, lambda v: f"λ = {v:g}"),
    "figure4": _sweep("mask_ratio", MASK_RATIOS, 0.5, lambda v: f"{100 * v:.3g}%"),
    "figure4_full": _sweep("mask_ratio", MASK_RATIOS_FULL, 0.5, lambda v: f"{100 * v:.3g}%"),
}

#: Accuracies (%) the paper reports: (table, label) -> {setting: accuracy}.
PAPER_RESULTS: dict[tuple[str, str], dict[str, float]] = {
    ("table3", "Baseline"): {"kinetics_1shot": 74.37, "kinetics_5shot": 86.81},
    ("table3", "1 (+ Encoder)"): {"kinetics_1shot": 74.50, "kinetics_5shot": 86.87},
    ("table3", "2 (+ Encoder, TML)"): {"kinetics_1shot": 74.94, "kinetics_5shot": 87.15},
    ("table3", "Ours (+ Encoder, TML, SGTM)"): {"kinetics_1shot": 75.18, "kinetics_5shot": 87.18},
    ("table4", "4 frames with the highest saliency"): {
        "kinetics_1shot": 75.01,
        "kinetics_5shot": 86.30,
    },
    ("table4", "4 frames with the lowest saliency"): {
        "kinetics_1shot": 74.99,
        "kinetics_5shot": 86.49,
    },
    ("table4", "4 frames with saliency in the middle"): {
        "kinetics_1shot": 74.88,
        "kinetics_5shot": 86.34,
    },
    ("table4", "Ours"): {"kinetics_1shot": 75.18, "kinetics_5shot": 87.18},
    **{
        ("table5", f"λ = {lam:g}"): {"kinetics_1shot": k, "ucf101_1shot": u}
        for lam, k, u in [
            (0.0, 75.05, 87.81),
            (0.1, 75.13, 88.06),
            (0.3, 75.08, 88.09),
            (0.5, 75.18, 88.10),
            (0.7, 74.85, 87.77),
            (0.9, 74.83, 87.58),
        ]
    },
    ("main", "Ours+OTAM"): {
        "kinetics_1shot": 75.2,
        "kinetics_5shot": 87.2,
        "ucf101_1shot": 88.1,
        "ucf101_5shot": 96.1,
        "hmdb51_1shot": 60.9,
        "hmdb51_5shot": 76.3,
        "ssv2_small_1shot": 40.0,
        "ssv2_small_5shot": 56.0,
        "ssv2_full_1shot": 54.1,
        "ssv2_full_5shot": 69.8,
    },
    ("main", "Ours+Bi-MHM"): {
        "kinetics_1shot": 75.6,
        "kinetics_5shot": 87.6,
        "ucf101_1shot": 87.8,
        "ucf101_5shot": 96.0,
        "hmdb51_1shot": 61.5,
        "hmdb51_5shot": 76.0,
        "ssv2_small_1shot": 41.3,
        "ssv2_small_5shot": 57.5,
        "ssv2_full_1shot": 55.4,
        "ssv2_full_5shot": 71.4,
    },
}
