"""What an open_clip model expects as input, looked up by model name.

The data pipeline needs three things from a model: its square input resolution ``S`` (pixels),
its text context length ``T`` (tokens) and its tokenizer. They are read from the model's
open_clip config, so no model is built. The model configs shipped with this package
(``models/configs/*.json``, e.g. ``exmask-tiny``) are registered with open_clip here, on the
first lookup, so that their names resolve for the data pipeline and for
:mod:`avalanche_exmask.models.factory` alike.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import open_clip

__all__ = ["register_packaged_configs", "check_model_name", "model_geometry", "get_tokenizer"]

#: The folder of the package's open_clip model configs (package data, not a module).
_CONFIG_DIR = Path(__file__).resolve().parent.parent / "models" / "configs"

_registered = False


def register_packaged_configs() -> None:
    """Add this package's model configs to open_clip's registry (idempotent)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(_CONFIG_DIR)
        _registered = True


def check_model_name(model_name: str) -> None:
    """Check that ``model_name`` is an open_clip model name (this package's configs included).

    :raises ValueError: naming up to 8 similar names if it is not.
    """
    register_packaged_configs()
    if model_name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if model_name.lower()[:5] in m.lower()][:8]
        raise ValueError(
            f"unknown open_clip model name {model_name!r}"
            + (f"; similar names: {close}" if close else "")
            + " (see open_clip.list_models())"
        )


def model_geometry(model_name: str) -> tuple[int, int]:
    """``(image_size S in pixels, text context length T in tokens)`` of a model, read from its config.

    :raises ValueError: unknown model name, or a non-square input resolution.
    """
    check_model_name(model_name)
    config = open_clip.get_model_config(model_name)
    image_size = config["vision_cfg"]["image_size"]
    if isinstance(image_size, (tuple, list)):
        if image_size[0] != image_size[1]:
            raise ValueError(f"{model_name}: only square input resolutions are supported; got {image_size}")
        image_size = image_size[0]
    return int(image_size), int(config["text_cfg"].get("context_length", 77))


def get_tokenizer(model_name: str) -> Callable:
    """open_clip's tokenizer for ``model_name`` (offline for CLIP's BPE tokenizer).

    Called on a list of ``N`` strings it returns token ids ``long [N, T]``.
    """
    check_model_name(model_name)
    return open_clip.get_tokenizer(model_name)
