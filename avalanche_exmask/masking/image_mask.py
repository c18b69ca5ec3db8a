"""Image mask: which patches of an exemplar are stored, from the [CLS] -> patch attention.

Patches are indexed row-major over the ``(S/P) x (S/P)`` grid (``N`` patches), as in
:class:`avalanche_exmask.models.outputs.MaskingScores`. Every function accepts one sample
(``[N]``) or a batch (``[B, N]``) and returns a bool mask of the same shape.

Fallback: at least one patch is always kept, the one with the highest attention (the first one on
ties). With the threshold rule every patch can fall below the threshold only when ``tau > 1``;
an exemplar with no pixels at all would be useless for replay.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from avalanche_exmask.masking.ranking import top_fraction

__all__ = ["threshold_mask", "ratio_mask", "ImageMaskRule"]

_RELATIVE_TOLERANCE = 1e-6
"""Relative slack of the threshold comparison, so that uniform attention keeps every patch at
``tau = 1`` despite float rounding of the mean."""


def threshold_mask(patch_attention: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """The paper's rule: keep patches whose attention is at least ``tau`` times the mean attention.

    :param patch_attention: float ``[N]`` or ``[B, N]``, [CLS] -> patch attention.
    :param tau: multiple of the per-sample mean attention, ``>= 0`` (``0`` keeps every patch).
    :return: bool, same shape; at least one patch kept per sample (the argmax).
    :raises ValueError: on a bad shape or ``tau``.
    """
    _check_attention(patch_attention)
    if not tau >= 0:
        raise ValueError(f"tau must be >= 0; got {tau}")
    threshold = tau * patch_attention.mean(dim=-1, keepdim=True)
    keep = patch_attention >= threshold - _RELATIVE_TOLERANCE * threshold.abs()
    return keep | _argmax_mask(patch_attention)


def ratio_mask(patch_attention: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep the ``ceil(ratio x N)`` patches with the highest attention (ties: earlier patch first).

    :param patch_attention: float ``[N]`` or ``[B, N]``.
    :param ratio: fraction of patches to keep, in ``(0, 1]``.
    :return: bool, same shape; at least one patch kept per sample.
    :raises ValueError: on a bad shape or ``ratio``.
    """
    _check_attention(patch_attention)
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1]; got {ratio}")
    candidates = torch.ones_like(patch_attention, dtype=torch.bool)
    return top_fraction(patch_attention, candidates, ratio) | _argmax_mask(patch_attention)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageMaskRule:
    """A named image-masking rule, callable on patch attention.

    :param kind: ``"threshold"`` (the paper's: attention ``>= tau x mean``) or ``"ratio"``
        (fixed keep-ratio, top-k).
    :param tau: threshold multiple for ``kind="threshold"``, ``>= 0``.
    :param ratio: keep fraction for ``kind="ratio"``, in ``(0, 1]``.
    """

    kind: Literal["threshold", "ratio"] = "threshold"
    tau: float = 1.0
    ratio: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in ("threshold", "ratio"):
            raise ValueError(f"ImageMaskRule.kind must be 'threshold' or 'ratio'; got {self.kind!r}")
        if not self.tau >= 0:
            raise ValueError(f"ImageMaskRule.tau must be >= 0; got {self.tau}")
        if not 0 < self.ratio <= 1:
            raise ValueError(f"ImageMaskRule.ratio must be in (0, 1]; got {self.ratio}")

    def __call__(self, patch_attention: torch.Tensor) -> torch.Tensor:
        """Bool keep-mask ``[N]`` (or ``[B, N]``) of the patches to store."""
        if self.kind == "threshold":
            return threshold_mask(patch_attention, self.tau)
        return ratio_mask(patch_attention, self.ratio)


def _argmax_mask(patch_attention: torch.Tensor) -> torch.Tensor:
    keep = torch.zeros_like(patch_attention, dtype=torch.bool)
    return keep.scatter_(-1, patch_attention.argmax(dim=-1, keepdim=True), True)


def _check_attention(patch_attention: torch.Tensor) -> None:
    if (
        not isinstance(patch_attention, torch.Tensor)
        or not patch_attention.dtype.is_floating_point
        or patch_attention.ndim not in (1, 2)
        or patch_attention.shape[-1] == 0
    ):
        shape = list(patch_attention.shape) if isinstance(patch_attention, torch.Tensor) else None
        raise ValueError(f"patch_attention must be a non-empty float tensor [N] or [B, N]; got shape {shape}")
