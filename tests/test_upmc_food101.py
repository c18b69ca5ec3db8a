"""UPMC-Food101: CSV titles (commas, quotes, non-ASCII), official split, validation, bad rows."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from fixtures_data import make_upmc_food101, train_one_experience, write_jpeg
from PIL import Image

from avalanche_exmask.benchmarks.upmc_food101 import upmc_food101
from avalanche_exmask.data.encode import SampleEncoder
from avalanche_exmask.data.image_text import BadInputError

CLASSES = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beignets"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_upmc_food101(tmp_path / "upmc", CLASSES, n_train=6, n_test=2)


def test_official_split_uneven_experiences_and_csv_titles(root):
    benchmark = upmc_food101(root, n_experiences=2, seed=0)
    assert benchmark.class_names == CLASSES
    assert benchmark.split_sizes == {"train": 30, "test": 10}
    assert benchmark.classes_per_experience == [3, 2]
    titles = {t for t in _csv_titles(root / "texts" / "train_titles.csv")}
    assert 'apple pie recipe #0, "the best" – crème' in titles  # quoted comma, quotes, non-ASCII
    x, y, _ = benchmark.train_stream[0].dataset[0]
    assert x.image.shape == (3, 64, 64) and x.input_ids.shape == (32,)


def _csv_titles(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as file:
        return [row[1] for row in csv.reader(file)]


def test_validation_split_is_carved_from_train_stratified(root):
    benchmark = upmc_food101(root, n_experiences=5, validation_fraction=0.34, seed=1)
    assert benchmark.split_sizes == {"train": 20, "test": 10, "valid": 10}
    assert [set(e.classes_in_this_experience) for e in benchmark.valid_stream] == [
        set(e.classes_in_this_experience) for e in benchmark.train_stream
    ]
    assert "valid" in benchmark.streams and benchmark.class_names == CLASSES


def test_long_titles_are_counted(tmp_path):
    root = make_upmc_food101(
        tmp_path, CLASSES[:2], n_train=3, n_test=1, title=lambda cls, i: ("very long title " * 30 if i == 0 else "short")
    )
    benchmark = upmc_food101(root, n_experiences=1)
    assert benchmark.n_truncated == 4  # the i == 0 title of each class in both splits
    clip = upmc_food101(root, n_experiences=1, encoder=SampleEncoder.for_model("ViT-B-16"), verify_images=False)
    assert clip.n_truncated == 4


def _edit_csv(root: Path, edit) -> None:
    path = root / "texts" / "train_titles.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(edit(lines)), encoding="utf-8")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: _edit_csv(r, lambda ls: ls[:2] + ["only_one_field\n"] + ls[2:]), r"train_titles.csv:3: expected 3 fields"),
        (lambda r: _edit_csv(r, lambda ls: ls + ["apple_pie_train_0.jpg,again,apple_pie\n"]), r"train_titles.csv:31: second row"),
        (lambda r: _edit_csv(r, lambda ls: ls + ['ghost.jpg,"a, b",apple_pie\n']), r"train_titles.csv:31: image .*ghost.jpg not found"),
        (lambda r: _edit_csv(r, lambda ls: ['apple_pie_train_0.jpg,"  ",apple_pie\n'] + ls[1:]), r"train_titles.csv:1: empty title"),
        (lambda r: write_jpeg(r / "images" / "train" / "baklava" / "stray.jpg", 5), r"stray.jpg: image without a row"),
        (lambda r: (r / "images" / "test" / "beignets" / "beignets_test_1.jpg").write_bytes(b"\xff\xd8 broken"),
         r"beignets_test_1.jpg: not a readable image"),
    ],
    ids=["short-row", "duplicate", "missing-image", "empty-title", "no-row", "corrupt"],
)
def test_bad_rows_raise_with_file_and_line_or_are_skipped(root, damage, message):
    damage(root)
    with pytest.raises(BadInputError, match=message):
        upmc_food101(root, n_experiences=5)
    benchmark = upmc_food101(root, n_experiences=5, on_error="skip")
    assert len(benchmark.skipped) == 1 and re.search(message, ": ".join(benchmark.skipped[0]))


def test_unquoted_comma_in_title_keeps_file_and_class(root):
    _edit_csv(root, lambda ls: ["apple_pie_train_0.jpg,pie, with, commas,apple_pie\n"] + ls[1:])
    benchmark = upmc_food101(root, n_experiences=1)
    assert benchmark.split_sizes["train"] == 30 and benchmark.skipped == []


def test_missing_csv_is_a_clear_error(root):
    (root / "texts" / "test_titles.csv").unlink()
    with pytest.raises(FileNotFoundError, match="test_titles.csv"):
        upmc_food101(root, n_experiences=1)


def test_hf_dataset_dict_with_validation():
    def part(per_class):
        rows = [(Image.new("RGB", (16, 16), (c * 40, i, 0)), f"{name} title {i}", c)
                for c, name in enumerate(CLASSES) for i in range(per_class)]
        images, texts, labels = map(list, zip(*rows, strict=True))
        return Dataset.from_dict({"image": images, "text": texts, "label": labels}).cast_column(
            "label", ClassLabel(names=CLASSES)
        )

    benchmark = upmc_food101(dataset=DatasetDict({"train": part(5), "test": part(2)}), n_experiences=5,
                             validation_fraction=0.2)
    assert benchmark.split_sizes == {"train": 20, "test": 10, "valid": 5}
    assert benchmark.class_names == CLASSES


def test_train_one_experience(root):
    benchmark = upmc_food101(root, n_experiences=5, seed=0)
    assert torch.isfinite(torch.tensor(train_one_experience(benchmark)))
