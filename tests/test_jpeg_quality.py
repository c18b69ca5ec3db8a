"""MRDC's DPP quality rule (storage/jpeg_quality.py)."""
from __future__ import annotations

import math

import pytest
import torch

from avalanche_exmask.storage.jpeg_quality import dpp_log_volume, select_quality, volume_ratio


def test_log_volume_is_largest_for_orthogonal_features_and_falls_as_they_collapse():
    orthogonal = torch.eye(4, 8)
    assert dpp_log_volume(orthogonal, delta=0.0) == pytest.approx(0.0, abs=1e-9)  # det I = 1
    near = orthogonal + 0.9 * torch.ones(4, 8)  # rows pulled towards one direction
    assert dpp_log_volume(near) < dpp_log_volume(orthogonal) - 1.0
    same = torch.ones(4, 8)
    assert dpp_log_volume(same, delta=1e-3) == pytest.approx(math.log(4 + 1e-3) + 3 * math.log(1e-3), rel=1e-6)
    assert dpp_log_volume(3 * orthogonal) == pytest.approx(dpp_log_volume(orthogonal))  # scale-free


def test_volume_ratio_is_one_for_identical_sets_and_grows_as_compression_collapses_them():
    generator = torch.Generator().manual_seed(0)
    original = torch.randn(6, 16, generator=generator)
    assert volume_ratio(original, original.clone()) == pytest.approx(1.0)
    blurred = original + 3 * torch.randn(1, 16, generator=generator)  # a shared shift: less spread
    assert volume_ratio(original, blurred) > 1.0  # log-volumes are negative: a smaller volume, a larger ratio
    with pytest.raises(ValueError, match="shape"):
        volume_ratio(original, original[:5])


def test_select_quality_takes_the_lowest_quality_within_epsilon_else_the_highest():
    ratios = {10: 1.30, 30: 1.08, 50: 1.02, 90: 1.001}
    assert select_quality(ratios, epsilon=0.1) == 30
    assert select_quality(ratios, epsilon=0.01) == 90
    assert select_quality({10: 1.5, 50: 1.4}, epsilon=0.1) == 50
    with pytest.raises(ValueError, match="epsilon"):
        select_quality(ratios, epsilon=-1)
    with pytest.raises(ValueError, match="no qualities"):
        select_quality({})
