"""The trainer's multi-tensor optimizers give the per-tensor loop's bits (same numbers)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from torch import nn

from fsarbench.training.loop import make_optimizer
from fsarbench.training.recipe import Recipe


def _train(
    optimizer: torch.optim.Optimizer, model: nn.Module, steps: int = 12
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 24, generator=g)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 40), nn.LayerNorm(40), nn.GELU(), nn.Linear(40, 8))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_foreach_optimizer_equals_the_per_tensor_loop(name):
    recipe = dataclasses.replace(Recipe(), optimizer=name, lr=0.01, weight_decay=5e-4)
    fast_model = _model()
    fast = make_optimizer(recipe, list(fast_model.parameters()))
    assert all(group["foreach"] for group in fast.param_groups)
    slow_model = _model()
    keys = inspect.signature(type(fast)).parameters
    settings = {k: v for k, v in fast.defaults.items() if k in keys}
    slow = type(fast)(slow_model.parameters(), **{**settings, "foreach": False})
    for a, b in zip(_train(fast, fast_model), _train(slow, slow_model)):
        assert torch.equal(a, b)
