"""Config values: the error every config problem raises and the typed conversion of plain values
(from YAML or JSON) into (frozen, nested) dataclasses.

A leaf module: it imports nothing from the package, so the config schema
(:mod:`avalanche_exmask.config`), the codec option resolver and the registries' checks all use it
without importing one another.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

__all__ = ["ConfigError", "build_dataclass", "convert_value", "set_path"]

#: A number as a person types it, which YAML 1.1 reads as a string when it has no dot (``1e-3``).
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A configuration problem; the message names the field (dotted path) and the file."""


def build_dataclass(cls: type, values: Any, *, where: str, source: str) -> Any:
    """Build the (frozen) dataclass ``cls`` from a dict, recursively, checking every field's type.

    :param where: the dotted path of ``values`` (``""`` at the top), for messages.
    :param source: the file (or ``"config"``) the values came from, for messages.
    :raises ConfigError: naming ``where.field`` and ``source`` for an unknown field, a value of the
        wrong type, or a value the dataclass's own checks reject.
    """
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: {where or 'the config'} must be a mapping; got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown field(s) {[_join(where, k) for k in unknown]}; {where or 'the config'} has {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    converted = {name: convert_value(hints[name], value, _join(where, name), source) for name, value in values.items()}
    try:
        return cls(**converted)
    except (ValueError, TypeError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{source}: {where + ': ' if where else ''}{error}") from None


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def convert_value(hint: Any, value: Any, where: str, source: str) -> Any:
    """``value`` checked (and, for dataclasses, built) against the type ``hint``."""
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where=where, source=source)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                return convert_value(option, value, where, source)
            except ConfigError as error:
                errors.append(error)
        raise ConfigError(f"{source}: {where} must be {_describe(hint)}; got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{source}: {where} must be one of {list(typing.get_args(hint))}; got {value!r}")
        return value
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{source}: {where} must be null; got {value!r}")
        return None
    if hint is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)  # "1e-3": YAML 1.1 reads exponents without a dot as strings
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{source}: {where} must be a finite number; got {value!r}")
        return float(value)
    if hint in (int, bool, str):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{source}: {where} must be {hint.__name__}; got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {where} must be a mapping; got {value!r}")
        _, value_hint = typing.get_args(hint)
        return {str(k): convert_value(value_hint, v, _join(where, str(k)), source) for k, v in value.items()}
    raise TypeError(f"unsupported config type {hint!r} at {where}")


def _describe(hint: Any) -> str:
    args = [a for a in typing.get_args(hint)]
    return " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)


def set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    """Set the dotted ``path`` of the nested dict ``tree`` to ``value``, creating sections.

    :raises ConfigError: if a part of the path is a value, not a section.
    """
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {path}: {part} is not a section")
        node = child
    node[leaf] = value
