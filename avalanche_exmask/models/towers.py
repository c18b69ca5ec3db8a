"""The two towers of an open_clip CLIP as places to put prompts, prefixes and adapters.

Prompt and adapter methods (L2P, DualPrompt, EASE) were designed for one ViT. On CLIP they act on
the image tower, the text tower or both (``TOWERS``); this module names, for each tower, what they
need: its ``Transformer`` (the prompted token sequence), its residual blocks (prefixes and
adapters), its width ``D``, where prompt tokens go (after [CLS] in the image tower, so that its
[CLS] pooling is unchanged; before the start token in the text tower, so that every text token sees
them through the causal mask), and the frozen tower's pooled feature before projection ``[B, D]``,
the *query* that L2P and DualPrompt match against their keys.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from avalanche_exmask.data.sample import MultimodalSample

if TYPE_CHECKING:
    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier

__all__ = ["TOWERS", "Tower", "towers_of", "check_towers", "pooled_features"]

#: Tower names, in the order they are used everywhere (image first).
TOWERS = ("image", "text")


@dataclasses.dataclass(frozen=True)
class Tower:
    """One tower of a CLIP model.

    :ivar name: ``"image"`` or ``"text"``.
    :ivar transformer: the open_clip ``Transformer`` (its input and output are ``[B, L, D]``).
    :ivar blocks: its residual blocks, first first.
    :ivar width: ``D``.
    :ivar prompt_position: index at which prompt tokens are inserted into the sequence.
    :ivar final_norm: the norm whose output is pooled (``ln_post`` / ``ln_final``).
    """

    name: str
    transformer: nn.Module
    blocks: Sequence[nn.Module]
    width: int
    prompt_position: int
    final_norm: nn.Module

    @property
    def depth(self) -> int:
        """Number of residual blocks."""
        return len(self.blocks)


def towers_of(clip: Any) -> dict[str, Tower]:
    """``{"image": Tower, "text": Tower}`` of an open_clip CLIP (or CustomTextCLIP).

    :raises NotImplementedError: for image towers that do not pool at [CLS] (``pool_type != "tok"``
        or attention pooling), naming what they use.
    """
    visual = clip.visual
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise NotImplementedError(
            f"prompt methods need an image tower pooled at [CLS]; this one uses pool_type={getattr(visual, 'pool_type', None)!r}"
            f" and attn_pool={type(getattr(visual, 'attn_pool', None)).__name__}"
        )
    text = getattr(clip, "text", clip)
    return {
        "image": Tower("image", visual.transformer, list(visual.transformer.resblocks), int(visual.transformer.width), 1, visual.ln_post),
        "text": Tower("text", text.transformer, list(text.transformer.resblocks), int(text.transformer.width), 0, text.ln_final),
    }


def check_towers(towers: Sequence[str], field: str = "towers") -> tuple[str, ...]:
    """``towers`` as a tuple in :data:`TOWERS` order.

    :raises ValueError: naming ``field`` if it is empty or names an unknown tower.
    """
    unknown = [t for t in towers if t not in TOWERS]
    if unknown or not towers:
        raise ValueError(f"{field} must be a non-empty subset of {list(TOWERS)}; got {list(towers)!r}")
    return tuple(t for t in TOWERS if t in towers)


@contextlib.contextmanager
def _captured_norm_outputs(towers: dict[str, Tower]) -> Iterator[dict[str, torch.Tensor]]:
    captured: dict[str, torch.Tensor] = {}
    handles = [
        tower.final_norm.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
        for name, tower in towers.items()
    ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def pooled_features(model: MultimodalCLIPClassifier, x: MultimodalSample) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One forward pass of ``model`` (a ``MultimodalCLIPClassifier``): each tower's pooled feature
    before projection and the fused embedding.

    :return: ``({"image": [B, D_image] ([CLS] after ln_post), "text": [B, D_text] (end-of-text
        token after ln_final)}, fused embedding [B, F])``.
    """
    towers = towers_of(model.clip)
    with _captured_norm_outputs(towers) as captured:
        fused = model.embed(x)
    image = captured["image"]
    image = image[:, 0] if image.ndim == 3 else image
    text = captured["text"]
    rows = torch.arange(text.shape[0], device=text.device)
    return {"image": image, "text": text[rows, x.input_ids.argmax(dim=-1)]}, fused
