"""The embedded synthetic benchmark: determinism, class split, ground truth, captions, streams."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from avalanche_exmask.benchmarks.synthetic import (
    COLOURS,
    SHAPES,
    SYNTHETIC_CATALOGUE,
    TEXTURES,
    SyntheticClass,
    benchmark_classes,
    generate_synthetic,
    pretraining_classes,
    synthetic_multimodal,
)
from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.models.factory import get_tokenizer

CLASSES = benchmark_classes()[:6]


@pytest.fixture(scope="module")
def samples():
    return generate_synthetic(n_per_class=40, classes=CLASSES, seed=3)


@pytest.fixture(scope="module")
def scenario():
    return synthetic_multimodal(n_classes=7, n_experiences=3, train_per_class=4, test_per_class=2, seed=1)


def test_same_seed_same_samples_other_seed_other_samples(samples):
    again = generate_synthetic(n_per_class=40, classes=CLASSES, seed=3)
    other = generate_synthetic(n_per_class=40, classes=CLASSES, seed=4)
    np.testing.assert_array_equal(samples.images, again.images)
    np.testing.assert_array_equal(samples.object_patch_masks, again.object_patch_masks)
    assert samples.texts == again.texts
    assert not np.array_equal(samples.images, other.images)
    assert samples.texts != other.texts


def test_shapes_and_dtypes(samples):
    n = 40 * len(CLASSES)
    assert samples.images.shape == (n, 3, 64, 64) and samples.images.dtype == np.uint8
    assert samples.object_masks.shape == (n, 64, 64) and samples.object_masks.dtype == bool
    assert samples.object_patch_masks.shape == (n, 64) and samples.object_patch_masks.dtype == bool
    assert samples.labels.tolist() == np.repeat(np.arange(len(CLASSES)), 40).tolist()
    assert len(samples.texts) == n


def test_benchmark_and_pretraining_classes_are_disjoint_and_share_attributes():
    bench, pre = set(benchmark_classes()), set(pretraining_classes())
    assert not bench & pre
    assert bench | pre == set(SYNTHETIC_CATALOGUE)
    assert len(SYNTHETIC_CATALOGUE) == len(SHAPES) * len(COLOURS) * len(TEXTURES)
    for attribute in ("shape", "colour", "texture"):
        assert {getattr(c, attribute) for c in bench} == {getattr(c, attribute) for c in pre}
    assert SyntheticClass("triangle", "red", "striped").name == "red striped triangle"


def test_object_patch_masks_cover_exactly_the_object_pixels(samples):
    n = len(samples)
    pooled = samples.object_masks.reshape(n, 8, 8, 8, 8).any(axis=(2, 4)).reshape(n, 64)
    np.testing.assert_array_equal(pooled, samples.object_patch_masks)
    assert samples.object_masks.reshape(n, -1).sum(1).min() > 20  # every object is visible
    assert 0.05 < samples.object_patch_masks.mean() < 0.5  # objects cover part of the image


def test_object_pixels_have_the_class_colour(samples):
    palette = np.array(list(COLOURS.values()), dtype=np.float64)
    checked = 0
    for i in range(len(samples)):
        cls = CLASSES[samples.labels[i]]
        if cls.texture != "solid":
            continue
        pixels = samples.images[i].reshape(3, -1)[:, samples.object_masks[i].reshape(-1)].astype(np.float64)
        nearest = np.abs(palette - pixels.mean(1)).sum(1).argmin()
        assert list(COLOURS)[nearest] == cls.colour
        checked += 1
    assert checked > 0


def test_captions_fit_the_context_and_name_attributes_only_sometimes():
    generated = generate_synthetic(n_per_class=60, classes=benchmark_classes()[:10], seed=0, attribute_prob=0.5)
    tokenizer = get_tokenizer("exmask-tiny")
    assert max(len(tokenizer.encode(text)) + 2 for text in generated.texts) <= 32
    names = [benchmark_classes()[label].name for label in generated.labels]
    named = np.array([name in text for name, text in zip(names, generated.texts, strict=True)])
    np.testing.assert_array_equal(named, generated.names_attributes)
    assert 0.4 < named.mean() < 0.6
    assert all("background" in text for text in generated.texts)
    assert all("small" in text for text in generated.texts)  # the distractors
    always = generate_synthetic(n_per_class=5, classes=CLASSES, seed=0, attribute_prob=1.0)
    assert always.names_attributes.all()


def test_no_class_dropped_for_uneven_splits(scenario):
    seen = [set(exp.classes_in_this_experience) for exp in scenario.train_stream]
    assert [len(s) for s in seen] == [3, 2, 2]
    assert set().union(*seen) == set(range(7))
    assert scenario.class_names == [c.name for c in benchmark_classes()[:7]]
    assert len(scenario.test_stream) == 3


def test_streams_hold_multimodal_samples(scenario):
    x, y, t = scenario.train_stream[0].dataset[0]
    assert isinstance(x, MultimodalSample)
    assert x.image.dtype == torch.uint8 and tuple(x.image.shape) == (3, 64, 64)
    assert x.input_ids.dtype == torch.long and tuple(x.input_ids.shape) == (32,)
    assert y in scenario.train_stream[0].classes_in_this_experience and t == 0
    train = scenario.train_dataset
    assert len(train) == 7 * 4 and len(scenario.test_dataset) == 7 * 2
    assert train.object_patch_masks.shape == (28, 64) and train.object_patch_masks.dtype == torch.bool


def test_building_leaves_global_rng_untouched():
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    synthetic_multimodal(n_classes=4, n_experiences=2, train_per_class=2, test_per_class=1, seed=5)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    assert random.getstate() == python_state


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_classes"):
        synthetic_multimodal(n_classes=65)
    with pytest.raises(ValueError, match="multiple"):
        generate_synthetic(n_per_class=1, classes=CLASSES, seed=0, image_size=60, patch_size=8)
