"""MRDC's choice of a JPEG quality from features alone (Wang et al., ICLR 2022, Sec. 4), as we read it.

MRDC frames the quality-quantity trade-off as a determinantal point process (DPP) over the
features of the exemplars a budget holds: at quality ``q`` the budget holds ``N_q`` compressed
exemplars (more as ``q`` falls), and the compressed set is only worth its count if its features
span the volume the same ``N_q`` original images span. The rule here picks the lowest quality whose
compressed set keeps that volume: the log-volume of the DPP kernel ``L = F F^T`` of the L2-normalised
features (``log det``, with a ridge ``delta`` so sets larger than the feature width stay defined)
of the compressed set against that of the originals, ``R_q = logvol(compressed) / logvol(original)``,
and the lowest ``q`` with ``|R_q - 1| <= epsilon``. No accuracy and no training enter the choice.

What is ours, not MRDC's (its exact threshold was not at hand): ``epsilon`` (default 0.1), the ridge
``delta``, and which model gives the features (the caller's).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = ["dpp_log_volume", "volume_ratio", "select_quality"]


def dpp_log_volume(features: torch.Tensor, delta: float = 1e-3) -> float:
    """``log det(F F^T + delta I)`` of float ``[n, d]`` features, L2-normalised per row first."""
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"features must be a non-empty [n, d] matrix; got shape {tuple(features.shape)}")
    unit = F.normalize(features.double(), dim=-1)
    gram = unit @ unit.T + delta * torch.eye(len(unit), dtype=unit.dtype)
    sign, log_det = torch.linalg.slogdet(gram)
    if sign <= 0:
        raise ValueError("the DPP kernel is not positive definite; raise delta")
    return float(log_det)


def volume_ratio(original: torch.Tensor, compressed: torch.Tensor, delta: float = 1e-3) -> float:
    """``R = logvol(compressed) / logvol(original)`` for features ``[n, d]`` of the same ``n`` images."""
    if original.shape != compressed.shape:
        raise ValueError(f"original {tuple(original.shape)} and compressed {tuple(compressed.shape)} features differ in shape")
    return dpp_log_volume(compressed, delta) / dpp_log_volume(original, delta)


def select_quality(ratios: Mapping[int, float], epsilon: float = 0.1) -> int:
    """The lowest quality whose volume ratio lies within ``epsilon`` of 1; the highest quality if none does.

    :param ratios: quality -> :func:`volume_ratio` at that quality's count.
    """
    if not ratios:
        raise ValueError("no qualities to choose from")
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0; got {epsilon}")
    passing: Sequence[int] = sorted(q for q, r in ratios.items() if abs(r - 1) <= epsilon)
    return passing[0] if passing else max(ratios)
