"""Exemplar selection orders: every candidate of a class, best first.

The buffer walks this order and stores exemplars until the class's byte share is spent, so an
order (not a fixed-size subset) is what a selection produces.
"""
from __future__ import annotations

import torch

__all__ = ["herding_order", "random_order"]


def herding_order(embeddings: torch.Tensor) -> torch.Tensor:
    """iCaRL herding: each next exemplar brings the mean of the chosen ones closest to the class mean.

    Embeddings are L2-normalised first; ties go to the lower index.

    :param embeddings: float ``[n, F]``.
    :return: long ``[n]``, a permutation of ``0 .. n-1``.
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [n, F]; got shape {list(embeddings.shape)}")
    features = torch.nn.functional.normalize(embeddings.double(), dim=1)
    n = features.shape[0]
    target = features.mean(dim=0)
    chosen_sum = torch.zeros_like(target)
    available = torch.ones(n, dtype=torch.bool)
    order = torch.empty(n, dtype=torch.long)
    for step in range(n):
        distance = (target - (chosen_sum + features) / (step + 1)).norm(dim=1)
        distance[~available] = torch.inf
        best = int(distance.argmin())
        order[step] = best
        available[best] = False
        chosen_sum += features[best]
    return order


def random_order(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random permutation of ``0 .. n-1`` (long ``[n]``) drawn from ``generator``."""
    return torch.randperm(n, generator=generator)
