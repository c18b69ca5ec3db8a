"""Codec options from a config: validated against the registered codec class, then built.

A registered codec (:class:`~avalanche_exmask.registry.CodecSpec`) is a frozen dataclass; its init
fields are its options, except the *runtime* fields (:data:`RUNTIME_FIELDS`) that the runner fills
from the model and the benchmark. Options may nest dataclasses (``MaskedCodec.image_rule`` is an
:class:`~avalanche_exmask.masking.image_mask.ImageMaskRule`), given as mappings. What a codec adds
to the defaults of its fields, and whether it needs class names, its spec says.
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import torch

from avalanche_exmask.config_values import ConfigError, convert_value
from avalanche_exmask.registry import CODECS

__all__ = ["RUNTIME_FIELDS", "resolve_codec_options", "build_codec"]

RUNTIME_FIELDS = ("patch_size", "class_token_ids")
"""Codec fields the runner fills: the model's patch size in pixels and the class-name token ids."""


def _option_fields(codec_class: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(codec_class) if f.init and f.name not in RUNTIME_FIELDS}


def resolve_codec_options(name: str, options: Mapping[str, Any], *, source: str = "config") -> dict[str, Any]:
    """``options`` of codec ``name`` checked and completed with its defaults, as a JSON-ready dict
    (nested dataclasses as their fields), then completed by the spec's ``complete_options``.

    :raises ConfigError: naming ``storage.options.<name>.<field>`` and ``source``.
    """
    spec = CODECS.get(name)
    fields = _option_fields(spec.codec)
    where = f"storage.options.{name}"
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {[f'{where}.{k}' for k in unknown]}; codec {name!r} has {sorted(fields)}")
    hints = typing.get_type_hints(spec.codec)
    resolved = {}
    for field_name, field in fields.items():
        value: Any
        if field_name in options:
            value = convert_value(hints[field_name], options[field_name], f"{where}.{field_name}", source)
        elif field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        else:
            raise ConfigError(f"{source}: {where}.{field_name} is required (codec {name!r} has no default for it)")
        is_instance = dataclasses.is_dataclass(value) and not isinstance(value, type)
        resolved[field_name] = dataclasses.asdict(value) if is_instance else value
    return spec.complete_options(resolved) if spec.complete_options is not None else resolved


def build_codec(
    name: str, options: Mapping[str, Any], *, patch_size: int, class_token_ids: Mapping[int, torch.Tensor] | None = None
) -> Any:
    """An instance of codec ``name`` with resolved ``options`` and the runtime fields it has.

    :param patch_size: the model's patch size in pixels.
    :param class_token_ids: label -> class-name token ids (for codecs whose spec says they need them).
    :raises ValueError: naming ``storage.options.<name>.<field>`` (what the spec's
        ``needs_class_names`` says) if the codec needs class names and no ``class_token_ids`` are
        given (the benchmark has no class names).
    """
    spec = CODECS.get(name)
    hints = typing.get_type_hints(spec.codec)
    values = {key: convert_value(hints[key], value, f"storage.options.{name}.{key}", "config") for key, value in options.items()}
    names = {f.name for f in dataclasses.fields(spec.codec)}
    if "patch_size" in names:
        values["patch_size"] = patch_size
    needs = spec.needs_class_names(values) if "class_token_ids" in names and spec.needs_class_names is not None else None
    if needs is not None:
        if class_token_ids is None:
            raise ValueError(f"storage.options.{name}.{needs}")
        values["class_token_ids"] = class_token_ids
    return spec.codec(**values)
