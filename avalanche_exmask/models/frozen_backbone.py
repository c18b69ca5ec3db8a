"""What the prompt and adapter methods (L2P, DualPrompt, EASE) share about their frozen backbone:
the check that it is frozen, the output of a prompted pass, and their parameter counts."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

if TYPE_CHECKING:
    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier

__all__ = ["PromptedOutput", "frozen_backbone_check", "parameter_report"]


@dataclasses.dataclass
class PromptedOutput:
    """What a prompted forward pass gives the strategy.

    :ivar logits: ``[B, C]``.
    :ivar key_similarity: scalar, the key-matching term to *maximise* (the cosine of the query to
        the chosen keys, summed over chosen keys and towers (L2P) or selections (DualPrompt),
        averaged over the batch).
    :ivar selected: per tower (or ``"joint"``), the chosen prompt (or experience) indices ``[B, N]``.
    """

    logits: torch.Tensor
    key_similarity: torch.Tensor
    selected: dict[str, torch.Tensor]


def frozen_backbone_check(backbone: nn.Module) -> None:
    """Refuse a ``MultimodalCLIPClassifier`` with trainable weights besides its head, or one that
    masks empty patches (its attention mask would not fit a prompted token sequence).

    :raises ValueError: naming what is wrong.
    """
    trainable = [name for name, p in backbone.named_parameters() if p.requires_grad and not name.startswith("classifier.")]
    if trainable:
        raise ValueError(f"prompt and adapter methods need a frozen backbone (adapter='none'); trainable: {trainable[:3]}")
    if getattr(backbone, "skip_empty_patches", False):
        raise ValueError("prompt methods change the image token sequence; build the model with skip_empty_patches=False")


class _MethodModel(Protocol):
    """A prompt or adapter method's model (an ``nn.Module``) around its frozen backbone."""

    @property
    def backbone(self) -> MultimodalCLIPClassifier: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


def parameter_report(model: _MethodModel, **own: int) -> dict[str, int]:
    """Parameter counts (elements) of a method's model: ``own`` (e.g. ``prompts=...``), ``head``,
    ``trainable`` (``requires_grad`` now) and ``total`` (frozen backbone included)."""
    return {
        **own,
        "head": sum(p.numel() for p in model.backbone.classifier.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in model.parameters()),
    }
