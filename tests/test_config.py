from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from fsarbench.config import ConfigError, build_config, config_to_dict, load_config


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10


@dataclass
class Outer:
    name: str = "x"
    shots: tuple[int, ...] = (1, 5)
    inner: Inner = field(default_factory=Inner)
    maybe: int | None = None


def test_nested_and_coercion():
    cfg = build_config(Outer, {"inner": {"lr": 1, "steps": 3}, "shots": [1, 3], "maybe": 2})
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.shots == (1, 3)
    assert config_to_dict(cfg)["shots"] == [1, 3]


def test_unknown_nested_key_names_nearest():
    with pytest.raises(
        ConfigError, match=r"unknown key 'stpes' in Outer.inner. Did you mean 'steps'"
    ):
        build_config(Outer, {"inner": {"stpes": 3}})


def test_wrong_type():
    with pytest.raises(ConfigError, match="expected int"):
        build_config(Inner, {"steps": "many"})
    with pytest.raises(ConfigError, match="expected an integer"):
        build_config(Inner, {"steps": True})


def test_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: y\ninner:\n  lr: 0.5\n")
    assert load_config(Outer, p).inner.lr == 0.5
    p.write_text("nmae: y\n")
    with pytest.raises(ConfigError, match="Did you mean 'name'"):
        load_config(Outer, p)
    p.write_text("- a\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Outer, p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")
