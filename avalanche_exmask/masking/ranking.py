"""Rank-based selection shared by the image and text masks: keep the top fraction of candidates."""
from __future__ import annotations

import math

import torch

__all__ = ["top_fraction"]


def top_fraction(scores: torch.Tensor, candidates: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep the ``ceil(ratio x n_candidates)`` highest-scoring candidates of each row.

    Ties are broken by position (the earlier element wins), so the result is deterministic.

    :param scores: float ``[..., L]``.
    :param candidates: bool ``[..., L]``, the elements that may be kept.
    :param ratio: fraction in ``[0, 1]`` of each row's candidates to keep.
    :return: bool ``[..., L]``, a subset of ``candidates``.
    """
    n_candidates = candidates.sum(dim=-1, keepdim=True)
    k = torch.ceil(n_candidates.to(torch.float64) * ratio - 1e-9).long()
    masked = scores.masked_fill(~candidates, -math.inf)
    order = torch.argsort(masked, dim=-1, descending=True, stable=True)
    rank = torch.argsort(order, dim=-1)
    return (rank < k) & candidates
