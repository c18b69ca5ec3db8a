"""Photographic backgrounds: the shipped photographs and their licences, the crops, and the synthetic
and clip-art generators at 128 px over them (tiny slices)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avalanche_exmask.benchmarks.backgrounds import PHOTO_ROOT, PHOTO_SOURCES, load_photos, photo_backgrounds
from avalanche_exmask.benchmarks.clipart import CLIPART_ROOT, ClipartOnPhotos, clipart, clipart_object_masks
from avalanche_exmask.benchmarks.synthetic import benchmark_classes, generate_synthetic
from avalanche_exmask.data.encode import SampleEncoder

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
ALLOWED_LICENCES = ("public domain", "CC0 1.0", "CC BY 4.0")


def test_every_shipped_photo_is_listed_with_an_allowed_licence_and_the_set_is_small():
    shipped = sorted(p.name for p in PHOTO_ROOT.iterdir() if p.name != "SOURCES.md")
    assert shipped == sorted(f"{name}.jpg" for name in PHOTO_SOURCES)
    assert sum((PHOTO_ROOT / name).stat().st_size for name in shipped) <= 300_000
    table = (PHOTO_ROOT / "SOURCES.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(2).split(" | ") for m in re.finditer(r"^\| (\S+\.jpg) \| (.*) \|$", table, re.M)}
    assert sorted(rows) == shipped
    for name, source in PHOTO_SOURCES.items():
        assert source["licence"].startswith(ALLOWED_LICENCES), name
        cells = rows[f"{name}.jpg"]
        assert cells[-1] == source["licence"] and cells[-1].startswith(ALLOWED_LICENCES)
        assert cells[2] == source["author"]


def test_crops_are_seeded_sized_photographic_and_varied():
    first, which = photo_backgrounds(np.random.default_rng(5), 12, 128)
    again, _ = photo_backgrounds(np.random.default_rng(5), 12, 128)
    other, _ = photo_backgrounds(np.random.default_rng(6), 12, 128)
    assert first.shape == (12, 3, 128, 128) and first.dtype == np.uint8 and which.shape == (12,)
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()
    assert len(set(which.tolist())) > 1  # more than one photograph
    # not flat: a 128-step gradient spreads neighbouring pixels by ~1 level; a crop of sky, 2 to 3; the rest, more
    spread = np.abs(np.diff(first.astype(np.int16), axis=3)).mean(axis=(1, 2, 3))
    assert (spread > 2).all() and spread.mean() > 6
    assert len({crop.tobytes() for crop in first}) == 12
    with pytest.raises(ValueError, match="scale"):
        photo_backgrounds(np.random.default_rng(0), 1, 64, scale=(0.0, 1.0))


def test_load_photos_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="astronaut.jpg"):
        load_photos(tmp_path)


@pytest.fixture(scope="module")
def synthetic_pair():
    classes = benchmark_classes()[:3]
    kwargs = dict(n_per_class=2, classes=classes, seed=3, image_size=128, patch_size=16)
    return generate_synthetic(**kwargs, background="photo"), generate_synthetic(**kwargs), kwargs


def test_synthetic_on_photos_keeps_the_objects_and_changes_the_background(synthetic_pair):
    photo, pattern, kwargs = synthetic_pair
    assert photo.images.shape == (6, 3, 128, 128) and photo.object_patch_masks.shape == (6, 64)
    np.testing.assert_array_equal(photo.object_masks, pattern.object_masks)
    np.testing.assert_array_equal(photo.labels, pattern.labels)
    background = ~photo.object_masks[:, None].repeat(3, 1)
    assert (photo.images[background] != pattern.images[background]).mean() > 0.9
    assert all("a photo of" in text for text in photo.texts)
    encoder = SampleEncoder.for_model("exmask-tiny-128")
    assert not any(encoder.is_truncated(text) for text in photo.texts)
    again = generate_synthetic(**kwargs, background="photo")
    np.testing.assert_array_equal(again.images, photo.images)
    assert again.texts == photo.texts
    with pytest.raises(ValueError, match="background must be"):
        generate_synthetic(**kwargs, background="photos")


def test_clipart_on_photos_at_128_px_keeps_each_object_and_is_seeded():
    encoder = SampleEncoder.for_model("exmask-tiny-128")
    sources = ["bird/eagle_01.jpg", "bug/ant.jpg"]
    dataset = ClipartOnPhotos(sources, ["an eagle", "an ant"], [0, 1], encoder=encoder, seed=0)
    images = [dataset.image(i) for i in range(2)]
    sample, label = dataset[1]
    assert sample.image.shape == (3, 128, 128) and label == 1
    np.testing.assert_array_equal(sample.image.numpy(), images[1])
    for index, image in enumerate(images):
        mask = dataset.object_mask(index)
        assert mask.shape == (128, 128) and mask.sum() == 4 * clipart_object_masks([sources[index]]).sum()
        spread = np.abs(np.diff(image.astype(np.int16), axis=2))[:, ~mask[:, 1:]].mean()
        assert spread > 3  # a photographic background behind the object
    reseeded = ClipartOnPhotos(sources, ["an eagle", "an ant"], [0, 1], encoder=encoder, seed=1)
    np.testing.assert_array_equal(dataset.image(0), ClipartOnPhotos(sources[:1], ["x"], [0], encoder=encoder, seed=0).image(0))
    assert (reseeded.image(0) != images[0]).any()
    mask = dataset.object_mask(0)
    np.testing.assert_array_equal(reseeded.image(0)[:, mask], images[0][:, mask])


def test_clipart_generator_takes_a_photo_background_and_keeps_its_split():
    benchmark = clipart(1, model_name="exmask-tiny-128", background="photo", classes=["bird"])
    train = benchmark.train_stream[0].dataset
    expected = [p for p in (CLIPART_ROOT / "train.txt").read_text().split() if p.startswith("bird/")]
    assert len(train) == len(expected)
    assert train[0][0].image.shape == (3, 128, 128)
    with pytest.raises(ValueError, match="background must be"):
        clipart(1, background="photos", classes=["bird"])


def test_build_photo_backgrounds_rewrites_the_shipped_set(tmp_path):
    spec = importlib.util.spec_from_file_location("build_photo_backgrounds", BENCHMARKS_DIR / "build_photo_backgrounds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    source = tmp_path / "skimage-data"
    source.mkdir()
    for entry in PHOTO_SOURCES.values():  # stand-ins for scikit-image's files, 300 x 200
        Image.fromarray(np.full((200, 300, 3), 100, np.uint8)).save(source / entry["file"])
    written = module.main(["--skimage-data", str(source), "--out", str(tmp_path / "out"), "--short-side", "50"])
    assert sorted(p.name for p in written) == sorted(f"{n}.jpg" for n in PHOTO_SOURCES)
    with Image.open(written[0]) as image:
        assert image.size == (75, 50)
    (source / "rocket.jpg").unlink()
    with pytest.raises(SystemExit, match="rocket.jpg"):
        module.main(["--skimage-data", str(source), "--out", str(tmp_path / "out")])
