"""The contract every registered method must pass, parametrised over the registry (timm style)."""

from __future__ import annotations

import pytest

import fsarbench as fb
from fsarbench.testing.contract import CONTRACT_CHECKS

METHODS = fb.list_methods()


@pytest.mark.parametrize("check", sorted(CONTRACT_CHECKS))
@pytest.mark.parametrize("name", METHODS)
def test_contract(name: str, check: str) -> None:
    CONTRACT_CHECKS[check](name)


def test_registry_is_not_empty() -> None:
    assert "protonet" in METHODS
