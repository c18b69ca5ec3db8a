"""Experiments: a :class:`~avalanche_exmask.config.RunConfig` in, a results dict (JSON-ready) out.

A run trains one registered method (:data:`avalanche_exmask.registry.METHODS`) on one benchmark and
evaluates, after each experience, on the test data of every experience seen so far. Every method is
built by its registered builder from one :class:`~avalanche_exmask.methods.base.BuildContext`, so
the Python API and the runner build it the same way. The results hold the config, the accuracy
matrix ``acc[t][j]`` (accuracy on experience ``j``'s test data after training experience ``t``, in
%), the per-class accuracy matrix ``class_accuracy_matrix[t][c]`` (accuracy on class ``c``'s test
data after experience ``t``, %, for every class seen by then; keys are class ids as strings), final
accuracy, average incremental accuracy, forgetting, the method's own figures (listed under
``figures``: e.g. exemplars per class, buffer bytes, kept fractions, the nearest-class-mean readout)
and wall times.

A joint method (an upper bound) is trained once on the whole stream and evaluated once: its results
have ``final_accuracy`` and one row of each matrix only (no per-step accuracies, average incremental
accuracy or forgetting).

This module is the run loop; the benchmark, model and method are built by
:mod:`~avalanche_exmask.experiment_build`, and the figures, the results file and the table of runs
are :mod:`~avalanche_exmask.experiment_results`'s.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from avalanche_exmask.config_runs import resolve_run
from avalanche_exmask.config_schema import RunConfig
from avalanche_exmask.experiment_build import build_benchmark, build_context
from avalanche_exmask.experiment_results import environment, load_trained_model, save_results, summarise_accuracy

# build_benchmark, load_trained_model, save_results and summarise_accuracy are defined in
# experiment_build / experiment_results and importable from here, as scripts and notebooks do.
__all__ = ["run_experiment", "build_benchmark", "load_trained_model", "save_results", "summarise_accuracy"]

log = logging.getLogger(__name__)


def run_experiment(
    config: RunConfig | Mapping[str, Any],
    *,
    benchmark=None,
    checkpoint: str | Path | None = None,
    checkpoint_key: bytes | None = None,
) -> dict[str, Any]:
    """Train and evaluate one method; return the results dict (see the module docstring).

    Under ``torchrun`` (after :func:`avalanche_exmask.distributed.init_distributed`) every rank
    calls this with the same config: ``train.batch_size`` and ``eval.batch_size`` are global (each
    rank takes ``1 / world_size`` of them), the model is trained data-parallel
    (:class:`~avalanche_exmask.training.distributed_plugin.DistributedTrainingPlugin`), every rank
    holds the same exemplar buffer and returns the same accuracies (gathered over ranks), and only
    rank 0 writes the checkpoint.

    :param config: a :class:`RunConfig` or a nested dict of one; its codec and method options are
        completed with their defaults (:func:`~avalanche_exmask.config_runs.resolve_run`), and the
        results and the checkpoint record that resolved config.
    :param benchmark: a prebuilt benchmark (to share one across methods); else built from the config.
    :param checkpoint: a file written after every experience
        (:func:`~avalanche_exmask.checkpoint.save_strategy_checkpoint`: model, optimizer, buffer,
        RNG states, the accuracies so far, the run config: :func:`~avalanche_exmask.resume.run_state`);
        if it exists when the run starts, the run resumes after its last experience and gives the
        results an uninterrupted run would have given; a checkpoint of a config that trains
        otherwise (:func:`~avalanche_exmask.resume.check_run_state`) is refused. Before the first
        experience its folder is checked writable with room for two checkpoints
        (:func:`~avalanche_exmask.output_folder.check_output_folder`). Joint methods train in one
        call and are not checkpointed.
    :param checkpoint_key: sign the checkpoint with HMAC-SHA256 under this key, and resume only
        from a file signed with it (the CLI passes :func:`~avalanche_exmask.checkpoint.key_from_environment`).
    :raises ConfigError: naming ``device`` or ``model.pretrained``, for a device this machine
        lacks or weights it cannot read (:func:`~avalanche_exmask.run_checks.check_machine`).
    :raises CheckpointError: naming the checkpoint, if it cannot be resumed from.
    :raises OutputFolderError: naming the folder, if the checkpoint cannot be written there.
    """
    from avalanche_exmask import distributed
    from avalanche_exmask.registry import METHODS
    from avalanche_exmask.run_checks import check_machine

    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(config)
    config = resolve_run(config)
    check_machine(config)  # a study's worker may run on another machine than the one that validated it
    spec = METHODS.get(config.method)
    start = time.perf_counter()
    benchmark = benchmark if benchmark is not None else build_benchmark(config)
    context = build_context(config, spec, benchmark)
    strategy = spec.build(context)
    if checkpoint is not None and not spec.joint and distributed.is_main_process():
        from avalanche_exmask.output_folder import check_output_folder

        check_output_folder(Path(checkpoint).parent, 2 * _checkpoint_nbytes(context.model, context.budget_nbytes))
    sizes = [len(exp.dataset) for exp in benchmark.test_stream]
    if spec.joint:
        accuracy, train_seconds = _train_joint(strategy, benchmark, config, sizes)
    else:
        accuracy, train_seconds = _train_incrementally(strategy, benchmark, config, sizes, checkpoint, checkpoint_key)
    figures = spec.report(strategy, context) if spec.report is not None else {}
    model, n_classes, budget = context.model, context.n_classes, context.budget_nbytes
    return {
        "config": config.to_dict(),
        "n_classes": n_classes,
        "class_order": getattr(benchmark, "class_order", None),
        "budget_nbytes": budget,
        "test_sizes": sizes,
        **accuracy,
        **figures,
        "figures": [key for key, value in figures.items() if isinstance(value, (int, float)) or value is None],
        "benchmark_skipped": [list(item) for item in getattr(benchmark, "skipped", None) or []],
        "benchmark_truncated_texts": getattr(benchmark, "n_truncated", None),
        "environment": environment(),
        "parameters": model.trainable_parameter_report(),
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - start,
    }


def _train_joint(strategy: Any, benchmark: Any, config: RunConfig, sizes: list[int]) -> tuple[dict[str, Any], list[float]]:
    """Train a joint method once on the whole stream and evaluate once: its accuracies (one row)
    and its training time in seconds."""
    loader_kwargs = config.loader.template_kwargs()
    t0 = time.perf_counter()
    strategy.train(benchmark.train_stream, **loader_kwargs)
    train_seconds = [time.perf_counter() - t0]
    row, per_class = _evaluate(strategy, benchmark.test_stream, len(benchmark.test_stream) - 1, loader_kwargs)
    accuracy = {
        "accuracy_matrix": [row],
        "class_accuracy_matrix": [per_class],
        "final_accuracy": sum(a * w for a, w in zip(row, sizes, strict=True)) / sum(sizes),
        "average_incremental_accuracy": None,
        "forgetting": None,
    }
    return accuracy, train_seconds


def _train_incrementally(
    strategy: Any, benchmark: Any, config: RunConfig, sizes: list[int], checkpoint: str | Path | None, checkpoint_key: bytes | None
) -> tuple[dict[str, Any], list[float]]:
    """Train experience by experience, evaluating on every experience seen after each (and, with
    ``checkpoint``, resuming from it and writing it after each): the accuracies and the training
    time of each experience in seconds."""
    from avalanche_exmask import distributed

    train_stream, test_stream = benchmark.train_stream, benchmark.test_stream
    loader_kwargs = config.loader.template_kwargs()
    matrix: list[list[float]] = []
    class_matrix: list[dict[str, float]] = []
    train_seconds: list[float] = []
    first = 0
    if checkpoint is not None and os.path.lexists(checkpoint):
        from avalanche_exmask.checkpoint import load_strategy_checkpoint
        from avalanche_exmask.resume import check_run_state

        saved = load_strategy_checkpoint(
            checkpoint, strategy, key=checkpoint_key,
            check_extra=lambda extra: check_run_state(extra, config, len(train_stream)),
        )
        first, matrix, train_seconds = saved["next_experience"], saved["accuracy_matrix"], saved["train_seconds"]
        class_matrix = saved["class_accuracy_matrix"]
        log.info("resuming %s after experience %d from %s", config.method, first - 1, checkpoint)
    for t in range(first, len(train_stream)):
        t0 = time.perf_counter()
        strategy.train(train_stream[t], **loader_kwargs)
        train_seconds.append(time.perf_counter() - t0)
        row, per_class = _evaluate(strategy, test_stream, t, loader_kwargs)
        matrix.append(row)
        class_matrix.append(per_class)
        if checkpoint is not None and distributed.is_main_process():
            from avalanche_exmask.checkpoint import save_strategy_checkpoint
            from avalanche_exmask.resume import run_state

            save_strategy_checkpoint(
                checkpoint, strategy, key=checkpoint_key, extra=run_state(config, t + 1, matrix, class_matrix, train_seconds)
            )
    accuracy = {"accuracy_matrix": matrix, "class_accuracy_matrix": class_matrix, **summarise_accuracy(matrix, sizes)}
    return accuracy, train_seconds


def _evaluate(
    strategy, test_stream, upto: int, loader_kwargs: Mapping[str, Any] | None = None
) -> tuple[list[float], dict[str, float]]:
    """Accuracies (%) on test experiences ``0..upto``, and on each class seen so far (from
    Avalanche's ``Top1_ClassAcc_Stream`` metric; keys are class ids as strings)."""
    metrics = strategy.eval(test_stream[: upto + 1], **(loader_kwargs or {}))
    row = []
    for j in range(upto + 1):
        key = next(k for k in metrics if k.startswith("Top1_Acc_Exp/eval_phase/test_stream") and k.endswith(f"Exp{j:03d}"))
        row.append(100.0 * float(metrics[key]))
    prefix = "Top1_ClassAcc_Stream/eval_phase/test_stream/"
    per_class = {key.rsplit("/", 1)[1]: 100.0 * float(value) for key, value in metrics.items() if key.startswith(prefix)}
    return row, dict(sorted(per_class.items(), key=lambda item: int(item[0])))


def _checkpoint_nbytes(model: torch.nn.Module, budget_nbytes: int) -> int:
    """An upper estimate of a run's checkpoint, in bytes: the model's state, AdamW's two moments
    of every trainable parameter, the exemplar budget and 1 MiB of RNG states and JSON."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return state + moments + budget_nbytes + 2**20
