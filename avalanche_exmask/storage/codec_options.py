"""Codec options from a config: validated against the registered codec class, then built.

A registered codec is a frozen dataclass; its init fields are its options, except the
*runtime* fields (:data:`RUNTIME_FIELDS`) that the runner fills from the model and the benchmark.
Options may nest dataclasses (``MaskedCodec.image_rule`` is an
:class:`~avalanche_exmask.masking.image_mask.ImageMaskRule`), given as mappings.
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import torch

from avalanche_exmask.config import ConfigError, convert_value
from avalanche_exmask.registry import CODECS

__all__ = ["RUNTIME_FIELDS", "resolve_codec_options", "build_codec"]

RUNTIME_FIELDS = ("patch_size", "class_token_ids")
"""Codec fields the runner fills: the model's patch size in pixels and the class-name token ids."""


def _option_fields(codec_class: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(codec_class) if f.init and f.name not in RUNTIME_FIELDS}


def resolve_codec_options(name: str, options: Mapping[str, Any], *, source: str = "config") -> dict[str, Any]:
    """``options`` of codec ``name`` checked and completed with its defaults, as a JSON-ready dict.

    A ``text_rule`` left unset (``None``) resolves to ``TextMaskRule(mode="none")``'s fields (the
    masked codec's default: no text mask); a partial ``text_rule`` mapping completes with
    :class:`~avalanche_exmask.masking.text_mask.TextMaskRule`'s own defaults.

    :raises ConfigError: naming ``storage.options.<name>.<field>`` and ``source``.
    """
    codec_class = CODECS.get(name)
    fields = _option_fields(codec_class)
    where = f"storage.options.{name}"
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {[f'{where}.{k}' for k in unknown]}; codec {name!r} has {sorted(fields)}")
    hints = typing.get_type_hints(codec_class)
    resolved = {}
    for field_name, field in fields.items():
        if field_name in options:
            value = convert_value(hints[field_name], options[field_name], f"{where}.{field_name}", source)
        elif field.default is not dataclasses.MISSING:
            value = field.default
        else:
            value = field.default_factory()
        if value is None and field_name == "text_rule":
            from avalanche_exmask.masking.text_mask import TextMaskRule

            value = TextMaskRule(mode="none")
        is_instance = dataclasses.is_dataclass(value) and not isinstance(value, type)
        resolved[field_name] = dataclasses.asdict(value) if is_instance else value
    return resolved


def build_codec(
    name: str, options: Mapping[str, Any], *, patch_size: int, class_token_ids: Mapping[int, torch.Tensor] | None = None
) -> Any:
    """An instance of codec ``name`` with resolved ``options`` and the runtime fields it has.

    :param patch_size: the model's patch size in pixels.
    :param class_token_ids: label -> class-name token ids (for text rules that keep class words).
    :raises ValueError: naming ``storage.options.<name>.text_rule.class_source`` if the text rule
        keeps class words and no ``class_token_ids`` are given (the benchmark has no class names).
    """
    codec_class = CODECS.get(name)
    hints = typing.get_type_hints(codec_class)
    values = {key: convert_value(hints[key], value, f"storage.options.{name}.{key}", "config") for key, value in options.items()}
    names = {f.name for f in dataclasses.fields(codec_class)}
    if "patch_size" in names:
        values["patch_size"] = patch_size
    text_rule = values.get("text_rule")
    if "class_token_ids" in names and text_rule is not None and text_rule.needs_class_names:
        if class_token_ids is None:
            raise ValueError(
                f"storage.options.{name}.text_rule.class_source='names' needs class names, and the benchmark "
                "has none; set it to 'attention'"
            )
        values["class_token_ids"] = class_token_ids
    return codec_class(**values)
