"""What code outside the model expects of it, as structural types for the type checker.

Strategies, plugins and the buffer receive the model as a ``torch.nn.Module`` (possibly in a DDP
wrapper: see :func:`~avalanche_exmask.distributed.unwrap_model`) and call methods or read
attributes that :class:`~avalanche_exmask.models.classifier.MultimodalCLIPClassifier` defines (tests
pass small stand-ins with the same members). ``nn.Module.__getattr__`` types every such member as
``Tensor | Module``; these protocols name the member a caller relies on, for a ``typing.cast`` at
the call site. They are never checked at run time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from avalanche_exmask.data.sample import MultimodalSample
    from avalanche_exmask.models.outputs import MaskingScores

__all__ = ["Embedder", "MaskScorer", "TokenScorer", "Patched"]


class Embedder(Protocol):
    """A model with ``embed(x) -> [B, F]``, the fused embedding of a batch."""

    def embed(self, x: MultimodalSample) -> torch.Tensor: ...


class MaskScorer(Protocol):
    """A model with ``masking_scores(x) -> MaskingScores [B]``."""

    def masking_scores(self, x: MultimodalSample, *, token_importance: bool = False) -> MaskingScores: ...


class TokenScorer(Protocol):
    """A model with ``token_importance(input_ids [B, T]) -> [B, T]``."""

    def token_importance(self, input_ids: torch.Tensor) -> torch.Tensor: ...


class Patched(Protocol):
    """A model with a ``patch_size`` (pixels)."""

    @property
    def patch_size(self) -> int: ...
