"""The nested, typed run configuration, validated completely before anything runs.

A run is described by a :class:`RunConfig` with one section per concern::

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

A study file may give ``methods:`` and ``seeds:`` lists instead of ``method`` / ``seed``; it expands
into one run per (method, seed). :func:`load_runs` reads such a file, applies ``--set a.b=value``
overrides, and validates every run before returning: an unknown field, a value of the wrong type,
a field that applies to none of the file's methods, or a bad value caught by a section's own checks
raises :class:`ConfigError` naming the field and the file. Files in the flat format of earlier
versions (``samples_per_class: 5``, ``text_mode: none``, ...) are converted by :func:`from_flat`.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from avalanche_exmask.config_flat import FLAT_FIELDS, from_flat, is_flat
from avalanche_exmask.config_values import ConfigError, build_dataclass, convert_value, set_path
from avalanche_exmask.registry import BENCHMARKS

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
    "expand_runs",
    "apply_override",
    "check_distinct",
    "resolve_run",
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
#: The deepest nesting a config file may have (the schema is 5 levels deep).
MAX_DEPTH = 32
#: Quoted YAML scalars and comments (where brackets do not nest).
_QUOTED_OR_COMMENT = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"\\]|\\.)*\"|#[^\n]*")


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
    """

    #: The fields that apply only to methods with an exemplar buffer.
    replay_fields: ClassVar[tuple[str, ...]] = (
        "memory_batch", "replay_rate", "weight_aligning", "augmentation", "current_through_codec"
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

    def __post_init__(self) -> None:
        if not 0 <= self.current_through_codec <= 1:
            raise ValueError(f"current_through_codec must be in [0, 1]; got {self.current_through_codec}")
        _positive(self, "epochs")
        _positive(self, "batch_size", MAX_BATCH_SIZE)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")
        if self.replay_rate == "per_class" and self.memory_batch == "fixed":
            raise ValueError("replay_rate 'per_class' needs memory_batch 'class_share' or 'class_balanced'")
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


# --------------------------------------------------------------------------- files and overrides
def apply_override(values: dict[str, Any], override: str, *, source: str = "--set") -> None:
    """Apply one ``a.b=value`` override in place (the value is parsed as YAML).

    ``method=`` and ``seed=`` replace a file's ``methods`` / ``seeds`` lists (and the lists can be
    overridden themselves: ``seeds=[0,1]``).
    """
    import yaml

    path, sep, text = override.partition("=")
    if not sep or not path:
        raise ConfigError(f"{source}: an override is path=value; got {override!r}")
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as error:
        raise ConfigError(f"{source}: {path}: malformed YAML value ({type(error).__name__})") from None
    _check_depth(value, path, source)
    if path in ("method", "seed"):
        values.pop(path + "s", None)
    if path in ("methods", "seeds"):
        values.pop(path[:-1], None)
    if "." not in path and path in FLAT_FIELDS and FLAT_FIELDS[path] != path:
        path = FLAT_FIELDS[path]
    set_path(values, path, value)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML/JSON mapping in ``path``.

    :raises ConfigError: naming the file (and the line, for YAML syntax errors).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error})") from None
    if _text_depth(text) > MAX_DEPTH:
        raise ConfigError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels; the schema has 5)")
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where}: malformed YAML: {getattr(error, 'problem', None) or error}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels; the schema has 5)") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the config must be a mapping; got {type(values).__name__}")
    _check_depth(values, "", str(path))
    return values


def _text_depth(text: str) -> int:
    """An upper estimate of the nesting depth of YAML ``text``, read in one pass before the
    (recursive, and slow on deep input) YAML parser sees it: the deeper of its flow brackets
    outside quotes and comments, and its stack of block indentations."""
    flow = deepest = 0
    for char in _QUOTED_OR_COMMENT.sub("", text):
        if char in "[{":
            flow += 1
            deepest = max(deepest, flow)
        elif char in "]}":
            flow = max(flow - 1, 0)
    indents: list[int] = []
    for line in text.splitlines():
        content = line.lstrip(" ")
        if not content or content.startswith("#"):
            continue
        indent = len(line) - len(content)
        while indents and indents[-1] >= indent:
            indents.pop()
        indents.append(indent)
        deepest = max(deepest, len(indents))
    return deepest


def _check_depth(values: Any, where: str, source: str) -> None:
    """Refuse lists and mappings nested more than :data:`MAX_DEPTH` levels (walked without recursion).

    :raises ConfigError: naming the path where the limit is passed.
    """
    pending = [(values, where, 0)]
    while pending:
        value, path, depth = pending.pop()
        if not isinstance(value, (dict, list)):
            continue
        if depth >= MAX_DEPTH:
            raise ConfigError(f"{source}: {path or 'the config'} is nested more than {MAX_DEPTH} levels deep")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        pending.extend((item, f"{path}.{key}" if isinstance(value, dict) else f"{path}[{key}]", depth + 1) for key, item in items)


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


def load_runs(path: str | Path, overrides: Sequence[str] = ()) -> list[RunConfig]:
    """The validated runs of a config file with ``a.b=value`` overrides applied (see the module docstring)."""
    values = read_config_file(path)
    if is_flat(values):
        values = from_flat(values, source=str(path))
    for override in overrides:
        apply_override(values, override)
    return expand_runs(values, source=str(path))
