"""The nested, typed run configuration, validated completely before anything runs.

A run is described by a :class:`RunConfig` with one section per concern (the schema and an
example: :mod:`~avalanche_exmask.config_schema`).

A study file may give ``methods:`` and ``seeds:`` lists instead of ``method`` / ``seed``; it expands
into one run per (method, seed). :func:`load_runs` reads such a file
(:func:`~avalanche_exmask.config_files.read_config_file`), applies ``--set a.b=value`` overrides
(:func:`~avalanche_exmask.config_files.apply_override`), and validates every run before returning
(:func:`~avalanche_exmask.config_runs.expand_runs`): an unknown field, a value of the wrong type, a
field that applies to none of the file's methods, or a bad value caught by a section's own checks
raises :class:`ConfigError` naming the field and the file. Files in the flat format of earlier
versions (``samples_per_class: 5``, ``text_mode: none``, ...) are converted by :func:`from_flat`.

This module is the public face of configs: the names below are defined in
:mod:`~avalanche_exmask.config_schema`, :mod:`~avalanche_exmask.config_values`,
:mod:`~avalanche_exmask.config_files`, :mod:`~avalanche_exmask.config_runs` and
:mod:`~avalanche_exmask.config_flat`, and importable from here.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from avalanche_exmask.config_files import apply_override, read_config_file
from avalanche_exmask.config_flat import FLAT_FIELDS, from_flat, is_flat
from avalanche_exmask.config_runs import check_distinct, expand_runs, resolve_run
from avalanche_exmask.config_schema import (
    AcceleratorSection,
    AugmentationSection,
    BenchmarkSection,
    BudgetSection,
    EvalSection,
    LoaderSection,
    LoggingSection,
    ModelSection,
    RunConfig,
    StorageSection,
    TrainSection,
)
from avalanche_exmask.config_values import ConfigError, build_dataclass, convert_value

__all__ = [
    "ConfigError",
    "BenchmarkSection",
    "ModelSection",
    "BudgetSection",
    "StorageSection",
    "AugmentationSection",
    "TrainSection",
    "EvalSection",
    "LoggingSection",
    "LoaderSection",
    "AcceleratorSection",
    "RunConfig",
    "build_dataclass",
    "convert_value",
    "from_flat",
    "FLAT_FIELDS",
    "load_runs",
    "read_config_file",
    "expand_runs",
    "apply_override",
    "check_distinct",
    "resolve_run",
]


def load_runs(path: str | Path, overrides: Sequence[str] = ()) -> list[RunConfig]:
    """The validated runs of a config file with ``a.b=value`` overrides applied (see the module docstring)."""
    values = read_config_file(path)
    if is_flat(values):
        values = from_flat(values, source=str(path))
    for override in overrides:
        apply_override(values, override)
    return expand_runs(values, source=str(path))
