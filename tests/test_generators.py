"""What the benchmark generators share: one signature shape and one BenchmarkInfo."""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from fixtures_data import make_image_text_folder, make_imagenet_r, make_upmc_food101

from avalanche_exmask.benchmarks.image_text_folder import image_text_folder
from avalanche_exmask.benchmarks.info import BenchmarkInfo
from avalanche_exmask.benchmarks.mm_imagenet_r import mm_imagenet_r
from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
from avalanche_exmask.benchmarks.upmc_food101 import upmc_food101

#: The keyword-only arguments every file-based generator takes, in this order, with these defaults.
SHARED = {
    "n_experiences": 10,
    "classes_per_experience": None,
    "seed": 0,
    "class_order": None,
    "validation_fraction": 0.0,
    "model_name": "exmask-tiny",
    "encoder": None,
    "verify_images": True,
    "on_error": "raise",
    "dataset": None,
}


@pytest.mark.parametrize(
    "generator, location",
    [(image_text_folder, ["root", "captions"]), (mm_imagenet_r, ["root", "captions"]), (upmc_food101, ["root"])],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_generators_share_one_signature_shape(generator, location):
    parameters = inspect.signature(generator).parameters.values()
    positional = [p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    keyword = {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert positional == location
    assert list(keyword)[: len(SHARED)] == list(SHARED)
    assert {name: keyword[name] for name in SHARED} == SHARED


def _assert_info_mirrored(benchmark) -> BenchmarkInfo:
    info = benchmark.info
    assert isinstance(info, BenchmarkInfo)
    for field in dataclasses.fields(info):
        if field.name != "extras":
            assert getattr(benchmark, field.name) is getattr(info, field.name)
    for name, value in info.extras.items():
        assert getattr(benchmark, name) is value
    return info


def test_image_text_folder_classes_per_experience_and_validation(tmp_path: Path):
    root, captions = make_image_text_folder(tmp_path, {f"c{c}": 10 for c in range(5)})
    benchmark = image_text_folder(root, captions, classes_per_experience=2, validation_fraction=0.25)
    info = _assert_info_mirrored(benchmark)
    assert info.classes_per_experience == [2, 2, 1]
    assert info.split_sizes == {"train": 30, "test": 10, "valid": 10}
    assert info.class_keys == [f"c{c}" for c in range(5)] and info.skipped == [] and info.n_truncated == 0
    assert [set(e.classes_in_this_experience) for e in benchmark.valid_stream] == [
        set(e.classes_in_this_experience) for e in benchmark.train_stream
    ]


def test_mm_imagenet_r_classes_per_experience_and_validation(tmp_path: Path):
    root, captions = make_imagenet_r(tmp_path, ["n01443537", "n01484850", "n02099601"], per_class=10)
    benchmark = mm_imagenet_r(root, captions, classes_per_experience=[1, 2], validation_fraction=0.25, seed=3)
    info = _assert_info_mirrored(benchmark)
    assert info.classes_per_experience == [1, 2]
    assert info.split_sizes == {"train": 18, "test": 6, "valid": 6}
    assert info.class_names == ["goldfish", "great white shark", "golden retriever"]


def test_upmc_food101_classes_per_experience(tmp_path: Path):
    root = make_upmc_food101(tmp_path, ["apple_pie", "baklava", "beignets"], n_train=3, n_test=1)
    info = _assert_info_mirrored(upmc_food101(root, classes_per_experience=2))
    assert info.classes_per_experience == [2, 1] and info.split_sizes == {"train": 9, "test": 3}


def test_synthetic_extras_are_scenario_attributes():
    scenario = synthetic_multimodal(n_classes=3, n_experiences=3, train_per_class=2, test_per_class=1)
    info = _assert_info_mirrored(scenario)
    assert set(info.extras) == {"classes", "train_dataset", "test_dataset"}
    assert info.split_sizes == {"train": 6, "test": 3} and len(scenario.classes) == 3


def test_extras_may_not_hide_fields():
    with pytest.raises(ValueError, match="class_names"):
        BenchmarkInfo(class_order=[0], classes_per_experience=[1], extras={"class_names": ["x"]})
