"""Building a run's parts from its :class:`~avalanche_exmask.config_schema.RunConfig`: the benchmark,
the model, the per-process batch sizes, Avalanche's loggers, and the method builder's
:class:`~avalanche_exmask.methods.base.BuildContext` (model, optimizer, budget, template arguments).

Every method is built by its registered builder from one ``BuildContext``, so the Python API and
the runner build it the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from avalanche_exmask.config_schema import RunConfig
from avalanche_exmask.config_values import ConfigError

__all__ = ["build_benchmark", "build_model", "per_rank_batch_sizes", "build_context"]


def build_benchmark(config: RunConfig):
    """The Avalanche benchmark named by ``config.benchmark`` (class order seeded by ``config.seed``)."""
    args = dict(config.benchmark.args)
    args.setdefault("seed", config.seed)
    args.setdefault("model_name", config.model.name)
    from avalanche_exmask.benchmarks.generators import generator

    return generator(config.benchmark.name)(n_experiences=config.benchmark.n_experiences, **args)


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


def _accelerate(model, config: RunConfig) -> None:
    """Apply ``config.accelerator``'s model settings (channels-last, ``torch.compile``)."""
    from avalanche_exmask.models.acceleration import compile_mlps, use_channels_last

    if config.accelerator.channels_last:
        use_channels_last(model)
    if config.accelerator.compile:
        compile_mlps(model, config.accelerator.compile_mode)


def build_context(config: RunConfig, spec: Any, benchmark: Any) -> Any:
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
