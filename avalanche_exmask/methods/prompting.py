"""The paper's replay-free rows: ``l2p``, ``dualprompt`` and ``ease`` on the frozen multimodal CLIP
(:mod:`avalanche_exmask.training.prompting`).

Their options are the config's ``method_options.<method>`` (the fields of the dataclasses below,
validated and completed with defaults like the codecs' ``storage.options``). They need a frozen
backbone: a config that does not name ``model.adapter`` gets ``none``, and any other adapter is an
error naming ``model.adapter``. No replay and no task labels at test time.

**Learning rate.** Each has an ``lr`` option, the learning rate of its own parameters and of the head
(``null``: the run's ``train.lr``). L2P and DualPrompt default to 0.03, Avalanche's
``LearningToPrompt`` default (L2P's recipe): their prompts start random (U(-1, 1)), and at the
study's SSF rate (3e-3) they barely move in a short schedule, so the random prompts mostly perturb
the frozen features (README, "Replay-free baselines", has the measurements). EASE's adapters start
at zero (the frozen model) and use ``train.lr``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from avalanche_exmask.config_schema import RunConfig
from avalanche_exmask.methods.base import BuildContext, MethodSpec
from avalanche_exmask.registry import METHODS

__all__ = ["L2POptions", "DualPromptOptions", "EASEOptions", "towers_of_option", "prompting_report"]

TowersOption = Literal["both", "image", "text"]


def towers_of_option(towers: str) -> tuple[str, ...]:
    """``"both"`` -> ``("image", "text")``; ``"image"`` / ``"text"`` -> that tower alone."""
    return ("image", "text") if towers == "both" else (towers,)


def _at_least(options: Any, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(options, name)
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}; got {value}")


def _positive_lr(options: Any) -> None:
    if options.lr is not None and not options.lr > 0:
        raise ValueError(f"lr must be > 0 or null; got {options.lr}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class L2POptions:
    """``method_options.l2p``.

    :param towers: prompted towers: ``both`` (a pool per tower), ``image`` or ``text``.
    :param pool_size: prompts per pool ``M``.
    :param prompt_length: tokens per prompt ``P``.
    :param top_k: prompts chosen per sample ``N``.
    :param prompt_init: ``uniform`` (U(-1, 1)) or ``zero``.
    :param key_coefficient: weight of the surrogate (key-matching) loss.
    :param mask_old_logits: mask other classes' logits while training.
    :param lr: learning rate of the prompts, keys and head (``null``: ``train.lr``).
    """

    towers: TowersOption = "both"
    pool_size: int = 10
    prompt_length: int = 5
    top_k: int = 5
    prompt_init: Literal["uniform", "zero"] = "uniform"
    key_coefficient: float = 0.1
    mask_old_logits: bool = True
    lr: float | None = 0.03

    def __post_init__(self) -> None:
        _positive_lr(self)
        _at_least(self, 1, "pool_size", "prompt_length", "top_k")
        if self.top_k > self.pool_size:
            raise ValueError(f"top_k must be <= pool_size ({self.pool_size}); got {self.top_k}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DualPromptOptions:
    """``method_options.dualprompt``.

    :param towers: prompted towers: ``both``, ``image`` or ``text``.
    :param selection: ``joint`` (one key per experience, matched to the fused embedding, choosing
        both towers' E-prompts) or ``per_tower`` (each tower's keys matched to its own feature).
    :param g_depth: blocks with the G-prompt (the first ``g_depth``).
    :param e_depth: blocks with E-prompts (the next ``e_depth``).
    :param g_length: prefix length of the G-prompt.
    :param e_length: prefix length of an E-prompt.
    :param n_tasks: E-prompts in the pool; ``null``: the benchmark's number of experiences.
    :param key_coefficient: weight of the key-matching loss.
    :param mask_old_logits: mask other classes' logits while training.
    :param lr: learning rate of the prompts, keys and head (``null``: ``train.lr``).
    """

    towers: TowersOption = "both"
    selection: Literal["joint", "per_tower"] = "joint"
    g_depth: int = 1
    e_depth: int = 2
    g_length: int = 5
    e_length: int = 5
    n_tasks: int | None = None
    key_coefficient: float = 1.0
    mask_old_logits: bool = True
    lr: float | None = 0.03

    def __post_init__(self) -> None:
        _positive_lr(self)
        _at_least(self, 0, "g_depth")
        _at_least(self, 1, "e_depth", "g_length", "e_length", "n_tasks")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EASEOptions:
    """``method_options.ease``.

    :param towers: adapted towers: ``both``, ``image`` or ``text``.
    :param bottleneck: adapters' hidden width ``r``.
    :param scale: adapters' output scale.
    :param temperature: softmax temperature of the prototype completion.
    :param completed_weight: weight of completed prototypes in the prediction.
    :param mask_old_logits: mask other classes' logits while training the current adapter.
    :param lr: learning rate of the adapters and head (``null``: ``train.lr``).
    """

    towers: TowersOption = "both"
    bottleneck: int = 16
    scale: float = 0.1
    temperature: float = 0.1
    completed_weight: float = 1.0
    mask_old_logits: bool = True
    lr: float | None = None

    def __post_init__(self) -> None:
        _positive_lr(self)
        _at_least(self, 1, "bottleneck")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature}")
        if self.completed_weight < 0:
            raise ValueError(f"completed_weight must be >= 0; got {self.completed_weight}")


def _options(context: BuildContext, cls: type) -> Any:
    """The run's options of its method, after the frozen-backbone check (their ``lr`` is the
    optimizer's already: :func:`_learning_rate`)."""
    config = context.config
    if config.model.adapter != "none":
        raise ValueError(f"model.adapter must be 'none' for method {config.method!r} (a frozen backbone); got {config.model.adapter!r}")
    return cls(**config.method_options.get(config.method, {}))


def _learning_rate(config: RunConfig) -> float | None:
    """The method's ``lr`` option (``None``: ``train.lr``), with which the runner builds the optimizer."""
    return config.method_options.get(config.method, {}).get("lr")


def _build_l2p(context: BuildContext):
    from avalanche_exmask.models.l2p import L2PCLIP
    from avalanche_exmask.training.prompting import LearningToPromptCLIP

    options = _options(context, L2POptions)
    model = L2PCLIP(
        context.model, towers=towers_of_option(options.towers), pool_size=options.pool_size,
        prompt_length=options.prompt_length, top_k=options.top_k, prompt_init=options.prompt_init,
    )
    return LearningToPromptCLIP(
        **{**context.template_kwargs, "model": model}, key_coefficient=options.key_coefficient, mask_old_logits=options.mask_old_logits
    )


def _build_dualprompt(context: BuildContext):
    from avalanche_exmask.models.dualprompt import DualPromptCLIP
    from avalanche_exmask.training.prompting import DualPromptStrategy

    options = _options(context, DualPromptOptions)
    model = DualPromptCLIP(
        context.model, n_tasks=options.n_tasks or len(context.benchmark.train_stream), towers=towers_of_option(options.towers),
        selection=options.selection, g_depth=options.g_depth, e_depth=options.e_depth, g_length=options.g_length, e_length=options.e_length,
    )
    return DualPromptStrategy(
        **{**context.template_kwargs, "model": model}, key_coefficient=options.key_coefficient, mask_old_logits=options.mask_old_logits
    )


def _build_ease(context: BuildContext):
    from avalanche_exmask.models.ease import EASECLIP
    from avalanche_exmask.training.prompting import EASEStrategy

    options = _options(context, EASEOptions)
    model = EASECLIP(
        context.model, n_tasks=len(context.benchmark.train_stream), n_classes=context.n_classes,
        towers=towers_of_option(options.towers), bottleneck=options.bottleneck, scale=options.scale,
        temperature=options.temperature, completed_weight=options.completed_weight,
    )
    return EASEStrategy(**{**context.template_kwargs, "model": model}, mask_old_logits=options.mask_old_logits)


def prompting_report(strategy: Any, context: BuildContext) -> dict[str, Any]:
    """The method model's parameter counts; ``trainable_parameters`` (what one experience trains)
    is a figure of the results tables."""
    report = strategy.model.trainable_parameter_report()
    return {"method_parameters": report, "trainable_parameters": report["trainable"]}


for _name, _build, _options_class, _text in (
    ("l2p", _build_l2p, L2POptions, "L2P: prompt pools with key matching in both towers of a frozen CLIP (no replay)"),
    ("dualprompt", _build_dualprompt, DualPromptOptions, "DualPrompt: G- and E-prefixes in both towers of a frozen CLIP (no replay)"),
    ("ease", _build_ease, EASEOptions, "EASE: an adapter set per experience, prototype classifier with completion (no replay)"),
):
    METHODS.register(_name)(
        MethodSpec(
            build=_build, options=_options_class, backbone_adapter="none", report=prompting_report, description=_text,
            learning_rate=_learning_rate,
        )
    )
