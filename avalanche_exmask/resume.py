"""Resuming a run: what its checkpoint records of the run, and what a resume may change.

After every experience the runner saves, as the checkpoint's ``extra`` (:func:`run_state`), the
resolved run config, the SHA-256 of its training part (:func:`training_fingerprint`), the index of
the next experience and the accuracies and train times so far. :func:`check_run_state` runs
before the checkpoint is loaded into anything: it refuses a checkpoint written by a config that
differs from the current one in a field that changes what is trained, naming each such field with
both values, and it checks every scalar of the saved state (types, ranges, lengths that agree with
``next_experience``), so a forged or stale file cannot put another run's accuracies into the
results.

A resume may change only the fields of :data:`RESUME_FREE_FIELDS` (where the logs go and how data
is loaded); output paths are not part of the config.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from avalanche_exmask.config_runs import resolve_run
from avalanche_exmask.config_schema import RunConfig

__all__ = ["RESUME_FREE_FIELDS", "training_fields", "training_fingerprint", "run_state", "check_run_state"]

#: Dotted config fields (or sections) a resumed run may change: they do not change what is trained.
RESUME_FREE_FIELDS: tuple[str, ...] = (
    "logging",
    "loader.num_workers",
    "loader.pin_memory",
    "loader.persistent_workers",
)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{dotted path: leaf}`` of a nested mapping (lists are leaves, tuples become lists)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = json.loads(json.dumps(value))
    return flat


def _is_free(path: str) -> bool:
    return any(path == field or path.startswith(field + ".") for field in RESUME_FREE_FIELDS)


def training_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """``{dotted field: value}`` of a config dict (:meth:`RunConfig.to_dict`) without the fields a
    resume may change."""
    return {path: value for path, value in _flatten(config).items() if not _is_free(path)}


def training_fingerprint(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of :func:`training_fields` as canonical JSON: equal for two configs exactly
    when they train the same run."""
    text = json.dumps(training_fields(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_state(
    config: RunConfig,
    next_experience: int,
    accuracy_matrix: list[list[float]],
    class_accuracy_matrix: list[dict[str, float]],
    train_seconds: list[float],
) -> dict[str, Any]:
    """The ``extra`` a run's checkpoint holds after experience ``next_experience - 1`` (the config
    recorded resolved: :func:`~avalanche_exmask.config_runs.resolve_run`)."""
    values = resolve_run(config).to_dict()
    return {
        "config": values,
        "config_sha256": training_fingerprint(values),
        "next_experience": next_experience,
        "accuracy_matrix": accuracy_matrix,
        "class_accuracy_matrix": class_accuracy_matrix,
        "train_seconds": train_seconds,
    }


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_number(value: Any, low: float, high: float) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and low <= value <= high


def _check_config(saved: Any, fingerprint: Any, config: RunConfig) -> None:
    _require(
        isinstance(saved, dict) and isinstance(fingerprint, str),
        "the checkpoint records no run config (written by an earlier version?); start over with --overwrite (or delete it)",
    )
    _require(fingerprint == training_fingerprint(saved), "the checkpoint's config does not match its recorded hash")
    current = resolve_run(config).to_dict()
    if fingerprint == training_fingerprint(current):
        return
    before, now = training_fields(saved), training_fields(current)

    def show(values: Mapping[str, Any], path: str) -> str:
        return json.dumps(values[path]) if path in values else "absent"

    changes = [
        f"{path} is {show(before, path)} in the checkpoint and {show(now, path)} now"
        for path in sorted(before.keys() | now.keys())
        if path not in before or path not in now or before[path] != now[path]
    ]
    raise ValueError(
        "written by another run config, refusing to mix runs: " + "; ".join(changes)
        + f" (a resume may change only {', '.join(RESUME_FREE_FIELDS)}; start over with --overwrite)"
    )


def _entries(extra: Mapping[str, Any], name: str, done: int) -> list[Any]:
    """``extra[name]``, if it is a list of ``done`` entries (one per finished experience).

    :raises ValueError: naming ``name`` and what the checkpoint holds instead.
    """
    value = extra.get(name)
    if not (isinstance(value, list) and len(value) == done):
        raise ValueError(
            f"{name} must be a list of {done} entries (next_experience {done}); the checkpoint's has "
            f"{len(value) if isinstance(value, list) else type(value).__name__}"
        )
    return value


def check_run_state(extra: Mapping[str, Any], config: RunConfig, n_experiences: int) -> None:
    """Check a checkpoint's ``extra`` against the run about to resume from it.

    :param n_experiences: experiences of the run's benchmark.
    :raises ValueError: naming the first problem: a config that differs in a training field (each
        field with both values), a ``next_experience`` that is not an int in
        ``[1, n_experiences]``, matrices or train times whose lengths disagree with it, or a value
        that is not a finite number in range (accuracies in ``[0, 100]``, seconds ``>= 0``).
    """
    _check_config(extra.get("config"), extra.get("config_sha256"), config)
    done = extra.get("next_experience")
    if not (type(done) is int and 1 <= done <= n_experiences):
        raise ValueError(
            f"next_experience must be an int in [1, {n_experiences}]; the checkpoint holds {json.dumps(done, default=str)}"
        )
    matrix, class_matrix, seconds = (_entries(extra, name, done) for name in ("accuracy_matrix", "class_accuracy_matrix", "train_seconds"))
    for t, row in enumerate(matrix):
        _require(
            isinstance(row, list) and len(row) == t + 1 and all(_is_number(a, 0, 100) for a in row),
            f"accuracy_matrix row {t} must hold {t + 1} accuracies in [0, 100]",
        )
    for t, row in enumerate(class_matrix):
        _require(
            isinstance(row, dict) and all(key.isdigit() and _is_number(a, 0, 100) for key, a in row.items()),
            f"class_accuracy_matrix row {t} must map class ids to accuracies in [0, 100]",
        )
    _require(all(_is_number(s, 0, math.inf) for s in seconds), "train_seconds must be finite numbers >= 0")
