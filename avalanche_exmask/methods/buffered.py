"""Replay from our byte-budgeted buffer with a given codec: ``raw`` (the paper's "SSF": plain
exemplars), ``mrdc`` (JPEG, MRDC-style) and ``cim`` (CIM-style); and the figures every buffered
method reports."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from avalanche.training import Naive

from avalanche_exmask.methods.base import BuildContext, MethodSpec
from avalanche_exmask.registry import METHODS
from avalanche_exmask.training.augmentation import MultimodalAugmentation
from avalanche_exmask.training.plugin import ByteBudgetReplayPlugin
from avalanche_exmask.training.replay_stack import byte_budget_replay_plugins

__all__ = ["buffered_replay", "replay_augmentation", "replay_plugin_of", "buffer_report"]


def replay_augmentation(context: BuildContext):
    """The run's :class:`MultimodalAugmentation`, or ``None`` when every probability is 0."""
    options = context.config.train.augmentation
    if not options.active:
        return None
    return MultimodalAugmentation(
        p_fill=options.p_fill, p_token_mix=options.p_token_mix, p_swap_text=options.p_swap_text, seed=context.config.seed
    )


def buffered_replay(codec: str) -> Callable[[BuildContext], Naive]:
    """A builder: Avalanche's ``Naive`` with a :class:`ByteBudgetReplayPlugin` over a buffer of ``codec``
    (and the plugins of ``template_kwargs``, after the method's own)."""

    def build(context: BuildContext) -> Naive:
        config = context.config
        template_kwargs = dict(context.template_kwargs)
        plugins = byte_budget_replay_plugins(
            codec=context.codec(codec),
            mem_size=context.budget_nbytes,
            total_num_classes=context.n_classes if config.storage.budget.mode == "per_class" else None,
            selection=config.storage.selection,
            augmentation=replay_augmentation(context),
            memory_batch=config.train.memory_batch,
            replay_rate=config.train.replay_rate,
            weight_aligning=config.train.weight_aligning,
            current_through_codec=config.train.current_through_codec,
            current_codec_scores=config.train.current_codec_scores,
            seed=config.seed,
            plugins=template_kwargs.pop("plugins", []),
        )
        return Naive(plugins=plugins, **template_kwargs)

    return build


def replay_plugin_of(strategy: Any) -> ByteBudgetReplayPlugin:
    """The strategy's :class:`ByteBudgetReplayPlugin`."""
    return next(p for p in strategy.plugins if isinstance(p, ByteBudgetReplayPlugin))


def buffer_report(strategy: Any, context: BuildContext) -> dict[str, Any]:
    """Exemplars per class, bytes, kept fractions, timings, the buffer's SHA-256 (and each rank's,
    under ``torchrun``) and (``eval.ncm``) the NCM readout."""
    from avalanche_exmask.distributed import gather_objects
    from avalanche_exmask.training.ncm import ncm_accuracy

    plugin = replay_plugin_of(strategy)
    stats = plugin.storage_policy.stats()
    per_class = list(stats.classes.values())
    fractions = [c.kept_patch_fraction for c in per_class if c.kept_patch_fraction is not None]
    tokens = [c.kept_token_fraction for c in per_class if c.kept_token_fraction is not None]
    report = {
        "buffer": stats.to_dict(),
        "buffer_sha256": plugin.storage_policy.content_sha256(),
        "buffer_sha256_per_rank": gather_objects(plugin.storage_policy.content_sha256()),
        "exemplars_per_class": sum(c.n_exemplars for c in per_class) / max(1, len(per_class)),
        "buffer_nbytes": stats.accounted_nbytes,
        "kept_patch_fraction": sum(fractions) / len(fractions) if fractions else None,
        "kept_token_fraction": sum(tokens) / len(tokens) if tokens else None,
        "timings": plugin.timings,
    }
    if context.config.eval.ncm:
        test = context.benchmark.test_stream
        whole = test[0].dataset
        for experience in test[1:]:
            whole = whole.concat(experience.dataset)
        report["ncm_final_accuracy"] = ncm_accuracy(
            context.model, plugin.storage_policy, whole, strategy.device, strategy.eval_mb_size
        )
    return report


for _name, _codec, _text in (
    ("raw", "raw", "plain exemplars in a byte budget (the paper's \"SSF\")"),
    ("mrdc", "jpeg", "JPEG exemplars in a byte budget (MRDC-style)"),
    ("cim", "cim", "attention box at full resolution, rest downsampled (CIM-style)"),
):
    METHODS.register(_name)(MethodSpec(build=buffered_replay(_codec), codec=_codec, report=buffer_report, description=_text))
