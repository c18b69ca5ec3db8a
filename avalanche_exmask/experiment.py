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
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from avalanche_exmask.config import ConfigError, RunConfig, resolve_run

__all__ = [
    "run_experiment", "build_model", "load_trained_model", "per_rank_batch_sizes", "build_benchmark", "summarise_accuracy", "save_results",
    "format_table", "environment",
]

log = logging.getLogger(__name__)


def build_benchmark(config: RunConfig):
    """The Avalanche benchmark named by ``config.benchmark`` (class order seeded by ``config.seed``)."""
    args = dict(config.benchmark.args)
    args.setdefault("seed", config.seed)
    args.setdefault("model_name", config.model.name)
    from avalanche_exmask.benchmarks.generators import generator

    return generator(config.benchmark.name)(n_experiences=config.benchmark.n_experiences, **args)


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


def per_rank_batch_sizes(config: RunConfig) -> tuple[int, int]:
    """``(train, eval)`` batch sizes of one process: the config's (global) sizes divided by the
    number of processes (the sizes themselves in one process).

    :raises ConfigError: if a size is not a multiple of the number of processes.
    """
    from avalanche_exmask.distributed import world_size

    sizes = []
    for field, size in (("train.batch_size", config.train.batch_size), ("eval.batch_size", config.eval.batch_size)):
        if size % world_size():
            raise ConfigError(
                f"{field}={size} is the global batch and must be a multiple of the {world_size()} processes"
            )
        sizes.append(size // world_size())
    return sizes[0], sizes[1]


def _loggers(config: RunConfig) -> list:
    """Avalanche's loggers of ``config.logging``; none on ranks other than 0 (they would repeat
    rank 0's lines: every rank computes the same, gathered metrics)."""
    from avalanche.logging import CSVLogger, InteractiveLogger, TensorboardLogger, WandBLogger

    from avalanche_exmask.distributed import is_main_process

    if not is_main_process():
        return []
    run_name = f"{config.method}_seed{config.seed}"
    loggers: list = [InteractiveLogger()] if config.logging.progress else []
    if config.logging.csv:
        loggers.append(CSVLogger(log_folder=str(Path(config.logging.csv) / run_name)))
    if config.logging.tensorboard:
        loggers.append(TensorboardLogger(tb_log_dir=str(Path(config.logging.tensorboard) / run_name)))
    if config.logging.wandb_project:
        loggers.append(WandBLogger(project_name=config.logging.wandb_project, run_name=run_name, params={"config": config.to_dict()}))
    return loggers


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
        completed with their defaults (:func:`~avalanche_exmask.config.resolve_run`), and the
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
    context = _build_context(config, spec, benchmark)
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


def build_model(config: RunConfig, *, image_attention: str | int | None = None) -> Any:
    """The :class:`~avalanche_exmask.models.classifier.MultimodalCLIPClassifier` of ``config.model``
    (``image_attention`` overrides ``config.model.image_attention``)."""
    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier

    model = config.model
    return MultimodalCLIPClassifier(
        model.name, model.pretrained, adapter=model.adapter,
        image_attention=model.image_attention if image_attention is None else image_attention,
        skip_empty_patches=model.skip_empty_patches, mask_scores_from=model.mask_scores_from,
    )


def _build_context(config: RunConfig, spec: Any, benchmark: Any) -> Any:
    """The method builder's :class:`~avalanche_exmask.methods.base.BuildContext`: the model (seeded
    by ``config.seed``, accelerated), AdamW at the method's learning rate
    (:meth:`~avalanche_exmask.methods.base.MethodSpec.optimizer_lr`), the budget in bytes and the
    template arguments (per-process batch sizes, device, evaluator, the runner's plugins)."""
    from avalanche.evaluation.metrics import accuracy_metrics, class_accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_exmask import distributed
    from avalanche_exmask.methods.base import BuildContext
    from avalanche_exmask.storage.budget import budget_from_samples_per_class
    from avalanche_exmask.training.distributed_metrics import gathered_accuracy_metrics, gathered_class_accuracy_metrics
    from avalanche_exmask.training.distributed_plugin import DistributedTrainingPlugin

    n_classes = sum(len(exp.classes_in_this_experience) for exp in benchmark.train_stream)
    torch.manual_seed(config.seed)
    model = build_model(config)
    _accelerate(model, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec.optimizer_lr(config), weight_decay=0.0)
    train_batch, eval_batch = per_rank_batch_sizes(config)
    runner_plugins: list = []
    if distributed.is_distributed():
        runner_plugins.append(DistributedTrainingPlugin())
        metrics = [gathered_accuracy_metrics(experience=True, stream=True), gathered_class_accuracy_metrics()]
    else:
        metrics = [accuracy_metrics(experience=True, stream=True), class_accuracy_metrics(stream=True)]
    if config.train.lr_schedule == "cosine":
        from avalanche_exmask.training.lr_schedule import CosineLRPlugin

        runner_plugins.append(CosineLRPlugin())
    if config.accelerator.precision != "fp32":
        from avalanche_exmask.training.mixed_precision import MixedPrecisionPlugin

        runner_plugins.append(MixedPrecisionPlugin(config.accelerator.precision, torch.device(config.device).type))
    budget = budget_from_samples_per_class(config.storage.budget.samples_per_class, n_classes, model.image_size, model.context_length)
    return BuildContext(
        config=config, model=model, optimizer=optimizer, benchmark=benchmark, n_classes=n_classes, budget_nbytes=budget,
        template_kwargs=dict(
            model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(), train_mb_size=train_batch,
            train_epochs=config.train.epochs, eval_mb_size=eval_batch, device=distributed.local_device(config.device),
            evaluator=EvaluationPlugin(*metrics, loggers=_loggers(config)),
            **({"plugins": runner_plugins} if runner_plugins else {}),
        ),
    )


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


def _checkpoint_nbytes(model: torch.nn.Module, budget_nbytes: int) -> int:
    """An upper estimate of a run's checkpoint, in bytes: the model's state, AdamW's two moments
    of every trainable parameter, the exemplar budget and 1 MiB of RNG states and JSON."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return state + moments + budget_nbytes + 2**20


def _accelerate(model, config: RunConfig) -> None:
    """Apply ``config.accelerator``'s model settings (channels-last, ``torch.compile``)."""
    from avalanche_exmask.models.acceleration import compile_mlps, use_channels_last

    if config.accelerator.channels_last:
        use_channels_last(model)
    if config.accelerator.compile:
        compile_mlps(model, config.accelerator.compile_mode)


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
