"""What one eval forward pass of the multimodal model returns for exemplar selection and masking."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

import torch
from tensordict import tensorclass

__all__ = ["MaskingScores", "PatchAttentionScores"]


@tensorclass
class MaskingScores:
    """Per-sample features and attention scores (batched: leading dimension ``B``).

    Shapes are given for one sample; ``N`` = number of image patches (row-major over the
    ``(S/P) x (S/P)`` grid), ``T`` = text context length, ``E`` = CLIP embedding width,
    ``F`` = fused embedding width.

    * ``embedding``: float ``[F]``, the fused (image+text) embedding the classifier sees; used by herding.
    * ``patch_attention``: float ``[N]``, attention of the image tower's last block from the [CLS]
      token to each patch, mean over heads (a row of a softmax, so it sums to at most 1).
    * ``token_attention``: float ``[T]``, attention of the text tower's last block from the pooled
      token (CLIP: end-of-text) to each token, mean over heads; 0 after the pooled token.
    * ``patch_features``: float ``[N, E]``, per-patch features after the final norm and the image
      projection, L2-normalised.
    * ``token_features``: float ``[T, E]``, per-token features after the final norm and the text
      projection, L2-normalised.
    * ``token_importance`` (optional, ``None`` unless asked for): float ``[T]``, how much the text
      embedding changes when the token is left out, ``1 - cos(e, e_without_token)``; 0 for start,
      end and padding tokens.
    * ``class_activation`` (optional): float ``[N]``, the class activation map of the predicted
      class: the head's weights of the class the model predicts for the sample, over the image
      part of the fused embedding, dotted with each patch's ``patch_features`` (the ViT analogue of
      a CNN's CAM, whose classifier also acts on pooled per-location features).
    """

    embedding: torch.Tensor
    patch_attention: torch.Tensor
    token_attention: torch.Tensor
    patch_features: torch.Tensor
    token_features: torch.Tensor
    token_importance: torch.Tensor | None = None
    class_activation: torch.Tensor | None = None

    if TYPE_CHECKING:
        # @tensorclass adds these at run time, but its type hint (it returns the class as given)
        # does not declare them: the constructor's batch keywords and the batch operations used here.
        def __init__(
            self,
            embedding: torch.Tensor,
            patch_attention: torch.Tensor,
            token_attention: torch.Tensor,
            patch_features: torch.Tensor,
            token_features: torch.Tensor,
            token_importance: torch.Tensor | None = None,
            class_activation: torch.Tensor | None = None,
            *,
            batch_size: Sequence[int],
            device: torch.device | str | int | None = None,
            names: Sequence[str] | None = None,
        ) -> None: ...

        def __getitem__(self, index: int | slice | torch.Tensor) -> Self: ...

        def to(self, *args: Any, **kwargs: Any) -> Self: ...

        def cpu(self) -> Self: ...


@tensorclass
class PatchAttentionScores:
    """The one part of :class:`MaskingScores` a codec that reads only the patch attention needs
    (``reads_patch_attention_only``): ``patch_attention`` float ``[N]`` per sample (batched:
    ``[B, N]``), the same values. Any other field is absent, so a codec that reads one fails loudly."""

    patch_attention: torch.Tensor

    if TYPE_CHECKING:

        def __init__(
            self, patch_attention: torch.Tensor, *, batch_size: Sequence[int], device: torch.device | str | int | None = None
        ) -> None: ...

        def __getitem__(self, index: int | slice | torch.Tensor) -> Self: ...

        def cpu(self) -> Self: ...
