"""The schema of a run: the typed, frozen sections of a :class:`RunConfig` and each section's own
checks of its values.

A run has one section per concern (the YAML form; :mod:`avalanche_exmask.config` reads files)::

    method: masking
    seed: 0
    benchmark: {name: synthetic, n_experiences: 6, args: {n_classes: 30}}
    model: {name: exmask-tiny, pretrained: synthetic, adapter: ssf}
    storage:
      budget: {samples_per_class: 5, mode: per_class}
      selection: herding
      options:                          # per codec, read by the methods that use that codec
        masked: {text_rule: {mode: none}, image_rule: {kind: threshold, tau: 1.0}}
        jpeg: {quality: 50}
    train: {epochs: 2, batch_size: 32, lr: 0.003, memory_batch: class_share}
    eval: {batch_size: 128, ncm: true}
    logging: {progress: false, csv: logs/}
    loader: {num_workers: 4, persistent_workers: true}     # DataLoader workers (GPU runs)
    accelerator: {precision: bf16, channels_last: false, compile: false}
    method_options:                     # per method, read by the methods that declare options
      l2p: {towers: both, pool_size: 10}

Each section checks its own values when built (``__post_init__``, raising ``ValueError``);
:func:`~avalanche_exmask.config_values.build_dataclass` builds sections from plain values and turns
those errors into :class:`~avalanche_exmask.config_values.ConfigError` naming the field. The
schema names no particular codec: a codec's options are checked by its registry entry.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from avalanche_exmask.config_values import build_dataclass
from avalanche_exmask.registry import BENCHMARKS

__all__ = [
    "MAX_SEED",
    "MAX_BATCH_SIZE",
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
]


def _positive(section: Any, name: str, high: int | None = None) -> None:
    value = getattr(section, name)
    if value < 1 or (high is not None and value > high):
        raise ValueError(f"{name} must be >= 1" + (f" and <= {high}" if high is not None else "") + f"; got {value}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchmarkSection:
    """:param name: a benchmark generator: ``synthetic``, ``clipart`` (the embedded real-image
        benchmark), ``image_text_folder``, ``mm_imagenet_r``, ``upmc_food101``.
    :param n_experiences: experiences ``L``.
    :param args: keyword arguments of the generator (paths, sizes, ``class_order``, ...); the seed
        and the model name are passed unless given here.
    """

    name: str = "synthetic"
    n_experiences: int = 5
    args: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in BENCHMARKS:
            raise ValueError(f"name must be one of {tuple(BENCHMARKS.names())}; got {self.name!r}")
        _positive(self, "n_experiences")


#: Seeds are in ``[0, MAX_SEED]`` (what NumPy's and torch's generators take alike).
MAX_SEED = 2**32 - 1
#: The largest batch size a config may give (a larger one fits no device; a typo spins).
MAX_BATCH_SIZE = 2**20


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSection:
    """:param name: open_clip model name.
    :param pretrained: open_clip tag, local weights path, ``"synthetic"`` or ``"real"`` (the
        shipped tiny weights, pretrained on synthetic renders or on real clip art) or ``None`` (random).
    :param adapter: ``ssf``, ``lora``, ``ia3`` or ``none``.
    :param image_attention: source of the image mask's scores: ``last``, ``rollout`` or a block index.
    :param mask_scores_from: which model scores the image mask: ``adapted`` (as trained so far)
        or ``pretrained`` (the adapter disabled).
    :param skip_empty_patches: what the image tower does with all-black patches: ``false`` (feed
        them), ``true`` / ``attention_mask`` (left out of the attention) or ``drop`` (token-dropping
        replay: removed from the token sequence, fewer FLOPs; masked exemplars have black patches
        only with ``storage.options.masked.background_downsample: null``).
    """

    name: str = "exmask-tiny"
    pretrained: str | None = "synthetic"
    adapter: str = "ssf"
    image_attention: str | int = "last"
    skip_empty_patches: bool | Literal["attention_mask", "drop"] = False
    mask_scores_from: Literal["adapted", "pretrained"] = "adapted"


@dataclasses.dataclass(frozen=True, kw_only=True)
class BudgetSection:
    """:param samples_per_class: the budget in the paper's unit: bytes of that many plain
        exemplars per class of the stream.
    :param mode: ``per_class`` (fixed bytes per class) or ``total`` (re-divided among seen classes).
    """

    samples_per_class: float = 5.0
    mode: Literal["per_class", "total"] = "per_class"

    def __post_init__(self) -> None:
        if not self.samples_per_class > 0:
            raise ValueError(f"samples_per_class must be > 0; got {self.samples_per_class}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StorageSection:
    """:param budget: the memory budget.
    :param selection: exemplar order: ``herding`` or ``random``.
    :param options: codec name -> that codec's options (the fields of its registered class, e.g.
        ``{jpeg: {quality: 30}}``); each buffered method reads its own codec's entry.
    """

    budget: BudgetSection = BudgetSection()
    selection: Literal["herding", "random"] = "herding"
    options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentationSection:
    """Probabilities of the multimodal augmentations of replayed exemplars (each in ``[0, 1]``)."""

    p_fill: float = 0.0
    p_token_mix: float = 0.0
    p_swap_text: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p_fill", "p_token_mix", "p_swap_text"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)}")

    @property
    def active(self) -> bool:
        return bool(self.p_fill or self.p_token_mix or self.p_swap_text)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSection:
    """:param epochs: epochs per experience (joint training: in all).
    :param batch_size: current-data samples per batch.
    :param lr: AdamW learning rate (the base rate of ``lr_schedule``).
    :param lr_schedule: ``constant``, or ``cosine``: decayed to 0 over each experience's iterations
        and restarted at the next (:class:`~avalanche_exmask.training.lr_schedule.CosineLRPlugin`;
        every method, joint training over its one call).
    :param memory_batch: ``class_share``, ``class_balanced`` or ``fixed`` (replay methods; see
        :class:`~avalanche_exmask.training.plugin.ByteBudgetReplayPlugin`).
    :param replay_rate: ``per_record`` (every stored record drawn alike) or ``per_class`` (every
        seen class drawn alike, whatever its record count; replay methods, not with ``fixed``).
    :param weight_aligning: rescale new classes' head rows after each experience (replay methods).
    :param augmentation: augmentation of replayed exemplars (replay methods).
    :param current_through_codec: probability that a current-data sample is replaced by its own
        decoded record (:class:`~avalanche_exmask.training.codec_augmentation.CurrentThroughCodecPlugin`;
        replay methods).
    :param current_codec_scores: ``step`` (default) or ``experience``: when current data are scored
        and encoded for that trip (in every step by the model as it is, or once an experience before
        its training, decoded in the loader; see
        :mod:`~avalanche_exmask.training.codec_augmentation`).
    """

    #: The fields that apply only to methods with an exemplar buffer.
    replay_fields: ClassVar[tuple[str, ...]] = (
        "memory_batch", "replay_rate", "weight_aligning", "augmentation", "current_through_codec",
        "current_codec_scores",
    )

    epochs: int = 5
    batch_size: int = 32
    lr: float = 3e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"
    memory_batch: Literal["class_balanced", "class_share", "fixed"] = "class_share"
    replay_rate: Literal["per_record", "per_class"] = "per_record"
    weight_aligning: bool = False
    augmentation: AugmentationSection = AugmentationSection()
    current_through_codec: float = 1.0
    current_codec_scores: Literal["step", "experience"] = "step"

    def __post_init__(self) -> None:
        if not 0 <= self.current_through_codec <= 1:
            raise ValueError(f"current_through_codec must be in [0, 1]; got {self.current_through_codec}")
        _positive(self, "epochs")
        _positive(self, "batch_size", MAX_BATCH_SIZE)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")
        if self.replay_rate == "per_class" and self.memory_batch == "fixed":
            raise ValueError("replay_rate 'per_class' needs memory_batch 'class_share' or 'class_balanced'")
        if self.current_codec_scores not in ("step", "experience"):
            raise ValueError(f"current_codec_scores must be 'step' or 'experience'; got {self.current_codec_scores!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine'; got {self.lr_schedule!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalSection:
    """:param batch_size: evaluation batch size.
    :param ncm: also report the nearest-class-mean readout over the stored exemplars (buffered methods).
    """

    batch_size: int = 128
    ncm: bool = True

    def __post_init__(self) -> None:
        _positive(self, "batch_size", MAX_BATCH_SIZE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoggingSection:
    """:param progress: Avalanche's ``InteractiveLogger`` progress bars.
    :param csv: folder for Avalanche's ``CSVLogger`` (one subfolder per run), or ``None``.
    :param tensorboard: folder for Avalanche's ``TensorboardLogger`` (one subfolder per run), or ``None``.
    :param wandb_project: a Weights & Biases project for Avalanche's ``WandBLogger``, or ``None``.
    """

    progress: bool = True
    csv: str | None = None
    tensorboard: str | None = None
    wandb_project: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoaderSection:
    """DataLoader settings of training (current data and decoded replay records), evaluation and
    the buffer's scoring pass. Images are read, decoded and resized, and replay records decoded,
    in the dataset's ``__getitem__``, so ``num_workers`` moves that work off the training process.

    :param num_workers: worker processes per loader (``0``: load in the training process).
    :param pin_memory: page-locked batches for faster host-to-GPU copies; ``null``: on when the
        device is CUDA (Avalanche's rule).
    :param persistent_workers: keep the workers alive between epochs (needs ``num_workers >= 1``).

    Each worker loads torch's default of 2 batches ahead. There is no ``prefetch_factor`` here:
    Avalanche 0.6's ``make_train_dataloader`` / ``make_eval_dataloader`` drop it, and its
    ``ReplayDataLoader`` builds a worker-less loader from the same arguments (to estimate its
    length), which torch refuses when a ``prefetch_factor`` is given.
    """

    num_workers: int = 0
    pin_memory: bool | None = None
    persistent_workers: bool = False

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0; got {self.num_workers}")
        if self.persistent_workers and not self.num_workers:
            raise ValueError("persistent_workers needs num_workers >= 1")

    def template_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for Avalanche's ``strategy.train(...)`` / ``strategy.eval(...)``, which
        pass them to ``make_train_dataloader`` / ``make_eval_dataloader``, to the replay plugin's
        loader and to the buffer's update."""
        kwargs: dict[str, Any] = {"num_workers": self.num_workers, "pin_memory": self.pin_memory}
        if self.num_workers:
            kwargs["persistent_workers"] = self.persistent_workers
        return kwargs


@dataclasses.dataclass(frozen=True, kw_only=True)
class AcceleratorSection:
    """GPU settings; all off by default (and pointless on a CPU, except ``precision: bf16``).

    :param precision: ``fp32``, ``bf16`` or ``fp16``: autocast of the training and evaluation
        forward passes (:class:`~avalanche_exmask.training.mixed_precision.MixedPrecisionPlugin`;
        ``fp16`` adds a gradient scaler).
    :param channels_last: the patch embedding's convolution in channels-last memory format.
    :param compile: ``torch.compile`` the transformer blocks' MLPs
        (:func:`~avalanche_exmask.models.acceleration.compile_mlps`).
    :param compile_mode: ``torch.compile``'s mode.
    """

    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One run: a method, a seed and the sections above (stored in its results file).

    :param method: a registered method (:data:`avalanche_exmask.registry.METHODS`).
    :param seed: seeds the class order, the head, selection, augmentation and data order; in
        ``[0, 2**32 - 1]``.
    :param device: ``cpu``, ``cuda``, ...
    :param method_options: method name -> that method's options (the fields of its registered
        ``MethodSpec.options`` dataclass, e.g. ``{l2p: {pool_size: 20}}``); each method reads its own entry.
    """

    method: str = "masking"
    seed: int = 0
    device: str = "cpu"
    benchmark: BenchmarkSection = BenchmarkSection()
    model: ModelSection = ModelSection()
    storage: StorageSection = StorageSection()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    logging: LoggingSection = LoggingSection()
    loader: LoaderSection = LoaderSection()
    accelerator: AcceleratorSection = AcceleratorSection()
    method_options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        from avalanche_exmask.registry import CODECS, METHODS

        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS.names()}; got {self.method!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be in [0, {MAX_SEED}]; got {self.seed}")
        codec = METHODS.get(self.method).codec
        check_run = CODECS.get(codec).check_run if codec is not None and codec in CODECS else None
        if check_run is not None:
            check_run(self, self.storage.options.get(codec, {}))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready nested dict (what the results file stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> RunConfig:
        """Build and validate from a nested dict; errors name the field and ``source``."""
        return build_dataclass(cls, values, where="", source=source)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with top-level fields replaced (sections as objects)."""
        return dataclasses.replace(self, **changes)

