"""A run's results: the accuracy figures of its accuracy matrix, the record of its environment, its
results file (written atomically), a table of runs, and the trained model of a finished run.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from avalanche_exmask.config_schema import RunConfig
from avalanche_exmask.config_values import ConfigError
from avalanche_exmask.experiment_build import build_model

__all__ = ["summarise_accuracy", "environment", "save_results", "format_table", "load_trained_model"]


def summarise_accuracy(matrix: list[list[float]], sizes: list[int]) -> dict[str, Any]:
    """Final accuracy, average incremental accuracy and forgetting from an accuracy matrix.

    :param matrix: ``matrix[t][j]``, accuracy (%) on experience ``j`` after training ``t`` (``j <= t``).
    :param sizes: test samples of each experience (accuracy on seen classes is their weighted mean).
    :return: ``seen_accuracy`` per step, ``final_accuracy``, ``average_incremental_accuracy``,
        ``forgetting`` (mean over old experiences of best earlier minus final accuracy), all in %.
    """
    seen = []
    for t, row in enumerate(matrix):
        weights = sizes[: t + 1]
        seen.append(sum(a * w for a, w in zip(row[: t + 1], weights, strict=True)) / sum(weights))
    last = len(matrix) - 1
    drops = [max(matrix[t][j] for t in range(j, last)) - matrix[last][j] for j in range(last)]
    return {
        "seen_accuracy": seen,
        "final_accuracy": seen[-1],
        "average_incremental_accuracy": sum(seen) / len(seen),
        "forgetting": sum(drops) / len(drops) if drops else 0.0,
    }


def environment() -> dict[str, Any]:
    """Versions of Python and the packages a result depends on, the git commit of this package's
    checkout (``None`` outside one) and the processes (``world_size``, ``backend``) of the run."""
    import platform
    import subprocess
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("avalanche-exmask", "torch", "avalanche-lib", "open_clip_torch", "peft", "transformers", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    from avalanche_exmask.distributed import is_distributed, world_size

    distributed = {"world_size": world_size(), "backend": torch.distributed.get_backend() if is_distributed() else None}
    return {"versions": versions, "git_commit": commit, "distributed": distributed}


def save_results(results: dict[str, Any], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write results as indented JSON (creating folders) through ``<path>.tmp``, renamed into
    place; returns the path. A write that fails (a full disk) removes the temporary file and
    leaves ``path`` as it was.

    :raises FileExistsError: if ``path`` exists and ``overwrite`` is false (checked again at the
        rename: a file that appeared meanwhile is kept).
    :raises OSError: naming ``path``, if it cannot be written.
    """
    path = Path(path)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(json.dumps(results, indent=1, default=str))
            file.flush()
            os.fsync(file.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails if path appeared meanwhile: never replaced without overwrite
    except OSError as error:
        if isinstance(error, FileExistsError):
            raise FileExistsError(f"{path} appeared while the run was writing it; kept, not replaced") from None
        failure = OSError(f"could not write results {path} ({error.strerror or error})")
        failure.errno = error.errno
        raise failure from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return path


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table of runs: accuracy figures in %, buffer contents, wall time in seconds."""

    def cell(value: Any, spec: str) -> str:
        width = int(spec.split(".")[0])
        return "-".rjust(width) if value is None else format(value, spec)

    header = f"{'method':<10} {'final acc':>9} {'avg inc acc':>11} {'forgetting':>10} {'ex/class':>8} {'buffer KB':>9} {'wall s':>7}"
    lines = [header, "-" * len(header)]
    for run in results:
        buffer_nbytes = run.get("buffer_nbytes")
        lines.append(
            f"{run['config']['method']:<10} {cell(run['final_accuracy'], '9.1f')} {cell(run['average_incremental_accuracy'], '11.1f')} "
            f"{cell(run['forgetting'], '10.1f')} {cell(run.get('exemplars_per_class'), '8.1f')} "
            f"{cell(None if buffer_nbytes is None else buffer_nbytes / 1024, '9.0f')} {run['wall_seconds']:>7.0f}"
        )
    return "\n".join(lines)


def load_trained_model(results: str | Path, *, image_attention: str | int | None = None):
    """The trained model of a finished run: built from its results file's ``config.model`` and
    loaded with the weights of the final checkpoint beside it (``<results>.ckpt.safetensors``, kept
    by ``run --keep-checkpoint`` or ``run_study.py --keep-checkpoints``), in eval mode.

    :param results: the run's results JSON.
    :param image_attention: overrides the run's ``model.image_attention`` (the masking scores' source).

    A checkpoint signed with a key loads with the key in ``EXMASK_CHECKPOINT_KEY``.
    :raises ConfigError: naming the file, if the results file or the checkpoint is missing, not a
        results file, or does not fit the model.
    """
    from avalanche_exmask.checkpoint import CheckpointError, key_from_environment, load_checkpoint

    results = Path(results)
    checkpoint = results.with_suffix(".ckpt.safetensors")
    for path in (results, checkpoint):
        if not path.is_file():
            raise ConfigError(f"{path} does not exist (a run keeps its final checkpoint with --keep-checkpoint)")
    try:
        run_config = RunConfig.from_dict(json.loads(results.read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ConfigError(f"{results} is not a results file with a config: {error!r}") from None
    model = build_model(run_config, image_attention=image_attention)
    try:
        load_checkpoint(checkpoint, model=model, restore_rng=False, key=key_from_environment())
    except CheckpointError as error:
        raise ConfigError(str(error)) from None
    return model.eval()
