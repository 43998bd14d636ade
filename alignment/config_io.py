"""Typed, frozen configs with a strict dict/JSON/TOML round trip and dotted `--set` overrides.

Every config is a frozen dataclass validated in `__post_init__`. `from_dict` builds one from
plain data and rejects unknown keys and values of the wrong type, naming the key and the
expected type; `override(config, "train.lr=3e-4")` parses the value (TOML/JSON syntax, else a
bare string) and rebuilds the config so the same validation runs. A run folder always keeps
the fully resolved config (`to_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from causal_models.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A config key that is unknown, or a value of the wrong type or out of range."""


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, JSON-ready data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build `cls` from plain data, recursing into nested config dataclasses; strict about keys and types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__} must be a table of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {[_join(where, k) for k in unknown]}; "
                          f"known keys{' of ' + where if where else ''}: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(value, hints[name], _join(where, name)) for name, value in data.items()}
    try:
        return cls(**values)
    except TypeError as error:
        raise ConfigError(f"{where or cls.__name__}: {error}") from None


def override(config: T, *assignments: str) -> T:
    """`config` with dotted `key.path=value` assignments applied (values in TOML/JSON syntax or bare strings).

    The assignments apply in order to the plain data and the config is validated once, at the
    end, so a step through an invalid state (unset `layer`, then set `site`) is fine.
    """
    values = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override must look like key.path=value, got {assignment!r}")
        values[key.strip()] = parse_value(raw.strip())
    return with_values(config, values)


def with_values(config: T, values: Mapping[str, Any]) -> T:
    """`config` with each dotted key of `values` set to its (already typed) value, validated once."""
    data = to_dict(config)
    for key, value in values.items():
        parts = key.split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override key {'.'.join(parts[:depth + 1])!r} is not a table; "
                                  f"tables: {sorted(k for k, v in node.items() if isinstance(v, dict))}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"unknown key {key!r}; known keys here: {sorted(node)}")
        node[parts[-1]] = value
    return from_dict(type(config), data)


def parse_value(raw: str) -> Any:
    """A `--set` value: TOML/JSON literal (numbers, true/false, lists, quoted strings), else the bare string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        return " or ".join(map(repr, choices)) if len(choices) <= 2 else f"one of {list(choices)}"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(error)
        raise ConfigError(f"{key} must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be {_type_name(hint)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {value!r}")
        return dict(value)
    return _coerce_scalar(value, hint, key)


def _coerce_scalar(value: Any, hint: Any, key: str) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{key} must be int, got {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{key} must be {_type_name(hint)}, got {value!r} ({type(value).__name__})")
    return value


def positive(name: str, value: float | int | None, allow_zero: bool = False) -> None:
    """Raise ConfigError unless `value` is a finite number > 0 (>= 0 with `allow_zero`); None passes."""
    if value is None:
        return
    rule = ">= 0" if allow_zero else "> 0"
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number {rule}, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {rule}, got {value!r}")
