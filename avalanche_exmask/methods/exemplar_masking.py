"""``masking``: the paper's method, built as :class:`~avalanche_exmask.training.strategy.ExemplarMasking`
(the same class the Python API offers), with its codec options from ``storage.options.masked``."""
from __future__ import annotations

from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.masking.text_mask import TextMaskRule
from avalanche_exmask.methods.base import BuildContext, MethodSpec
from avalanche_exmask.methods.buffered import replay_augmentation, buffer_report
from avalanche_exmask.registry import METHODS
from avalanche_exmask.training.strategy import ExemplarMasking


def build(context: BuildContext) -> ExemplarMasking:
    config, options = context.config, context.codec_options("masked")
    text_rule = TextMaskRule(**options["text_rule"])
    class_names = getattr(context.benchmark, "class_names", None) if text_rule.needs_class_names else None
    if text_rule.needs_class_names and class_names is None:
        raise ValueError(
            f"storage.options.masked.text_rule.class_source='names' needs class names, and benchmark "
            f"{config.benchmark.name!r} has none; set it to 'attention'"
        )
    return ExemplarMasking(
        mem_size=context.budget_nbytes,
        total_num_classes=context.n_classes if config.storage.budget.mode == "per_class" else None,
        class_names=class_names,
        image_rule=ImageMaskRule(**options["image_rule"]),
        text_rule=text_rule,
        background_downsample=options["background_downsample"],
        patch_jpeg_quality=options["patch_jpeg_quality"],
        augmentation=replay_augmentation(context),
        selection=config.storage.selection,
        memory_batch=config.train.memory_batch,
        weight_aligning=config.train.weight_aligning,
        current_through_codec=config.train.current_through_codec,
        seed=config.seed,
        **context.template_kwargs,
    )


METHODS.register("masking")(
    MethodSpec(build=build, codec="masked", report=buffer_report, description="exemplar masking (Lee et al., 2024)")
)
