"""Create open_clip models by name, with weights from an open_clip tag or a local file.

This package ships model configs (``models/configs/*.json``), registered with open_clip's
factory by :func:`~avalanche_exmask.data.model_inputs.register_packaged_configs` before any name
is looked up, and pretrained weights for them (``models/weights``), so the default model loads
offline. Everything about a model's size lives in its JSON config; the input geometry and the
tokenizer are looked up in :mod:`avalanche_exmask.data.model_inputs` and re-exported here.
"""
from __future__ import annotations

import contextlib
import logging
import os
import stat
import zipfile
from pathlib import Path

import open_clip
import torch
from torch import nn

from avalanche_exmask.data.model_inputs import (
    check_model_name,
    get_tokenizer,
    model_geometry,
    register_packaged_configs,
)

__all__ = [
    "PACKAGED_WEIGHTS",
    "register_packaged_configs",
    "create_clip",
    "check_pretrained",
    "load_weights",
    "model_geometry",
    "get_tokenizer",
]

_WEIGHTS_DIR = Path(__file__).parent / "weights"

#: ``{model name: {pretrained tag: weights file}}`` of weights shipped inside the package.
PACKAGED_WEIGHTS: dict[str, dict[str, Path]] = {
    "exmask-tiny": {
        "synthetic": _WEIGHTS_DIR / "exmask-tiny-synthetic.safetensors",
        "real": _WEIGHTS_DIR / "exmask-tiny-real.safetensors",
    },
    # The same widths and depths at 128 px with 16-pixel patches: the same 64 image tokens.
    "exmask-tiny-128": {
        "real": _WEIGHTS_DIR / "exmask-tiny-128-real.safetensors",
    },
}


def _is_local_path(pretrained: str | os.PathLike) -> bool:
    text = os.fspath(pretrained)
    return isinstance(pretrained, os.PathLike) or text.endswith((".pt", ".pth", ".bin", ".safetensors")) or os.sep in text


def create_clip(
    model_name: str = "exmask-tiny",
    pretrained: str | os.PathLike | None = "synthetic",
) -> nn.Module:
    """Build an open_clip model and load its weights.

    :param model_name: any name in ``open_clip.list_models()``, including this package's
        ``exmask-tiny``.
    :param pretrained: ``None`` for random weights; a local file (``.pt``, ``.pth``, ``.bin``,
        ``.safetensors``; a full open_clip checkpoint or a bare state dict); a tag of weights shipped
        in this package (``"synthetic"`` or ``"real"`` for ``exmask-tiny``, ``"real"`` for
        ``exmask-tiny-128``); or an open_clip pretrained tag
        (e.g. ``"openai"``, ``"laion2b_s34b_b88k"``), which open_clip fetches from the hub if
        reachable.
    :raises ValueError: unknown model name, or weights that do not fit the config.
    :raises FileNotFoundError: a local weights file that does not exist.
    """
    check_model_name(model_name)
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


def check_pretrained(model_name: str, pretrained: str | os.PathLike | None) -> None:
    """Check, without loading them, that :func:`create_clip` can take the weights ``pretrained``.

    A local file must be a regular file and readable as what its name says: a safetensors file
    (its header, read with ``safe_open``), or a torch file (a zip archive, as ``torch.save``
    writes); a tag must be shipped here or known to open_clip for ``model_name``.

    :raises FileNotFoundError: naming a local file that does not exist.
    :raises ValueError: naming the file or the tag.
    """
    packaged = PACKAGED_WEIGHTS.get(model_name, {})
    if pretrained is None or (not isinstance(pretrained, os.PathLike) and pretrained in packaged):
        return
    if not _is_local_path(pretrained):
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise ValueError(f"{pretrained!r} is neither a weights file nor a tag of {model_name!r} ({sorted(packaged) + tags})")
        return
    path = Path(pretrained)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    if not stat.S_ISREG(path.stat().st_mode):
        raise ValueError(f"weights {path} is not a regular file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as file:
                file.keys()
        except (SafetensorError, OSError) as error:
            raise ValueError(f"weights {path} is not a readable safetensors file ({error})") from None
    elif not zipfile.is_zipfile(path):
        raise ValueError(f"weights {path} is neither a safetensors file nor a torch file (a zip archive)")


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


def load_weights(model: nn.Module, path: str | os.PathLike, model_name: str = "model") -> None:
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
    state_dict: object  # checked to be a dict below
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
