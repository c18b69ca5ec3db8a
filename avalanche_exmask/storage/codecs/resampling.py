"""Exact resampling of uint8 images: block means and bilinear upsampling by an integer factor.

A masked record stores its background at low resolution (each patch average-pooled) and decoding
upsamples it bilinearly (half-pixel centres, torch's ``align_corners=False``), rounded half to even;
a batched round trip of current data computes the same for a whole batch. For a power-of-two factor ``k`` every weight is a
multiple of ``1 / (2k)``, so the arithmetic is exact: two float32 matrix products with integer
weights (:func:`interpolation_matrix`) whose sums stay below ``2^24`` and one exact division by
``4 k^2`` give torch's ``F.interpolate`` result bit for bit, at the cost of two small matrix
products instead of a per-pixel kernel. Block means of uint8 pixels are exact integer sums, then
one division. Other factors use torch's kernels themselves.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["interpolation_matrix", "upsample_array", "upsample_batch", "block_mean_batch"]

_MAX_EXACT_FACTOR = 64
"""Above this factor the matrix path's sums could leave float32's exact integers; torch's kernel is used."""


@functools.cache
def interpolation_matrix(size: int, factor: int) -> np.ndarray:
    """``float32 [k size, size]``: row ``o`` holds ``2 k`` times the weights with which output
    sample ``o`` mixes the ``size`` source samples when they are upsampled ``k x`` linearly with
    half-pixel centres: it reads source ``s = (o + 1/2) / k - 1/2`` (0 below 0), so its two weights
    are integers summing to ``2 k``. Read-only (cached)."""
    outputs = np.arange(size * factor)
    doubled = np.maximum(2 * outputs + 1 - factor, 0)  # 2 k s
    first = np.minimum(doubled // (2 * factor), size - 1)
    second_weight = np.clip(doubled - 2 * factor * first, 0, 2 * factor)
    matrix = np.zeros((size * factor, size), dtype=np.float32)
    np.add.at(matrix, (outputs, first), 2 * factor - second_weight)
    np.add.at(matrix, (outputs, np.minimum(first + 1, size - 1)), second_weight)
    matrix.flags.writeable = False
    return matrix


@functools.cache
def _interpolation_tensor(size: int, factor: int, device: torch.device) -> torch.Tensor:
    """:func:`interpolation_matrix` as a tensor on ``device``, made once per device (a copy: torch
    takes no read-only array)."""
    return torch.from_numpy(interpolation_matrix(size, factor).copy()).to(device)


def _exact(factor: int) -> bool:
    """Whether ``factor`` takes the exact matrix path (a power of two, at most 64)."""
    return not factor & (factor - 1) and factor <= _MAX_EXACT_FACTOR


def upsample_array(image: np.ndarray, factor: int) -> np.ndarray:
    """``uint8 [3, h, w]`` -> ``uint8 [3, k h, k w]``: ``F.interpolate(scale_factor=k,
    mode="bilinear", align_corners=False)`` of the float image, then ``round()``, bit for bit."""
    if not _exact(factor):
        tensor = torch.from_numpy(image).float().unsqueeze(0)
        scaled = F.interpolate(tensor, scale_factor=factor, mode="bilinear", align_corners=False)
        return scaled.squeeze(0).round().clamp(0, 255).to(torch.uint8).numpy()
    _, height, width = image.shape
    across = image.astype(np.float32) @ interpolation_matrix(width, factor).T  # [3, h, k w]
    full = interpolation_matrix(height, factor) @ across  # [3, k h, k w], 4 k^2 times the result
    full *= np.float32(1 / (4 * factor * factor))
    return np.rint(full, out=full).astype(np.uint8)


def upsample_batch(images: torch.Tensor, factor: int) -> torch.Tensor:
    """:func:`upsample_array` for a batch, on its device: uint8 ``[B, 3, h, w]`` ->
    uint8 ``[B, 3, k h, k w]``."""
    if not _exact(factor):
        scaled = F.interpolate(images.float(), scale_factor=factor, mode="bilinear", align_corners=False)
        return scaled.round().clamp(0, 255).to(torch.uint8)
    height, width = images.shape[-2:]
    across_matrix = _interpolation_tensor(width, factor, images.device)
    down_matrix = _interpolation_tensor(height, factor, images.device)
    across = images.float() @ across_matrix.T  # [B, 3, h, k w]
    full = down_matrix @ across  # [B, 3, k h, k w], 4 k^2 times the result
    return (full * (1 / (4 * factor * factor))).round().to(torch.uint8)


def block_mean_batch(images: torch.Tensor, factor: int) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` -> uint8 ``[B, 3, H/k, W/k]``: the mean of each ``k x k`` block,
    rounded half to even (an exact integer sum, one float32 division); ``k`` divides ``H`` and ``W``."""
    batch, channels, height, width = images.shape
    blocks = images.reshape(batch, channels, height // factor, factor, width // factor, factor)
    sums = blocks.sum(dim=(3, 5), dtype=torch.int32)
    return (sums.float() / (factor * factor)).round().to(torch.uint8)
