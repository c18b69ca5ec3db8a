"""Config files and command-line overrides: the YAML/JSON mapping of a file, read with its nesting
bounded before the YAML parser sees it, and ``a.b=value`` overrides applied to it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from avalanche_exmask.config_flat import FLAT_FIELDS
from avalanche_exmask.config_values import ConfigError, set_path

__all__ = ["MAX_DEPTH", "read_config_file", "apply_override"]

#: The deepest nesting a config file may have (the schema is 5 levels deep).
MAX_DEPTH = 32
#: Quoted YAML scalars and comments (where brackets do not nest).
_QUOTED_OR_COMMENT = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"\\]|\\.)*\"|#[^\n]*")


def apply_override(values: dict[str, Any], override: str, *, source: str = "--set") -> None:
    """Apply one ``a.b=value`` override in place (the value is parsed as YAML).

    ``method=`` and ``seed=`` replace a file's ``methods`` / ``seeds`` lists (and the lists can be
    overridden themselves: ``seeds=[0,1]``).
    """
    import yaml

    path, sep, text = override.partition("=")
    if not sep or not path:
        raise ConfigError(f"{source}: an override is path=value; got {override!r}")
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as error:
        raise ConfigError(f"{source}: {path}: malformed YAML value ({type(error).__name__})") from None
    _check_depth(value, path, source)
    if path in ("method", "seed"):
        values.pop(path + "s", None)
    if path in ("methods", "seeds"):
        values.pop(path[:-1], None)
    if "." not in path and path in FLAT_FIELDS and FLAT_FIELDS[path] != path:
        path = FLAT_FIELDS[path]
    set_path(values, path, value)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML/JSON mapping in ``path``.

    :raises ConfigError: naming the file (and the line, for YAML syntax errors).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error})") from None
    if _text_depth(text) > MAX_DEPTH:
        raise ConfigError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels; the schema has 5)")
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where}: malformed YAML: {getattr(error, 'problem', None) or error}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels; the schema has 5)") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the config must be a mapping; got {type(values).__name__}")
    _check_depth(values, "", str(path))
    return values


def _text_depth(text: str) -> int:
    """An upper estimate of the nesting depth of YAML ``text``, read in one pass before the
    (recursive, and slow on deep input) YAML parser sees it: the deeper of its flow brackets
    outside quotes and comments, and its stack of block indentations."""
    flow = deepest = 0
    for char in _QUOTED_OR_COMMENT.sub("", text):
        if char in "[{":
            flow += 1
            deepest = max(deepest, flow)
        elif char in "]}":
            flow = max(flow - 1, 0)
    indents: list[int] = []
    for line in text.splitlines():
        content = line.lstrip(" ")
        if not content or content.startswith("#"):
            continue
        indent = len(line) - len(content)
        while indents and indents[-1] >= indent:
            indents.pop()
        indents.append(indent)
        deepest = max(deepest, len(indents))
    return deepest


def _check_depth(values: Any, where: str, source: str) -> None:
    """Refuse lists and mappings nested more than :data:`MAX_DEPTH` levels (walked without recursion).

    :raises ConfigError: naming the path where the limit is passed.
    """
    pending = [(values, where, 0)]
    while pending:
        value, path, depth = pending.pop()
        if not isinstance(value, (dict, list)):
            continue
        if depth >= MAX_DEPTH:
            raise ConfigError(f"{source}: {path or 'the config'} is nested more than {MAX_DEPTH} levels deep")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        pending.extend((item, f"{path}.{key}" if isinstance(value, dict) else f"{path}[{key}]", depth + 1) for key, item in items)

