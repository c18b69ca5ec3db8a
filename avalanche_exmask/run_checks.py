"""Checks of a run config against this machine and the code it names, run when a config is loaded.

The config's dataclasses check each field's type and range; what they cannot know is checked here,
before any data set or model is built: that the device exists on this machine, that
``benchmark.args`` are arguments of the benchmark generator of the right types and ranges (read
from its signature: annotations, with :class:`~avalanche_exmask.bounds.Bounds` metadata for
ranges), and that a weights file is one the model factory can read (its header only).
:func:`check_runnable` runs them all (:func:`check_machine` the machine's); each raises :class:`~avalanche_exmask.config.ConfigError`
naming the field and the file.
"""
from __future__ import annotations

import collections.abc
import inspect
import math
import os
import types
import typing
from typing import Any, Literal, Union

from avalanche_exmask.bounds import Bounds
from avalanche_exmask.config_schema import RunConfig
from avalanche_exmask.config_values import ConfigError

__all__ = ["check_device", "check_benchmark_args", "check_machine", "check_runnable", "type_mismatch"]

#: Generator arguments the runner gives from other fields (``benchmark.n_experiences``).
_RUNNER_ARGUMENTS = {"n_experiences": "benchmark.n_experiences"}


def check_device(device: str, *, source: str = "config") -> None:
    """Refuse a device that torch cannot parse or this machine does not have.

    :raises ConfigError: naming ``device`` and ``source``.
    """
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{source}: device {device!r} is not a device torch knows (cpu, cuda[:index], mps)") from None
    if parsed.type == "cpu":
        return
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (parsed.index is not None and parsed.index >= count):
            raise ConfigError(f"{source}: device {device!r}: this machine has {count} CUDA device(s)")
        return
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{source}: device {device!r}: MPS is not available on this machine")
        return
    raise ConfigError(f"{source}: device {device!r}: runs use cpu, cuda[:index] or mps")


def type_mismatch(hint: Any, value: Any) -> str | None:
    """``None`` if ``value`` (a plain YAML value) fits the annotation ``hint``, else what it should be.

    Understands ``Annotated`` with :class:`Bounds`, ``Any``, ``None``, ``Union`` / ``Optional``,
    ``Literal``, ``bool``, ``int``, ``float`` (finite), ``str``, ``os.PathLike`` (a string),
    sequences (a list) and mappings of these; any other class only fits an instance of it (which a
    config file cannot give).
    """
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(hint)
        problem = type_mismatch(base, value)
        if problem is None:
            for bounds in (item for item in metadata if isinstance(item, Bounds)):
                if value not in bounds:
                    return f"a number {bounds}"
        return problem
    if hint is Any:
        return None
    if hint is None or hint is type(None):
        return None if value is None else "null"
    if origin in (Union, types.UnionType):
        problems = [type_mismatch(option, value) for option in typing.get_args(hint)]
        return None if None in problems else " or ".join(str(problem) for problem in problems)
    if origin is Literal:
        options = list(typing.get_args(hint))
        return None if value in options else f"one of {options}"
    if hint is bool:
        return None if isinstance(value, bool) else "a boolean"
    if hint is int:
        return None if type(value) is int else "an int"
    if hint is float:
        fits = type(value) in (int, float) and math.isfinite(value)
        return None if fits else "a finite number"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if hint is os.PathLike or (isinstance(hint, type) and issubclass(hint, os.PathLike)):
        return None if isinstance(value, (str, os.PathLike)) else "a path"
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return "a list"
        (item_hint, *_) = typing.get_args(hint) or (Any,)
        problems = [type_mismatch(item_hint, item) for item in value]
        wrong = next((p for p in problems if p is not None), None)
        return None if wrong is None else f"a list of {wrong}"
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, collections.abc.Mapping):
            return "a mapping"
        key_hint, value_hint = typing.get_args(hint) or (Any, Any)
        problems = [type_mismatch(key_hint, k) or type_mismatch(value_hint, v) for k, v in value.items()]
        wrong = next((p for p in problems if p is not None), None)
        return None if wrong is None else f"a mapping of {wrong}"
    if isinstance(hint, type):
        return None if isinstance(value, hint) else f"a {hint.__name__} (which a config file cannot give)"
    return None


def check_benchmark_args(name: str, args: typing.Mapping[str, Any], *, source: str = "config") -> None:
    """Check ``benchmark.args`` against the signature of benchmark ``name``'s generator: every key
    a keyword parameter, every value of its annotated type and within its :class:`Bounds`.

    :raises ConfigError: naming ``benchmark.args.<key>`` and ``source``.
    """
    from avalanche_exmask.benchmarks.generators import generator

    function = generator(name)
    parameters = inspect.signature(function).parameters
    hints = typing.get_type_hints(function, include_extras=True)
    accepted = sorted(
        key for key, parameter in parameters.items()
        if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD) and key not in _RUNNER_ARGUMENTS
    )
    for key, value in args.items():
        where = f"benchmark.args.{key}"
        if key in _RUNNER_ARGUMENTS:
            raise ConfigError(f"{source}: {where}: give it as {_RUNNER_ARGUMENTS[key]}")
        if key not in accepted:
            raise ConfigError(f"{source}: {where}: {name} takes no argument {key!r}; it takes {accepted}")
        problem = type_mismatch(hints.get(key, Any), value)
        if problem is not None:
            raise ConfigError(f"{source}: {where} must be {problem}; got {value!r}")


def check_machine(run: RunConfig, *, source: str = "config") -> None:
    """The checks that depend on the machine the run runs on: its device exists, and its weights
    file is one the model factory can read (its header only; an open_clip tag must be known).

    :raises ConfigError: naming ``device`` or ``model.pretrained`` and ``source``.
    """
    from avalanche_exmask.models.factory import check_pretrained

    check_device(run.device, source=source)
    try:
        check_pretrained(run.model.name, run.model.pretrained)
    except (ValueError, OSError) as error:
        raise ConfigError(f"{source}: model.pretrained: {error}") from None


def check_runnable(run: RunConfig, *, source: str = "config", on_this_machine: bool = True) -> None:
    """All checks of this module on one run: its benchmark's arguments, and (``on_this_machine``)
    :func:`check_machine`.

    :param on_this_machine: whether the run will run here (a study submitted to a cluster checks
        the machine in the worker: :func:`~avalanche_exmask.experiment.run_experiment` does).
    :raises ConfigError: naming the field and ``source``.
    """
    check_benchmark_args(run.benchmark.name, run.benchmark.args, source=source)
    if on_this_machine:
        check_machine(run, source=source)
