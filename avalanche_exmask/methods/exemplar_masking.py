"""``masking``: the paper's method, built as :class:`~avalanche_exmask.training.strategy.ExemplarMasking`
(the same class the Python API offers), with the codec every buffered method gets from
``storage.options.masked`` (:meth:`~avalanche_exmask.methods.base.BuildContext.codec`)."""
from __future__ import annotations

from avalanche_exmask.methods.base import BuildContext, MethodSpec
from avalanche_exmask.methods.buffered import buffer_report, replay_augmentation
from avalanche_exmask.registry import METHODS
from avalanche_exmask.training.strategy import ExemplarMasking


def build(context: BuildContext) -> ExemplarMasking:
    config = context.config
    return ExemplarMasking(
        mem_size=context.budget_nbytes,
        total_num_classes=context.n_classes if config.storage.budget.mode == "per_class" else None,
        codec=context.codec("masked"),
        augmentation=replay_augmentation(context),
        selection=config.storage.selection,
        memory_batch=config.train.memory_batch,
        replay_rate=config.train.replay_rate,
        weight_aligning=config.train.weight_aligning,
        current_through_codec=config.train.current_through_codec,
        current_codec_scores=config.train.current_codec_scores,
        seed=config.seed,
        **context.template_kwargs,
    )


METHODS.register("masking")(
    MethodSpec(build=build, codec="masked", report=buffer_report, description="exemplar masking (Lee et al., 2024)")
)
