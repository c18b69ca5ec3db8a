"""Experiments: a config in, a results dict (JSON-ready) out.

A run trains one method on one benchmark and evaluates, after each experience, on the test
data of every experience seen so far. The results hold the config, the accuracy matrix
``acc[t][j]`` (accuracy on experience ``j``'s test data after training experience ``t``, in %),
final accuracy, average incremental accuracy, forgetting, the buffer's contents (exemplars per
class, bytes, kept patch and token fractions) and wall times.

Methods (all share one model and one byte budget):

* ``naive``: Avalanche's ``Naive`` (fine-tuning, no replay).
* ``replay``: Avalanche's ``Replay`` with ``samples_per_class x classes`` plain samples.
* ``raw``: our byte-budgeted buffer with plain exemplars (herding) — the paper's "SSF".
* ``mrdc``: the same buffer, exemplars stored as JPEG (``jpeg_quality``).
* ``cim``: the same buffer, CIM-style (attention box at full resolution, rest downsampled 2x).
* ``masking``: :class:`~avalanche_exmask.training.strategy.ExemplarMasking`.
* ``joint``: Avalanche's ``JointTraining`` on all experiences at once (an upper bound).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional, Union

import torch

from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.logging import InteractiveLogger
from avalanche.training import JointTraining, Naive, Replay
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin

from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.masking.text_mask import TextMaskRule, class_name_token_ids
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.storage.budget import budget_from_samples_per_class
from avalanche_exmask.storage.buffer import ByteBudgetBuffer
from avalanche_exmask.storage.codecs import CimCodec, JpegCodec, MaskedCodec, RawCodec
from avalanche_exmask.training.augmentation import MultimodalAugmentation
from avalanche_exmask.models.factory import get_tokenizer
from avalanche_exmask.training.ncm import ncm_accuracy
from avalanche_exmask.training.plugin import MEMORY_BATCH_MODES, ByteBudgetReplayPlugin
from avalanche_exmask.training.weight_aligning import WeightAligningPlugin

__all__ = ["ExperimentConfig", "METHODS", "run_experiment", "build_benchmark", "summarise_accuracy"]

log = logging.getLogger(__name__)

METHODS = ("naive", "replay", "raw", "mrdc", "cim", "masking", "joint")
BUFFERED_METHODS = ("raw", "mrdc", "cim", "masking")


@dataclasses.dataclass
class ExperimentConfig:
    """Everything that defines a run (stored in its results file).

    :param method: one of :data:`METHODS`.
    :param benchmark: ``"synthetic"``, ``"mm_imagenet_r"``, ``"upmc_food101"`` or ``"image_text_folder"``.
    :param benchmark_args: keyword arguments of the benchmark generator (paths, sizes, ...).
    :param n_experiences: experiences ``L``.
    :param seed: seeds the class order, model head, selection, augmentation and data order.
    :param samples_per_class: the memory budget in the paper's unit (bytes of that many plain
        exemplars per class of the stream).
    :param budget_mode: ``"per_class"`` (fixed bytes per class) or ``"total"`` (re-divided among seen classes).
    :param model_name: open_clip model name.
    :param pretrained: open_clip tag or local weights path.
    :param adapter: ``"ssf"``, ``"lora"``, ``"ia3"`` or ``"none"``.
    :param epochs: epochs per experience.
    :param batch_size: training batch size (replay adds as many exemplars per batch).
    :param lr: learning rate of AdamW.
    :param image_attention: source of the image mask's scores: ``"last"`` (the paper), ``"rollout"``
        or a block index (see :class:`~avalanche_exmask.models.MultimodalCLIPClassifier`).
    :param skip_empty_patches: the image tower ignores all-black patches (a masked exemplar's
        discarded ones) instead of seeing black pixels.
    :param image_rule: ``"threshold"`` (keep patches >= ``tau`` x mean attention) or ``"ratio"``.
    :param tau: image threshold multiple.
    :param keep_ratio: image keep ratio for ``"ratio"``.
    :param background_downsample: ``"patch"`` (default: each discarded patch also stored as its
        mean colour, 3 bytes), ``None`` (the paper: stored as nothing, shown black) or ``k``
        (average-pooled ``k x`` per side); see :class:`~avalanche_exmask.storage.codecs.MaskedCodec`.
    :param text_mode: ``"both"``, ``"class"``, ``"context"`` or ``"none"`` (no text mask).
    :param text_class_source: class-related tokens are the class-name words (``"names"``, from the
        benchmark's ``class_names``) or the paper's pooled-token attention (``"attention"``).
    :param context_ratio: fraction of content tokens kept as context of the discarded patches.
    :param memory_batch: ``"class_balanced"`` (every seen class replayed at the rate of a new one)
        or ``"fixed"`` (Avalanche's: one train batch of exemplars per step); buffered methods.
    :param weight_aligning: rescale the new classes' head rows after each experience (buffered methods).
    :param p_fill: augmentation: fill dropped patches from a same-class exemplar.
    :param p_token_mix: augmentation: mix the kept tokens of two same-class exemplars.
    :param p_swap_text: augmentation: pair the image with a same-class exemplar's text.
    :param jpeg_quality: JPEG quality for ``mrdc``.
    :param device: ``"cpu"``, ``"cuda"``, ...
    :param progress: show Avalanche's InteractiveLogger progress bars.
    """

    method: str = "masking"
    benchmark: str = "synthetic"
    benchmark_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    n_experiences: int = 5
    seed: int = 0
    samples_per_class: float = 5.0
    budget_mode: str = "per_class"
    model_name: str = "exmask-tiny"
    pretrained: Optional[str] = "synthetic"
    adapter: str = "ssf"
    epochs: int = 5
    batch_size: int = 32
    lr: float = 3e-3
    image_attention: Union[str, int] = "last"
    skip_empty_patches: bool = False
    image_rule: str = "threshold"
    tau: float = 1.0
    keep_ratio: float = 0.3
    background_downsample: Optional[Union[int, str]] = "patch"
    text_mode: str = "both"
    text_class_source: str = "names"
    context_ratio: float = 0.2
    memory_batch: str = "class_balanced"
    weight_aligning: bool = False
    p_fill: float = 0.0
    p_token_mix: float = 0.0
    p_swap_text: float = 0.0
    jpeg_quality: int = 50
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"config.method must be one of {METHODS}; got {self.method!r}")
        if self.memory_batch not in MEMORY_BATCH_MODES:
            raise ValueError(f"config.memory_batch must be one of {MEMORY_BATCH_MODES}; got {self.memory_batch!r}")
        if self.budget_mode not in ("per_class", "total"):
            raise ValueError(f"config.budget_mode must be 'per_class' or 'total'; got {self.budget_mode!r}")
        if self.samples_per_class <= 0:
            raise ValueError(f"config.samples_per_class must be > 0; got {self.samples_per_class}")
        for name in ("epochs", "batch_size", "n_experiences"):
            if getattr(self, name) < 1:
                raise ValueError(f"config.{name} must be >= 1; got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExperimentConfig":
        """Build from a dict (e.g. YAML); unknown keys raise an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def build_benchmark(config: ExperimentConfig):
    """The Avalanche benchmark named by the config (class order seeded by ``config.seed``)."""
    args = dict(config.benchmark_args)
    args.setdefault("seed", config.seed)
    args.setdefault("model_name", config.model_name)
    if config.benchmark == "synthetic":
        from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal

        return synthetic_multimodal(n_experiences=config.n_experiences, **args)
    if config.benchmark == "mm_imagenet_r":
        from avalanche_exmask.benchmarks.mm_imagenet_r import mm_imagenet_r

        return mm_imagenet_r(n_experiences=config.n_experiences, **args)
    if config.benchmark == "upmc_food101":
        from avalanche_exmask.benchmarks.upmc_food101 import upmc_food101

        return upmc_food101(n_experiences=config.n_experiences, **args)
    if config.benchmark == "image_text_folder":
        from avalanche_exmask.benchmarks.image_text_folder import image_text_folder

        return image_text_folder(n_experiences=config.n_experiences, **args)
    raise ValueError(f"unknown config.benchmark {config.benchmark!r}")


def _codec(config: ExperimentConfig, patch_size: int, benchmark, model_name: str):
    if config.method == "raw":
        return RawCodec()
    if config.method == "mrdc":
        return JpegCodec(quality=config.jpeg_quality)
    if config.method == "cim":
        return CimCodec()
    text_rule = TextMaskRule(mode=config.text_mode, class_source=config.text_class_source, context_ratio=config.context_ratio)
    class_token_ids = None
    if text_rule.needs_class_names:
        names = getattr(benchmark, "class_names", None)
        if names is None:
            raise ValueError(
                f"text_class_source='names' needs class names, but benchmark {config.benchmark!r} has none; "
                "set text_class_source: attention"
            )
        class_token_ids = class_name_token_ids(names, get_tokenizer(model_name))
    return MaskedCodec(
        image_rule=ImageMaskRule(kind=config.image_rule, tau=config.tau, ratio=config.keep_ratio),
        text_rule=text_rule,
        class_token_ids=class_token_ids,
        patch_size=patch_size,
        background_downsample=config.background_downsample,
    )


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
        seen.append(sum(a * w for a, w in zip(row[: t + 1], weights)) / sum(weights))
    last = len(matrix) - 1
    drops = [max(matrix[t][j] for t in range(j, last)) - matrix[last][j] for j in range(last)]
    return {
        "seen_accuracy": seen,
        "final_accuracy": seen[-1],
        "average_incremental_accuracy": sum(seen) / len(seen),
        "forgetting": sum(drops) / len(drops) if drops else 0.0,
    }


def run_experiment(config: ExperimentConfig, *, benchmark=None) -> dict[str, Any]:
    """Train and evaluate one method; return the results dict (see the module docstring).

    :param benchmark: a prebuilt benchmark (to share one across methods); else built from the config.
    """
    start = time.perf_counter()
    benchmark = benchmark if benchmark is not None else build_benchmark(config)
    train_stream, test_stream = benchmark.train_stream, benchmark.test_stream
    n_classes = sum(len(exp.classes_in_this_experience) for exp in train_stream)
    torch.manual_seed(config.seed)
    model = MultimodalCLIPClassifier(
        config.model_name, config.pretrained, adapter=config.adapter, image_attention=config.image_attention,
        skip_empty_patches=config.skip_empty_patches,
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0)
    budget = budget_from_samples_per_class(config.samples_per_class, n_classes, model.image_size, model.context_length)
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        loggers=[InteractiveLogger()] if config.progress else [],
    )
    common = dict(
        model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(), train_mb_size=config.batch_size, train_epochs=config.epochs,
        eval_mb_size=128, device=config.device, evaluator=evaluator,
    )
    replay_plugin = None
    if config.method == "naive":
        strategy = Naive(**common)
    elif config.method == "joint":
        strategy = JointTraining(**common)
    elif config.method == "replay":
        strategy = Replay(mem_size=int(config.samples_per_class * n_classes), **common)
    else:
        augmentation = None
        if config.method == "masking" and (config.p_fill or config.p_token_mix or config.p_swap_text):
            augmentation = MultimodalAugmentation(
                p_fill=config.p_fill, p_token_mix=config.p_token_mix, p_swap_text=config.p_swap_text, seed=config.seed
            )
        buffer = ByteBudgetBuffer(
            max_size=budget,
            codec=_codec(config, model.patch_size, benchmark, config.model_name),
            mode=config.budget_mode,
            total_num_classes=n_classes if config.budget_mode == "per_class" else None,
            seed=config.seed,
            augmentation=augmentation,
        )
        replay_plugin = ByteBudgetReplayPlugin(mem_size=budget, storage_policy=buffer, memory_batch=config.memory_batch)
        plugins = [replay_plugin] + ([WeightAligningPlugin()] if config.weight_aligning else [])
        strategy = Naive(plugins=plugins, **common)

    matrix: list[list[float]] = []
    train_seconds: list[float] = []
    if config.method == "joint":
        t0 = time.perf_counter()
        strategy.train(train_stream)
        train_seconds.append(time.perf_counter() - t0)
        matrix.append(_evaluate(strategy, test_stream, len(test_stream) - 1))
        matrix = [matrix[-1]] * len(train_stream)  # one model: same row at every step
    else:
        for t, experience in enumerate(train_stream):
            t0 = time.perf_counter()
            strategy.train(experience)
            train_seconds.append(time.perf_counter() - t0)
            matrix.append(_evaluate(strategy, test_stream, t))
    sizes = [len(exp.dataset) for exp in test_stream]
    results: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "n_classes": n_classes,
        "class_order": getattr(benchmark, "class_order", None),
        "budget_nbytes": budget,
        "accuracy_matrix": matrix,
        "test_sizes": sizes,
        **summarise_accuracy(matrix, sizes),
        "parameters": model.trainable_parameter_report(),
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - start,
    }
    if replay_plugin is not None:
        stats = replay_plugin.storage_policy.stats()
        per_class = list(stats.classes.values())
        results["buffer"] = stats.to_dict()
        results["exemplars_per_class"] = sum(c.n_exemplars for c in per_class) / max(1, len(per_class))
        results["buffer_nbytes"] = stats.accounted_nbytes
        fractions = [c.kept_patch_fraction for c in per_class if c.kept_patch_fraction is not None]
        tokens = [c.kept_token_fraction for c in per_class if c.kept_token_fraction is not None]
        results["kept_patch_fraction"] = sum(fractions) / len(fractions) if fractions else None
        results["kept_token_fraction"] = sum(tokens) / len(tokens) if tokens else None
        results["timings"] = replay_plugin.timings
        results["ncm_final_accuracy"] = ncm_accuracy(
            model, replay_plugin.storage_policy, _concat([exp.dataset for exp in test_stream]), config.device
        )
    elif config.method == "replay":
        replay = next(p for p in strategy.plugins if isinstance(p, ReplayPlugin))
        results["exemplars_per_class"] = len(replay.storage_policy.buffer) / n_classes
    return results


def _concat(datasets: list):
    """One Avalanche dataset of several (lazy concatenation)."""
    whole = datasets[0]
    for dataset in datasets[1:]:
        whole = whole.concat(dataset)
    return whole


def _evaluate(strategy, test_stream, upto: int) -> list[float]:
    """Accuracies (%) on test experiences ``0..upto``."""
    metrics = strategy.eval(test_stream[: upto + 1])
    row = []
    for j in range(upto + 1):
        key = next(k for k in metrics if k.startswith("Top1_Acc_Exp/eval_phase/test_stream") and k.endswith(f"Exp{j:03d}"))
        row.append(100.0 * float(metrics[key]))
    return row


def save_results(results: dict[str, Any], path: str | Path) -> Path:
    """Write results as indented JSON (creating folders); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))
    return path


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table of runs: accuracy figures in %, buffer contents, wall time in seconds."""
    header = f"{'method':<10} {'final acc':>9} {'avg inc acc':>11} {'forgetting':>10} {'ex/class':>8} {'buffer KB':>9} {'wall s':>7}"
    lines = [header, "-" * len(header)]
    for run in results:
        exemplars = run.get("exemplars_per_class")
        buffer_kb = run.get("buffer_nbytes")
        lines.append(
            f"{run['config']['method']:<10} {run['final_accuracy']:>9.1f} {run['average_incremental_accuracy']:>11.1f} "
            f"{run['forgetting']:>10.1f} {'-' if exemplars is None else f'{exemplars:.1f}':>8} "
            f"{'-' if buffer_kb is None else f'{buffer_kb / 1024:.0f}':>9} {run['wall_seconds']:>7.0f}"
        )
    return "\n".join(lines)
