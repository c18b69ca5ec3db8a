"""The flat config format of earlier versions (``samples_per_class: 5``, ``text_mode: none``, ...),
converted to the nested format of :class:`~avalanche_exmask.config.RunConfig`. Kept apart from the
schema: it names fields of particular codecs, which the schema itself never does.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from avalanche_exmask.config_values import ConfigError, set_path

__all__ = ["FLAT_FIELDS", "from_flat", "is_flat"]

#: Fields of the flat format of earlier versions -> dotted path in :class:`~avalanche_exmask.config.RunConfig`.
FLAT_FIELDS: dict[str, str] = {
    "method": "method",
    "seed": "seed",
    "device": "device",
    "benchmark": "benchmark.name",
    "benchmark_args": "benchmark.args",
    "n_experiences": "benchmark.n_experiences",
    "model_name": "model.name",
    "pretrained": "model.pretrained",
    "adapter": "model.adapter",
    "image_attention": "model.image_attention",
    "skip_empty_patches": "model.skip_empty_patches",
    "samples_per_class": "storage.budget.samples_per_class",
    "budget_mode": "storage.budget.mode",
    "image_rule": "storage.options.masked.image_rule.kind",
    "tau": "storage.options.masked.image_rule.tau",
    "keep_ratio": "storage.options.masked.image_rule.ratio",
    "background_downsample": "storage.options.masked.background_downsample",
    "text_mode": "storage.options.masked.text_rule.mode",
    "text_class_source": "storage.options.masked.text_rule.class_source",
    "context_ratio": "storage.options.masked.text_rule.context_ratio",
    "jpeg_quality": "storage.options.jpeg.quality",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "lr_schedule": "train.lr_schedule",
    "memory_batch": "train.memory_batch",
    "weight_aligning": "train.weight_aligning",
    "current_through_codec": "train.current_through_codec",
    "p_fill": "train.augmentation.p_fill",
    "p_token_mix": "train.augmentation.p_token_mix",
    "p_swap_text": "train.augmentation.p_swap_text",
    "progress": "logging.progress",
}


def from_flat(values: Mapping[str, Any], *, source: str = "config") -> dict[str, Any]:
    """A flat config of earlier versions as a nested dict (``methods`` / ``seeds`` lists kept).

    :raises ConfigError: naming an unknown flat field.
    """
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("methods", "seeds"):
            nested[key] = value
            continue
        if key not in FLAT_FIELDS:
            raise ConfigError(f"{source}: unknown field {key!r} (flat format); known: {sorted(FLAT_FIELDS)}")
        set_path(nested, FLAT_FIELDS[key], value)
    return nested


def is_flat(values: Mapping[str, Any]) -> bool:
    """Whether ``values`` is in the flat format (a flat-only field, or ``benchmark`` given as a name)."""
    shared = {"method", "seed", "device", "benchmark"}
    return isinstance(values.get("benchmark"), str) or any(k in FLAT_FIELDS and k not in shared for k in values)
