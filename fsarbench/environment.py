"""What a result was computed on: float32 results depend on the device, the CPU's instruction
set and the number of intra-op threads (reduction orders), so records carry them."""

from __future__ import annotations

import platform
from typing import Any

import torch

__all__ = ["compute_environment", "cpu_model"]


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compute_environment(
    device: torch.device | str, *, features: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``device`` type and name, torch (and CUDA) version, intra-op threads, CPU; on CUDA
    also whether TF32 matrix products were allowed; ``features``: what the evaluated
    features were extracted with (``features_made_with``, when known)."""
    device = torch.device(device)
    env: dict[str, Any] = {
        "device": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
    }
    if device.type == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    if features:
        env["features_made_with"] = features
    return env
