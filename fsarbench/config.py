"""Typed configs: dataclasses built from dicts or YAML, unknown keys rejected by name."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "build_config",
    "load_config",
    "load_yaml",
    "config_to_dict",
    "nearest",
    "check_range",
    "check_names",
]

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
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, Mapping):
            return build_config(annotation, value, where=where)
        if not isinstance(value, annotation):  # a raw AttributeError further on, unnamed
            raise ConfigError(
                f"{where}: expected a mapping of {annotation.__name__} keys, got {value!r}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        # a mapping can only mean the one dataclass, a list the one list type: their own errors
        # (a misspelled key deep inside) say more than "does not fit"
        classes = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, Mapping) and len(classes) == 1:
            return build_config(classes[0], value, where=where)
        lists = [a for a in args if typing.get_origin(a) in (list, tuple)]
        if isinstance(value, (list, tuple)) and len(lists) == 1:
            return _coerce(value, lists[0], where)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (ConfigError, TypeError, ValueError):
                continue
        if len(lists) == 1 and len(args) - (type(None) in args) == 1:  # list[X] | None
            raise _not_a_list(where, value, nullable=True)
        raise ConfigError(f"{where}: {value!r} does not fit {annotation}")
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_t, val_t = args if args else (Any, Any)
        return {
            _coerce(k, key_t, where): _coerce(v, val_t, f"{where}.{k}") for k, v in value.items()
        }
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        inner = args[0] if args else Any
        return origin(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (tuple, list) or annotation in (list, tuple):
        raise _not_a_list(where, value)
    if annotation is float:
        number = _as_float(value)
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation in (int, str, bool) and not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    if origin is typing.Literal and value not in args:
        raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
    return value


def _not_a_list(where: str, value: Any, *, nullable: bool = False) -> ConfigError:
    """A list-valued key given one value (``shots: 1``): says how to write a one-item list."""
    one = isinstance(value, (str, int, float)) and not isinstance(value, bool)
    hint = f"; for one item write [{value}]" if one else ""
    return ConfigError(
        f"{where}: expected a list{' (or null)' if nullable else ''}, got {value!r}{hint}"
    )


def _as_float(value: Any) -> float | None:
    """``value`` as a float, or ``None``. Strings are read too: YAML 1.1 (PyYAML) reads
    ``1e-4`` (no dot) as a string, and users write learning rates that way."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def build_config(cls: type[T], values: Mapping[str, Any] | None = None, *, where: str = "") -> T:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys with the nearest valid one.

    Nested dataclass fields accept nested mappings; values are checked against simple
    annotations (int, float, str, bool, Literal, Optional, tuple/list).
    """
    where = where or cls.__name__
    if values is not None and not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {values!r}")
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in values:
        if key not in fields:
            raise ConfigError(_unknown_key_message(key, list(fields), where))
    required = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [n for n in required if n not in values]
    if missing:
        raise ConfigError(
            f"missing key(s) {', '.join(map(repr, missing))} in {where} "
            f"(required: {', '.join(required)})"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def check_range(
    where: str, name: str, value: float, low: float | None = None, high: float | None = None
) -> None:
    """Raise :class:`ConfigError` unless ``value`` is finite and ``low <= value <= high``
    (either bound optional; NaN compares false with both and passed)."""
    if not math.isfinite(value):
        raise ConfigError(f"{where}.{name} = {value!r} is not a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ConfigError(f"{where}.{name} = {value!r} is out of range: allowed [{lo}, {hi}]")


def check_names(where: str, names: list[str] | tuple[str, ...], valid: list[str]) -> None:
    """Raise :class:`ConfigError` for the first of ``names`` not in ``valid`` (nearest named)."""
    for name in names:
        if name not in valid:
            close = nearest(name, valid)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown name {name!r} in {where}.{hint} Known: {', '.join(valid)}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (YAML keeps the
    last silently: a grid with ``shots: [1]`` and, further down, ``shots: [5]`` ran 5-shot).
    Keys merged in with ``<<: *anchor`` may be overridden, as YAML means them to be."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep=False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} is written twice (lines {seen[key]} and {line}); YAML would "
                "keep the last silently: keep one",
                key_node.start_mark,
            )
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_config(cls: type[T], path: str | Path, overrides: Mapping[str, Any] | None = None) -> T:
    """Load a YAML file into dataclass ``cls``; ``overrides`` win over the file."""
    path = Path(path)
    try:
        data = load_yaml(path.read_text()) or {}
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
