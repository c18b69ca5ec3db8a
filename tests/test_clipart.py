"""The embedded real-image benchmark (clip art of held-out categories), its maintainer pipeline on a
fake openclipart / emoji tree (no Debian or npm package needed), and the shipped ``real`` weights."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from avalanche_exmask.benchmarks.clipart import CLIPART_ROOT, HELD_OUT, clipart, clipart_object_masks
from avalanche_exmask.config import RunConfig, expand_runs
from avalanche_exmask.experiment import run_experiment
from avalanche_exmask.models.factory import PACKAGED_WEIGHTS, create_clip
from avalanche_exmask.registry import METHODS

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
REAL_WEIGHTS = PACKAGED_WEIGHTS["exmask-tiny"]["real"]


def _script(name: str):
    """A module of benchmarks/ (the maintainer scripts), imported once under its own name."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the shipped benchmark
def test_shipped_benchmark_is_small_complete_and_public_domain():
    files = [p for p in CLIPART_ROOT.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 3 * 2**20
    captions = [json.loads(line) for line in (CLIPART_ROOT / "captions.jsonl").read_text().splitlines()]
    sources = {json.loads(line)["image"]: json.loads(line) for line in (CLIPART_ROOT / "sources.jsonl").read_text().splitlines()}
    images = sorted(p.relative_to(CLIPART_ROOT / "images").as_posix() for p in (CLIPART_ROOT / "images").rglob("*.jpg"))
    train = (CLIPART_ROOT / "train.txt").read_text().split()
    test = (CLIPART_ROOT / "test.txt").read_text().split()
    assert sorted(c["image"] for c in captions) == images == sorted(sources) == sorted(train + test)
    assert not set(train) & set(test)
    assert {p.split("/")[0] for p in images} == {c.name for c in HELD_OUT}
    assert all(s["licence"] == "public domain" and s["origin"].startswith("openclipart-png: ") for s in sources.values())
    assert all(c["text"].strip() for c in captions)
    with Image.open(CLIPART_ROOT / "images" / images[0]) as image:
        assert image.size == (64, 64)


def test_shipped_object_masks_cover_part_of_each_image():
    paths = (CLIPART_ROOT / "test.txt").read_text().split()
    masks = clipart_object_masks(paths)
    assert masks.shape == (len(paths), 64, 64) and masks.dtype == bool
    covered = masks.reshape(len(paths), -1).mean(1)
    assert (covered > 0.01).all() and (covered < 0.95).all()
    with pytest.raises(KeyError, match="no object mask for nope/x.jpg"):
        clipart_object_masks(["nope/x.jpg"])


def test_clipart_slice_builds_through_image_text_folder():
    benchmark = clipart(n_experiences=2, classes=["bird", "fruit"], seed=1)
    assert benchmark.class_keys == ["bird", "fruit"]
    assert len(benchmark.train_stream) == 2
    train_files = [p for p in (CLIPART_ROOT / "train.txt").read_text().split() if p.split("/")[0] in ("bird", "fruit")]
    assert benchmark.split_sizes["train"] == len(train_files)
    sample = benchmark.train_stream[0].dataset[0][0]
    assert sample.image.shape == (3, 64, 64) and sample.image.dtype == torch.uint8
    with pytest.raises(ValueError, match="'zebra'"):
        clipart(n_experiences=1, classes=["bird", "zebra"])


def test_config_accepts_the_clipart_benchmark():
    config = RunConfig.from_dict({"benchmark": {"name": "clipart", "n_experiences": 5}, "model": {"pretrained": "real"}})
    assert config.benchmark.name == "clipart" and config.model.pretrained == "real"


def test_every_registered_method_runs_on_a_clipart_slice():
    benchmark = clipart(n_experiences=2, classes=["bug", "house"], seed=0)
    labels = sorted(int(label) for exp in benchmark.train_stream for label in exp.classes_in_this_experience)
    configs = expand_runs({
        "methods": METHODS.names(), "seed": 0,
        "benchmark": {"name": "clipart", "n_experiences": 2, "args": {"classes": ["bug", "house"]}},
        "model": {"pretrained": "real"}, "train": {"epochs": 1, "batch_size": 16},
        "storage": {"budget": {"samples_per_class": 2}}, "eval": {"batch_size": 64}, "logging": {"progress": False},
    }, source="test")
    for config in configs:
        results = run_experiment(config, benchmark=benchmark)
        method = config.method
        assert len(results["accuracy_matrix"]) == (1 if METHODS.get(method).joint else 2), method
        # evaluated on both classes' test images at the end
        assert sorted(map(int, results["class_accuracy_matrix"][-1])) == labels, method
        if "buffer_nbytes" in results:  # our byte-budgeted buffers: at least the raw count, within the budget
            assert results["exemplars_per_class"] >= 2 and results["buffer_nbytes"] <= results["budget_nbytes"], method


def test_demo_runs_on_the_clipart_benchmark_with_the_real_weights(capsys):
    from avalanche_exmask import __main__ as cli

    assert cli.main(["demo", "--benchmark", "clipart", "--classes", "2", "--experiences", "2", "--epochs", "1",
                     "--methods", "raw", "--quiet", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "Embedded clipart benchmark: 2 classes in 2 experiences" in out and "'real' weights" in out
    with pytest.raises(SystemExit, match="--classes must be in 1..10"):
        cli.main(["demo", "--benchmark", "clipart", "--classes", "11"])


# --------------------------------------------------------------------------- the shipped weights
def test_real_weights_are_small_fp16_load_offline_and_differ_from_synthetic():
    assert REAL_WEIGHTS.is_file() and REAL_WEIGHTS.stat().st_size <= 10 * 2**20
    from safetensors import safe_open

    with safe_open(str(REAL_WEIGHTS), framework="pt") as weights:
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {"F16"}
    real, synthetic = create_clip("exmask-tiny", "real"), create_clip("exmask-tiny", "synthetic")
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(real.encode_image(image), synthetic.encode_image(image), atol=1e-3)


def test_real_weights_record_sources_licences_and_held_out_categories():
    record = json.loads(REAL_WEIGHTS.with_suffix(".json").read_text())
    assert set(record["held_out_categories"]) == {c.name for c in HELD_OUT}
    licences = {key: value["licence"] for key, value in record["sources"].items()}
    assert licences["openclipart"].startswith("public domain")
    assert licences["twemoji"].startswith("CC BY 4.0") and licences["noto"].startswith("Apache License 2.0")
    assert record["material"]["objects"] > 1000 and record["final_contrastive_loss"] > 0
    assert (REAL_WEIGHTS.parent / "exmask-tiny-real.LICENSES.md").is_file()


# --------------------------------------------------------------------------- maintainer pipeline on fake material
def _disc(path: Path, colour: tuple[int, int, int], size=(40, 30), opaque: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGBA", size, colour + (255,) if opaque else (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((4, 4, size[0] - 5, size[1] - 5), fill=colour + (255,))
    image.save(path)


@pytest.fixture(scope="module")
def fake_material(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("material")
    png = root / "openclipart" / "png"
    for i in range(6):
        _disc(png / "food" / "fruit" / f"pear_{i}_01.png", (40 * i, 200, 30))
        _disc(png / "animals" / "birds" / f"owl_{i}.png", (200, 40 * i, 30))
        _disc(png / "animals" / "mammals" / f"cow_{i}.png", (30, 30, 40 * i))
    _disc(png / "animals" / "mammals" / "apple_tree.png", (1, 2, 3))  # names a held-out concept
    _disc(png / "food" / "fruit" / "exotic" / "durian.png", (4, 5, 6))  # below a held-out folder
    _disc(png / "special" / "patterns" / "grid.png", (90, 90, 90), opaque=True)  # a background
    modules = root / "node_modules"
    (modules / "emoji-datasource").mkdir(parents=True)
    catalogue = [
        {"name": "DOG FACE", "image": "1f436.png", "short_names": ["dog"], "category": "Animals & Nature",
         "subcategory": "animal-mammal", "has_img_twitter": True, "has_img_google": True},
        {"name": "RED APPLE", "image": "1f34e.png", "short_names": ["apple"], "category": "Food & Drink",
         "subcategory": "food-fruit", "has_img_twitter": True, "has_img_google": True},
    ]
    (modules / "emoji-datasource" / "emoji.json").write_text(json.dumps(catalogue))
    for name in ("twitter", "google"):
        for entry in catalogue:
            _disc(modules / f"emoji-datasource-{name}" / "img" / name / "64" / entry["image"], (10, 10, 10), size=(64, 64))
    return root


def test_material_keeps_held_out_categories_out_of_pretraining(fake_material):
    material_module = _script("clipart_material")
    material, summary = material_module.pretraining_material(
        fake_material / "openclipart" / "png", fake_material / "node_modules", cache=fake_material / "cache.npz"
    )
    titles = sorted(item.title for item in material.items)
    assert titles == ["cow"] * 6 + ["dog face", "dog face"]  # file names cleaned, trailing numbers dropped
    assert material_module.clean_title("apple_bitten_dan_gerhard_01") == "apple bitten dan gerhard"
    assert summary["held_out_items_excluded"] == 6 + 6 + 1 + 1 + 2  # fruit, birds, apple tree, durian, 2 apples
    assert material.objects.shape[1:] == (64, 64, 4) and len(material.backgrounds) == 1
    assert [len(g) for g in material.groups()] == [2, 6]  # emoji animal-mammal, animals/mammals
    cached, _ = material_module.pretraining_material(Path("/missing"), Path("/missing"), cache=fake_material / "cache.npz")
    assert [i.title for i in cached.items] == [i.title for i in material.items]
    np.testing.assert_array_equal(cached.objects, material.objects)


def test_composite_mask_is_the_objects_alpha_on_top_of_clutter(fake_material):
    material_module = _script("clipart_material")
    material, _ = material_module.pretraining_material(
        fake_material / "openclipart" / "png", fake_material / "node_modules", cache=fake_material / "cache.npz"
    )
    tile = np.zeros((64, 64, 4), dtype=np.uint8)
    tile[:20, :32] = (255, 0, 255, 255)  # an opaque magenta rectangle, 32 x 20
    rng = np.random.default_rng(0)
    image, mask = material_module.composite(material, tile, (32, 20), rng, scale=(0.5, 0.5), clutter=(3, 3))
    assert mask.sum() == 32 * 20  # longer side 0.5 * 64 = 32: the rectangle at its own size
    assert (image[mask] == (255, 0, 255)).all()  # the object is on top of the clutter
    patches = material_module.patch_mask(mask, 8)
    assert patches.shape == (64,)
    rows, cols = mask.nonzero()
    expected = {(r // 8) * 8 + c // 8 for r, c in zip(rows, cols, strict=True)}
    assert set(patches.nonzero()[0]) == expected


def test_build_benchmark_from_fake_material_loads_through_clipart(fake_material, tmp_path):
    build = _script("build_clipart_benchmark")
    summary = build.main([
        "--openclipart", str(fake_material / "openclipart" / "png"), "--emoji", str(fake_material / "node_modules"),
        "--cache", str(fake_material / "cache.npz"), "--output", str(tmp_path / "bench"), "--per-class", "4",
        "--test-every", "2",
    ])
    assert summary["per_class"] == {"fruit": 4, "bird": 4} and summary["train"] == 4 and summary["test"] == 4
    benchmark = clipart(n_experiences=1, root=tmp_path / "bench")
    assert benchmark.class_keys == ["bird", "fruit"]
    masks = clipart_object_masks((tmp_path / "bench" / "test.txt").read_text().split(), root=tmp_path / "bench")
    assert masks.shape == (4, 64, 64) and (masks.reshape(4, -1).sum(1) > 50).all()
    licences = [json.loads(line)["licence"] for line in (tmp_path / "bench" / "sources.jsonl").read_text().splitlines()]
    assert licences == ["public domain"] * 8
