"""MM-ImageNet-R: shipped class names, the fixed split, explicit lists, HF input, training."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import ClassLabel, Dataset
from fixtures_data import make_imagenet_r, train_one_experience
from PIL import Image

from avalanche_exmask.benchmarks.mm_imagenet_r import IMAGENET_R_CLASSES, fixed_split, mm_imagenet_r
from avalanche_exmask.benchmarks.records import Records
from avalanche_exmask.data.image_text import BadInputError

WNIDS = ["n01443537", "n01484850", "n02099601", "n07753592", "n12267677"]  # 4 shipped + 1 below
UNKNOWN = "n99999999"


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return make_imagenet_r(tmp_path, [*WNIDS, UNKNOWN], per_class=10)


def test_shipped_class_names_cover_200_wnids():
    assert len(IMAGENET_R_CLASSES) == 200 and len(set(IMAGENET_R_CLASSES.values())) == 200
    assert all(w.startswith("n") and len(w) == 9 for w in IMAGENET_R_CLASSES)
    assert IMAGENET_R_CLASSES["n01443537"] == "goldfish" and IMAGENET_R_CLASSES["n12267677"] == "acorn"


def test_names_wnids_and_experiences(data):
    root, captions = data
    benchmark = mm_imagenet_r(root, captions, n_experiences=4, seed=0)
    assert benchmark.class_keys == sorted([*WNIDS, UNKNOWN])
    assert benchmark.class_names[:2] == ["goldfish", "great white shark"]
    assert benchmark.class_names[-1] == UNKNOWN  # not in the shipped list: the wnid stays
    assert benchmark.classes_per_experience == [2, 2, 1, 1]
    assert benchmark.split_sizes == {"train": 48, "test": 12}  # 80/20 in every class
    # root may also be the imagenet-r folder itself
    assert mm_imagenet_r(root / "imagenet-r", captions, n_experiences=2).split_sizes == benchmark.split_sizes


def test_fixed_split_depends_on_file_names_only(data):
    root, captions = data
    a = mm_imagenet_r(root, captions, n_experiences=2, seed=0)
    b = mm_imagenet_r(root, captions, n_experiences=3, seed=7)

    def tests_of(benchmark):
        return {str(p) for e in benchmark.test_stream for p in _paths(e.dataset)}

    assert tests_of(a) == tests_of(b)
    records = Records([f"w/{i}.jpg" for i in range(100)], ["t"] * 100, ["w"] * 100)
    split = fixed_split(records)
    reversed_split = fixed_split(records.select(list(range(99, -1, -1))))
    assert len(split["test"]) == 20 and set(reversed_split["test"].sources) == set(split["test"].sources)


def _paths(dataset):
    """Image paths of the split dataset under an experience's dataset (all of the split's files)."""
    from avalanche_exmask.data.image_text import ImageTextDataset

    pending, found = [dataset], []
    while pending:
        data = pending.pop()
        if isinstance(data, ImageTextDataset):
            found.extend(data.paths)
            continue
        pending.extend(getattr(data, "_datasets", []))
        pending.extend(d for d in (getattr(data, "_dataset", None), getattr(data, "dataset", None)) if d is not None)
    return found


def test_explicit_file_lists(data):
    root, captions = data
    test = [f"{w}/{w}_0.jpg" for w in [*WNIDS, UNKNOWN]]
    train = [f"{w}/{w}_{i}.jpg" for w in [*WNIDS, UNKNOWN] for i in range(1, 10)]
    benchmark = mm_imagenet_r(root, captions, n_experiences=2, train_files=train, test_files=test)
    assert benchmark.split_sizes == {"train": 54, "test": 6}


def test_missing_listed_image_names_the_caption_line(data):
    root, captions = data
    (root / "imagenet-r" / WNIDS[0] / f"{WNIDS[0]}_3.jpg").unlink()
    with pytest.raises(BadInputError, match=r"captions.jsonl:4: captioned image n01443537/n01443537_3.jpg not found"):
        mm_imagenet_r(root, captions, n_experiences=2)
    assert len(mm_imagenet_r(root, captions, n_experiences=2, on_error="skip").skipped) == 1


def test_hf_dataset_labels_that_are_wnids_get_names():
    wnids = WNIDS[:3]
    rows = [(Image.new("RGB", (16, 16), (c * 60, i, 0)), f"caption {i}", c) for c in range(3) for i in range(5)]
    images, texts, labels = map(list, zip(*rows, strict=True))
    dataset = Dataset.from_dict({"image": images, "text": texts, "label": labels}).cast_column(
        "label", ClassLabel(names=wnids)
    )
    benchmark = mm_imagenet_r(dataset=dataset, n_experiences=3)
    assert benchmark.class_names == ["goldfish", "great white shark", "golden retriever"]
    assert benchmark.class_keys == wnids


def test_train_one_experience(data):
    benchmark = mm_imagenet_r(*data, n_experiences=3, seed=0)
    assert torch.isfinite(torch.tensor(train_one_experience(benchmark)))
