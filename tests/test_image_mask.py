import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avalanche_exmask.masking.image_mask import ImageMaskRule, ratio_mask, threshold_mask


def test_threshold_keeps_patches_at_or_above_tau_times_mean():
    attention = torch.tensor([0.1, 0.4, 0.2, 0.3])  # mean 0.25
    assert threshold_mask(attention).tolist() == [False, True, False, True]
    assert threshold_mask(attention, tau=0.8).tolist() == [False, True, True, True]  # >= 0.2
    assert threshold_mask(attention, tau=0.0).all()


def test_threshold_uniform_attention_keeps_every_patch():
    attention = torch.full((196,), 1 / 196)
    assert threshold_mask(attention).all()


def test_threshold_falls_back_to_argmax_when_every_patch_is_below():
    attention = torch.tensor([0.1, 0.4, 0.2, 0.3])
    assert threshold_mask(attention, tau=100.0).tolist() == [False, True, False, False]


def test_ratio_keeps_ceil_top_patches_with_stable_ties():
    attention = torch.tensor([0.1, 0.4, 0.2, 0.3, 0.0])
    assert ratio_mask(attention, 0.4).tolist() == [False, True, False, True, False]
    assert ratio_mask(attention, 0.41).tolist() == [False, True, True, True, False]  # ceil(2.05) = 3
    assert ratio_mask(attention, 1e-6).sum() == 1
    assert ratio_mask(torch.zeros(4), 0.5).tolist() == [True, True, False, False]


def test_batched_equals_per_sample():
    attention = torch.rand(5, 49, generator=torch.Generator().manual_seed(0))
    for fn in (lambda a: threshold_mask(a, 1.2), lambda a: ratio_mask(a, 0.3)):
        batched = fn(attention)
        assert batched.shape == attention.shape
        assert torch.equal(batched, torch.stack([fn(row) for row in attention]))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 64), st.floats(0.01, 1.0), st.integers(0, 2**31 - 1))
def test_ratio_mask_keeps_exactly_k_highest(n, ratio, seed):
    attention = torch.rand(n, generator=torch.Generator().manual_seed(seed))
    keep = ratio_mask(attention, ratio)
    assert int(keep.sum()) == max(1, math.ceil(ratio * n - 1e-9))
    if (~keep).any():
        assert attention[keep].min() >= attention[~keep].max()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 64), st.floats(0.0, 3.0), st.integers(0, 2**31 - 1))
def test_threshold_mask_rule_and_fallback(n, tau, seed):
    attention = torch.rand(n, generator=torch.Generator().manual_seed(seed)).softmax(0)
    keep = threshold_mask(attention, tau)
    assert keep[attention.argmax()]
    expected = attention >= tau * attention.mean() * (1 - 1e-6)
    expected[attention.argmax()] = True
    assert torch.equal(keep, expected)


def test_rule_dispatches_and_validates_fields():
    attention = torch.tensor([0.1, 0.4, 0.2, 0.3])
    assert torch.equal(ImageMaskRule()(attention), threshold_mask(attention, 1.0))
    assert torch.equal(ImageMaskRule(kind="ratio", ratio=0.5)(attention), ratio_mask(attention, 0.5))
    with pytest.raises(ValueError, match="kind"):
        ImageMaskRule(kind="topk")
    with pytest.raises(ValueError, match="tau"):
        ImageMaskRule(tau=-1)
    with pytest.raises(ValueError, match="ratio"):
        ImageMaskRule(kind="ratio", ratio=0.0)
    with pytest.raises(TypeError):
        ImageMaskRule("ratio")  # keyword-only
    with pytest.raises(ValueError, match="patch_attention"):
        threshold_mask(torch.zeros(0))
    with pytest.raises(ValueError, match="patch_attention"):
        ratio_mask(torch.ones(4, dtype=torch.long), 0.5)
