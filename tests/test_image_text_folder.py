"""The generic image-text folder generator: splits, class order, bad input, laziness, HF input."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, load_from_disk
from fixtures_data import make_image_text_folder, train_one_experience, write_captions, write_jpeg
from PIL import Image

from avalanche_exmask.benchmarks.image_text_folder import image_text_folder
from avalanche_exmask.benchmarks.splits import stratified_split
from avalanche_exmask.data.image_text import BadInputError, ImageTextDataset
from avalanche_exmask.data.sample import MultimodalSample

SEVEN = {f"class{c}": 5 + c for c in range(7)}  # 5..11 images per class


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, Path]:
    return make_image_text_folder(tmp_path, SEVEN)


def _classes_per_exp(benchmark) -> list[set[int]]:
    return [set(exp.classes_in_this_experience) for exp in benchmark.train_stream]


def test_seven_classes_in_three_experiences_drop_none(folder):
    benchmark = image_text_folder(*folder, n_experiences=3, seed=1)
    assert benchmark.classes_per_experience == [3, 2, 2]
    per_exp = _classes_per_exp(benchmark)
    assert set().union(*per_exp) == set(range(7)) and sum(map(len, per_exp)) == 7
    assert [set(e.classes_in_this_experience) for e in benchmark.test_stream] == per_exp
    assert benchmark.class_names == [f"class{c}" for c in range(7)]
    assert benchmark.skipped == [] and benchmark.n_truncated == 0


def test_split_is_stratified_80_20_and_seeded(folder):
    benchmark = image_text_folder(*folder, n_experiences=1, seed=3)
    assert benchmark.split_sizes == {"train": 45, "test": 11}  # sum(round(0.2 * n)) for n = 5..11
    test_targets = list(benchmark.test_stream[0].dataset.targets)
    assert [test_targets.count(c) for c in range(7)] == [round(0.2 * (5 + c)) for c in range(7)]
    same = image_text_folder(*folder, n_experiences=1, seed=3)
    other = image_text_folder(*folder, n_experiences=1, seed=4)

    def test_files(b):
        return sorted(Path(p).name for p in _base(b.test_stream[0].dataset).paths)

    assert test_files(same) == test_files(benchmark) != test_files(other)


def _base(avalanche_dataset) -> ImageTextDataset:
    """The ImageTextDataset under the Avalanche wrappers of an experience's dataset."""
    pending = [avalanche_dataset]
    while pending:
        data = pending.pop()
        if isinstance(data, ImageTextDataset):
            return data
        pending.extend(getattr(data, "_datasets", []))
        if hasattr(data, "_dataset"):
            pending.append(data._dataset)
        if hasattr(data, "dataset"):
            pending.append(data.dataset)
    raise AssertionError("no ImageTextDataset inside")


def test_class_order_from_seed_or_fixed_and_global_rng_untouched(folder):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = image_text_folder(*folder, n_experiences=7, seed=5)
    assert torch.rand(1) == before  # the global RNG was neither read nor reseeded
    b = image_text_folder(*folder, n_experiences=7, seed=5)
    assert a.class_order == b.class_order
    fixed = image_text_folder(*folder, n_experiences=7, class_order=[6, 5, 4, 3, 2, 1, 0])
    assert [list(e.classes_in_this_experience) for e in fixed.train_stream] == [[c] for c in range(6, -1, -1)]


def test_explicit_file_lists_and_list_files(folder, tmp_path):
    root, captions = folder
    train = [f"class{c}/class{c}_{i}.jpg" for c in range(7) for i in range(1, 5)]
    test = [f"class{c}/class{c}_0.jpg" for c in range(7)]
    (tmp_path / "test.txt").write_text("\n".join(test) + "\n")
    benchmark = image_text_folder(root, captions, n_experiences=2, train_files=train, test_files=tmp_path / "test.txt")
    assert benchmark.split_sizes == {"train": 28, "test": 7}
    with pytest.raises(BadInputError, match="class0/class0_0.jpg: listed in both"):
        image_text_folder(root, captions, n_experiences=2, train_files=train + test[:1], test_files=test)
    with pytest.raises(BadInputError, match="class0/nope.jpg: listed in test_files"):
        image_text_folder(root, captions, n_experiences=2, train_files=train, test_files=test + ["class0/nope.jpg"])


def test_items_are_loaded_lazily_and_encoded(folder, monkeypatch):
    opened = []
    real_open = Image.open

    def counting_open(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    benchmark = image_text_folder(*folder, n_experiences=3, verify_images=False)
    assert opened == []  # building read no image
    x, y, t = benchmark.train_stream[0].dataset[0]
    assert len(opened) == 1 and isinstance(x, MultimodalSample) and t == 0
    assert x.image.dtype == torch.uint8 and x.image.shape == (3, 64, 64)
    assert x.input_ids.dtype == torch.long and x.input_ids.shape == (32,)
    assert y in benchmark.train_stream[0].classes_in_this_experience


def test_json_object_captions_and_mapping(tmp_path):
    root, captions = make_image_text_folder(tmp_path, {"a": 3, "b": 3}, captions_name="captions.json")
    assert image_text_folder(root, captions, n_experiences=2).split_sizes == {"train": 4, "test": 2}
    mapping = json.loads(captions.read_text())
    assert image_text_folder(root, mapping, n_experiences=1).split_sizes == {"train": 4, "test": 2}


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda root, cap: (root / "class0" / "class0_1.jpg").write_bytes(b"garbage"), "class0_1.jpg: not a readable image"),
        (lambda root, cap: (root / "class0" / "class0_1.jpg").unlink(), r"captions.jsonl:2: captioned image class0/class0_1.jpg not found"),
        (lambda root, cap: write_jpeg(root / "class1" / "extra.jpg", 99), "extra.jpg: image without caption"),
        (lambda root, cap: (root / "empty_class").mkdir(), "empty_class: class folder without images"),
        (lambda root, cap: _append(cap, '{"image": "class0/class0_0.jpg", "text": "again"}'), r"captions.jsonl:57: second caption"),
        (lambda root, cap: _append(cap, '{"image": "class0/class0_0.jpg", "te'), r"captions.jsonl:57: not valid JSON"),
        (lambda root, cap: _rewrite_first(cap, "   "), r"captions.jsonl:1: empty text for image class0/class0_0.jpg"),
    ],
    ids=["corrupt", "missing", "uncaptioned", "empty-class", "duplicate", "truncated-line", "empty-text"],
)
def test_bad_input_raises_naming_file_and_line_or_is_skipped(folder, damage, message):
    root, captions = folder
    damage(root, captions)
    with pytest.raises(BadInputError, match=message):
        image_text_folder(root, captions, n_experiences=3)
    benchmark = image_text_folder(root, captions, n_experiences=3, on_error="skip")
    assert len(benchmark.skipped) == 1
    where, reason = benchmark.skipped[0]
    assert re.search(message, f"{where}: {reason}")
    assert len(benchmark.class_names) == 7


def _append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


def _rewrite_first(path: Path, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["text"] = text
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n", encoding="utf-8")


def test_skip_is_logged_and_a_class_left_without_test_is_reported(tmp_path, caplog):
    root, captions = make_image_text_folder(tmp_path, {"a": 4, "b": 1, "c": 4})
    with pytest.raises(BadInputError, match="class 'b': no samples in split"):
        image_text_folder(root, captions, n_experiences=2)
    with caplog.at_level(logging.WARNING, logger="avalanche_exmask"):
        benchmark = image_text_folder(root, captions, n_experiences=2, on_error="skip")
    assert benchmark.class_names == ["a", "c"] and benchmark.skipped == [("class 'b'", "no samples in split(s) test")]
    assert "skipped 1 item(s)" in caplog.text


def test_long_captions_are_counted_as_truncated(tmp_path):
    root, captions = make_image_text_folder(tmp_path, {"a": 3, "b": 3})
    write_captions(
        captions,
        [(f"{c}/{c}_{i}.jpg", ("word " * 40 if i == 0 else "short") + f" {c}") for c in "ab" for i in range(3)],
    )
    assert image_text_folder(root, captions, n_experiences=1).n_truncated == 2


def test_stratified_split_keeps_one_item_classes_in_train():
    kept, held = stratified_split(["x"] * 10 + ["y"], fraction=0.3, seed=0)
    assert len(held) == 3 and 10 in kept


def _hf_dataset(n_classes: int = 3, per_class: int = 5) -> Dataset:
    rows = [(Image.new("RGB", (20, 16), (40 * c, 10 * i, 0)), f"item {i} of class {c}", c)
            for c in range(n_classes) for i in range(per_class)]
    images, texts, labels = zip(*rows, strict=True)
    dataset = Dataset.from_dict({"image": list(images), "text": list(texts), "label": list(labels)})
    return dataset.cast_column("label", ClassLabel(names=[f"name{c}" for c in range(n_classes)]))


def test_hf_dataset_from_disk_single_split_and_dataset_dict(tmp_path):
    _hf_dataset().save_to_disk(tmp_path / "hf")
    loaded = load_from_disk(tmp_path / "hf")
    benchmark = image_text_folder(dataset=loaded, n_experiences=3, seed=0)
    assert benchmark.class_names == ["name0", "name1", "name2"]
    assert benchmark.split_sizes == {"train": 12, "test": 3}
    x, y, _ = benchmark.test_stream[0].dataset[0]
    assert x.image.shape == (3, 64, 64) and x.image.dtype == torch.uint8
    parts = DatasetDict({"train": _hf_dataset(per_class=4), "test": _hf_dataset(per_class=2)})
    parts.save_to_disk(tmp_path / "hf_dict")
    benchmark = image_text_folder(dataset=load_from_disk(tmp_path / "hf_dict"), n_experiences=2)
    assert benchmark.split_sizes == {"train": 12, "test": 6}


def test_hf_dataset_empty_text_is_reported():
    dataset = _hf_dataset()
    texts = list(dataset["text"])
    texts[2] = ""
    dataset = dataset.remove_columns("text").add_column("text", texts)
    with pytest.raises(BadInputError, match="row 2: empty text"):
        image_text_folder(dataset=dataset, n_experiences=1)
    benchmark = image_text_folder(dataset=dataset, n_experiences=1, on_error="skip")
    assert benchmark.skipped == [("Hugging Face dataset (dataset), row 2", "empty text")]


def test_train_one_experience(folder):
    benchmark = image_text_folder(*folder, n_experiences=3, seed=0)
    assert torch.isfinite(torch.tensor(train_one_experience(benchmark)))
