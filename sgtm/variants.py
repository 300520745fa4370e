"""Registers every SGTM variant with ``fsarbench.register_method`` (the ``sgtm`` entry point).

Main results (Tables 1-2): ``sgtm-otam``, ``sgtm-bimhm``. Table 3's component ladder and
Table 4's mask regions are registered names; the one-hyper-parameter sweeps of Table 5 (λ) and
Figure 4 (masking ratio) are ``(name, overrides)`` rows of the experiment grids
(``fsarbench/experiments/grids.yaml``). Ablation variants are registered with ``variant_of``,
so leaderboard runs over "every method" take only ``sgtm-otam`` and ``sgtm-bimhm``.
"""

from __future__ import annotations

from typing import Any

import fsarbench as fb
from fsarbench_sgtm.config import MEAN_CE_STAGE1
from fsarbench_sgtm.model import SGTM

__all__ = ["VARIANTS", "SGTM"]

#: name -> (hyper-parameter presets, description)
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "sgtm-otam": ({"matcher": "otam"}, "SGTM with OTAM matching (Tables 1-2, 'Ours+OTAM')"),
    "sgtm-bimhm": ({"matcher": "bimhm"}, "SGTM with Bi-MHM matching (Tables 1-2, 'Ours+Bi-MHM')"),
    "sgtm-otam-baseline": (
        {"matcher": "otam", "use_encoder": False, "mask": "none"},
        "Table 3 baseline: 2 matching transformer layers + OTAM, no encoder, no reconstruction",
    ),
    "sgtm-otam-enc": (
        {"matcher": "otam", "mask": "none"},
        "Table 3 row 1: + encoder (2 layers), no mask reconstruction",
    ),
    "sgtm-otam-tml": (
        {"matcher": "otam", "mask": "random"},
        "Table 3 row 2: + temporal mask learning with a random 50% frame mask (TML)",
    ),
    "sgtm-otam-top4": (
        {"matcher": "otam", "mask": "top"},
        "Table 4: mask the frames of highest saliency, as many as sgtm-otam (4 of 8)",
    ),
    "sgtm-otam-bottom4": (
        {"matcher": "otam", "mask": "bottom"},
        "Table 4: mask the frames of lowest saliency, as many as sgtm-otam (4 of 8)",
    ),
    "sgtm-otam-middle4": (
        {"matcher": "otam", "mask": "middle"},
        "Table 4: mask the frames of middle saliency, as many as sgtm-otam (4 of 8)",
    ),
    "sgtm-otam-meance": (
        {"matcher": "otam", **MEAN_CE_STAGE1},
        "SGTM with stage 1 as before issue #16 (time-averaged A, softmax CE): Σ_c A untrained",
    ),
}

MAIN = ("sgtm-otam", "sgtm-bimhm")

for _name, (_presets, _description) in VARIANTS.items():
    _variant_of = None if _name in MAIN else "sgtm-otam"
    fb.register_method(_name, description=_description, variant_of=_variant_of, **_presets)(SGTM)
