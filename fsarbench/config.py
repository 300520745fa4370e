"""Typed configs: dataclasses built from dicts or YAML, unknown keys rejected by name."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["ConfigError", "build_config", "load_config", "config_to_dict", "nearest"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message says what to write instead."""


def nearest(name: str, candidates: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """Valid names closest to ``name``, best first (difflib ratio), then the rest."""
    close = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.4)
    return close


def _unknown_key_message(key: str, valid: list[str], where: str) -> str:
    close = nearest(key, valid)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r} in {where}.{hint} Valid keys: {', '.join(sorted(valid))}"


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(value, Mapping):
        return build_config(annotation, value, where=where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (ConfigError, TypeError, ValueError):
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {annotation}")
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        inner = args[0] if args else Any
        return origin(_coerce(v, inner, where) for v in value)
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation in (int, str, bool) and not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    if origin is typing.Literal and value not in args:
        raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
    return value


def build_config(cls: type[T], values: Mapping[str, Any] | None = None, *, where: str = "") -> T:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys with the nearest valid one.

    Nested dataclass fields accept nested mappings; values are checked against simple
    annotations (int, float, str, bool, Literal, Optional, tuple/list).
    """
    values = dict(values or {})
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in values:
        if key not in fields:
            raise ConfigError(_unknown_key_message(key, list(fields), where))
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def load_config(cls: type[T], path: str | Path, overrides: Mapping[str, Any] | None = None) -> T:
    """Load a YAML file into dataclass ``cls``; ``overrides`` win over the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    data = {**data, **(overrides or {})}
    return build_config(cls, data, where=str(path))


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain, JSON-friendly data."""
    if dataclasses.is_dataclass(config):
        return {k: _plain(v) for k, v in dataclasses.asdict(config).items()}
    return dict(config)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
