"""From config values to validated runs: a study's ``methods`` x ``seeds`` expanded into one
:class:`~avalanche_exmask.config_schema.RunConfig` each, fields that apply to none of the methods
refused, and each run's codec and method options resolved (checked and completed with their
defaults).
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from avalanche_exmask.config_flat import from_flat, is_flat
from avalanche_exmask.config_schema import MAX_SEED, RunConfig, TrainSection
from avalanche_exmask.config_values import ConfigError, build_dataclass, convert_value

__all__ = ["expand_runs", "check_distinct", "resolve_run"]


def expand_runs(
    values: Mapping[str, Any],
    *,
    source: str = "config",
    applicable_to: Sequence[str] | None = None,
    on_this_machine: bool = True,
) -> list[RunConfig]:
    """One validated :class:`RunConfig` per (method, seed) of ``values`` (nested or flat format).

    Every run is built before any is returned; fields that apply to none of the runs' methods
    (storage and replay training for methods without a buffer, options of a codec no method uses)
    are errors, and so are a method or seed listed twice (two runs writing one results file), and
    what :func:`~avalanche_exmask.run_checks.check_runnable` refuses (a device this machine lacks,
    benchmark arguments the generator does not take, an unreadable weights file).

    :param applicable_to: check applicability against these methods instead of the runs' own (a
        study whose shared base serves several groups passes all its methods).
    :param on_this_machine: also check the device and weights file here (false for runs that may
        be submitted to other machines; the worker's ``run_experiment`` checks them there).

    :raises ConfigError: naming the field and ``source``.
    """
    from avalanche_exmask.registry import METHODS

    values = from_flat(values, source=source) if is_flat(values) else dict(values)
    methods = _as_list(values.pop("methods", None), values.get("method", RunConfig.method), "methods", source)
    seeds = _as_list(values.pop("seeds", None), values.get("seed", RunConfig.seed), "seeds", source)
    values.pop("method", None)
    values.pop("seed", None)
    _check_sections_and_seeds(values, seeds, source)
    if on_this_machine and isinstance(values.get("device"), str):
        from avalanche_exmask.run_checks import check_device

        check_device(values["device"], source=source)  # before the methods load, as the sections
    for method in methods:
        if method not in METHODS:
            raise ConfigError(f"{source}: method {method!r} is not registered; registered: {METHODS.names()}")
    for method in applicable_to or []:
        if method not in METHODS:
            raise ConfigError(f"{source}: method {method!r} is not registered; registered: {METHODS.names()}")
    specs = {method: METHODS.get(method) for method in methods}
    _check_applicable(values, {m: METHODS.get(m) for m in (applicable_to or methods)}, source)
    check_distinct(methods, "methods", source)
    check_distinct(seeds, "seeds", source)
    runs = []
    for method in methods:
        run_values = _with_backbone_adapter(values, method, specs[method], source)
        for seed in seeds:
            run = build_dataclass(RunConfig, {**run_values, "method": method, "seed": seed}, where="", source=source)
            runs.append(resolve_run(run, source=source))
    from avalanche_exmask.run_checks import check_runnable

    check_runnable(runs[0], source=source, on_this_machine=on_this_machine)  # the runs differ only in method, seed, adapter
    return runs


def _check_sections_and_seeds(values: Mapping[str, Any], seeds: Sequence[Any], source: str) -> None:
    """Build every section of ``values`` and check every seed before anything loads the registered
    methods (which imports Avalanche, tens of seconds cold): a bad value is named at once.

    :raises ConfigError: naming the field and ``source``.
    """
    hints = typing.get_type_hints(RunConfig)
    for name, value in values.items():
        if dataclasses.is_dataclass(hints.get(name)):
            build_dataclass(hints[name], value, where=name, source=source)
    for seed in seeds:
        seed = convert_value(int, seed, "seed", source)
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"{source}: seed must be in [0, {MAX_SEED}]; got {seed}")


def check_distinct(items: Sequence[Any], name: str, source: str) -> None:
    """Refuse a list naming an item twice (two runs would write one results file).

    :raises ConfigError: naming ``name``, the repeated items and ``source``.
    """
    repeated = sorted({str(item) for item in items if list(items).count(item) > 1})
    if repeated:
        raise ConfigError(f"{source}: {name} lists {', '.join(repeated)} more than once (one run, one results file)")


def _with_backbone_adapter(values: Mapping[str, Any], method: str, spec: Any, source: str) -> Mapping[str, Any]:
    """``values`` with ``model.adapter`` set to what ``method`` needs (if it needs one).

    :raises ConfigError: naming ``model.adapter`` if the values name another adapter.
    """
    required = getattr(spec, "backbone_adapter", None)
    if required is None:
        return values
    model = values.get("model") or {}
    if not isinstance(model, Mapping):
        return values  # build_dataclass reports it
    given = model.get("adapter")
    if given is not None and given != required:
        raise ConfigError(f"{source}: model.adapter must be {required!r} for method {method!r}; got {given!r}")
    return {**values, "model": {**model, "adapter": required}}


def resolve_run(run: RunConfig, *, source: str = "config") -> RunConfig:
    """``run`` with its own codec's and method's options checked and completed with their defaults
    (and other codecs' and methods' options dropped): the config a run records and resumes by.
    Idempotent.

    :raises ConfigError: naming the option and ``source``.
    """
    from avalanche_exmask.registry import METHODS

    spec = METHODS.get(run.method)
    return _resolve_method_options(_resolve_codec_options(run, spec, source), spec, source)


def _resolve_method_options(run: RunConfig, spec: Any, source: str) -> RunConfig:
    """Keep only the run's own method options, checked against its options dataclass and completed."""
    options_class = getattr(spec, "options", None)
    if options_class is None:
        return dataclasses.replace(run, method_options={})
    where = f"method_options.{run.method}"
    options = build_dataclass(options_class, run.method_options.get(run.method, {}), where=where, source=source)
    return dataclasses.replace(run, method_options={run.method: dataclasses.asdict(options)})


def _as_list(listed: Any, single: Any, name: str, source: str) -> list[Any]:
    if listed is None:
        return [single]
    if not isinstance(listed, list) or not listed:
        raise ConfigError(f"{source}: {name} must be a non-empty list; got {listed!r}")
    return listed


def _check_applicable(values: Mapping[str, Any], specs: Mapping[str, Any], source: str) -> None:
    buffered = [name for name, spec in specs.items() if spec.codec is not None]
    if not buffered:
        for section, keys in (("storage", None), ("train", TrainSection.replay_fields)):
            given = values.get(section) or {}
            for key in given if keys is None else [k for k in keys if k in given]:
                raise ConfigError(
                    f"{source}: {section}.{key} applies to methods with an exemplar buffer, and none of {list(specs)} has one"
                )
    for method in (values.get("method_options") or {}):
        if method not in specs or getattr(specs[method], "options", None) is None:
            with_options = [name for name, spec in specs.items() if getattr(spec, "options", None) is not None]
            raise ConfigError(
                f"{source}: method_options.{method} applies to none of the methods {list(specs)} (methods with options: {with_options})"
            )
    codecs_used = {specs[name].codec for name in buffered}
    options = (values.get("storage") or {}).get("options") or {}
    from avalanche_exmask.registry import CODECS

    for codec in options:
        if codec not in CODECS:
            raise ConfigError(f"{source}: storage.options.{codec}: no codec {codec!r}; registered: {CODECS.names()}")
        if codec not in codecs_used:
            raise ConfigError(f"{source}: storage.options.{codec} applies to none of the methods {list(specs)}")


def _resolve_codec_options(run: RunConfig, spec: Any, source: str) -> RunConfig:
    """Keep only the run's own codec options, completed with the codec's defaults and validated."""
    if spec.codec is None:
        return run
    from avalanche_exmask.storage.codec_options import resolve_codec_options

    resolved = resolve_codec_options(spec.codec, run.storage.options.get(spec.codec, {}), source=source)
    storage = dataclasses.replace(run.storage, options={spec.codec: resolved})
    return dataclasses.replace(run, storage=storage)

