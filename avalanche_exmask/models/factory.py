"""Create open_clip models by name, with weights from an open_clip tag or a local file.

This package ships model configs (``models/configs/*.json``) that are registered with
open_clip's factory on import, and pretrained weights for them (``models/weights``), so the
default model loads offline. Everything about a model's size lives in its JSON config.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Optional, Union

import open_clip
import torch
from torch import nn

__all__ = [
    "PACKAGED_WEIGHTS",
    "register_packaged_configs",
    "create_clip",
    "load_weights",
    "model_geometry",
    "get_tokenizer",
]

_CONFIG_DIR = Path(__file__).parent / "configs"
_WEIGHTS_DIR = Path(__file__).parent / "weights"

#: ``{model name: {pretrained tag: weights file}}`` of weights shipped inside the package.
PACKAGED_WEIGHTS: dict[str, dict[str, Path]] = {
    "exmask-tiny": {"synthetic": _WEIGHTS_DIR / "exmask-tiny-synthetic.safetensors"},
}

_registered = False


def register_packaged_configs() -> None:
    """Add this package's model configs to open_clip's registry (idempotent)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(_CONFIG_DIR)
        _registered = True


def _check_model_name(model_name: str) -> None:
    register_packaged_configs()
    if model_name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if model_name.lower()[:5] in m.lower()][:8]
        raise ValueError(
            f"unknown open_clip model name {model_name!r}"
            + (f"; similar names: {close}" if close else "")
            + " (see open_clip.list_models())"
        )


def _is_local_path(pretrained: Union[str, os.PathLike]) -> bool:
    text = os.fspath(pretrained)
    return isinstance(pretrained, os.PathLike) or text.endswith((".pt", ".pth", ".bin", ".safetensors")) or os.sep in text


def create_clip(
    model_name: str = "exmask-tiny",
    pretrained: Optional[Union[str, os.PathLike]] = "synthetic",
) -> nn.Module:
    """Build an open_clip model and load its weights.

    :param model_name: any name in ``open_clip.list_models()``, including this package's
        ``exmask-tiny``.
    :param pretrained: ``None`` for random weights; a local file (``.pt``, ``.pth``, ``.bin``,
        ``.safetensors``; a full open_clip checkpoint or a bare state dict); a tag of weights shipped
        in this package (``"synthetic"`` for ``exmask-tiny``); or an open_clip pretrained tag
        (e.g. ``"openai"``, ``"laion2b_s34b_b88k"``), which open_clip fetches from the hub if
        reachable.
    :raises ValueError: unknown model name, or weights that do not fit the config.
    :raises FileNotFoundError: a local weights file that does not exist.
    """
    _check_model_name(model_name)
    packaged = PACKAGED_WEIGHTS.get(model_name, {})
    if pretrained is None:
        return open_clip.create_model(model_name, pretrained=None)
    if not isinstance(pretrained, os.PathLike) and pretrained in packaged:
        pretrained = packaged[pretrained]
    if _is_local_path(pretrained):
        with _quiet_random_init_warning():
            model = open_clip.create_model(model_name, pretrained=None)
        load_weights(model, pretrained, model_name=model_name)
        return model
    return open_clip.create_model(model_name, pretrained=pretrained)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning():
    """Silence open_clip's "initialized randomly" warning while we load the weights ourselves."""
    log_filter = _DropRandomInitWarning()
    root = logging.getLogger()
    root.addFilter(log_filter)
    try:
        yield
    finally:
        root.removeFilter(log_filter)


def load_weights(model: nn.Module, path: Union[str, os.PathLike], model_name: str = "model") -> None:
    """Load a weights file into an open_clip model, strictly.

    Accepts safetensors files and torch pickles holding either a state dict or a checkpoint with a
    ``state_dict`` key (``module.`` prefixes from DDP are removed). Tensors are cast to the
    model's dtypes.

    :raises FileNotFoundError: naming ``path`` if it does not exist.
    :raises ValueError: naming ``path`` and ``model_name`` if keys or shapes do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(str(path))
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state_dict, dict) and "state_dict" in state_dict:
            state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise ValueError(f"weights file {path} does not hold a state dict (got {type(state_dict).__name__})")
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise ValueError(f"weights {path} do not fit model config {model_name!r}: {error}") from error


def model_geometry(model_name: str) -> tuple[int, int]:
    """``(image_size S in pixels, text context length T)`` of a model, read from its config."""
    _check_model_name(model_name)
    config = open_clip.get_model_config(model_name)
    image_size = config["vision_cfg"]["image_size"]
    if isinstance(image_size, (tuple, list)):
        if image_size[0] != image_size[1]:
            raise ValueError(f"{model_name}: only square input resolutions are supported; got {image_size}")
        image_size = image_size[0]
    return int(image_size), int(config["text_cfg"].get("context_length", 77))


def get_tokenizer(model_name: str):
    """open_clip's tokenizer for ``model_name`` (offline for CLIP's BPE tokenizer)."""
    _check_model_name(model_name)
    return open_clip.get_tokenizer(model_name)
