"""Hostile input files, made on the fly: each is named before training or skipped and reported."""
from __future__ import annotations

import io
import json
import os
import re
import struct
import zlib
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset
from datasets import Image as ImageFeature
from fixtures_data import make_image_text_folder, write_captions, write_jpeg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from avalanche_exmask.benchmarks.image_text_folder import image_text_folder
from avalanche_exmask.benchmarks.records import read_file_list
from avalanche_exmask.data.encode import SampleEncoder
from avalanche_exmask.data.image_text import BadInputError, HFImageTextDataset, ImageTextDataset, check_image_file
from avalanche_exmask.data.images import ImageLimits, UnusableImage, open_image

ENCODER = SampleEncoder.for_model("exmask-tiny")


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A 69-byte PNG whose header claims ``width x height`` pixels (one real pixel of data)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    struct.pack_into(">II", data, 16, width, height)  # IHDR width, height
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))  # IHDR CRC
    return bytes(data)


def huge_png(path: Path, side: int) -> Path:
    """A real ``side x side`` one-bit PNG: a few kilobytes on disk."""
    Image.new("1", (side, side)).save(path)
    return path


def truncated_jpeg(path: Path) -> Path:
    """A JPEG whose header is intact but whose pixel data stops half way."""
    write_jpeg(path, seed=7, size=(64, 48))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, Path]:
    return make_image_text_folder(tmp_path, {"a": 4, "b": 4})


def _caption(captions: Path, image: str) -> None:
    with open(captions, "a", encoding="utf-8") as file:
        file.write(json.dumps({"image": image, "text": f"a picture {image}"}) + "\n")


def _raises_then_skips(root: Path, captions: Path, message: str, n_skipped: int = 1):
    with pytest.raises(BadInputError, match=message):
        image_text_folder(root, captions, n_experiences=2, encoder=ENCODER)
    benchmark = image_text_folder(root, captions, n_experiences=2, encoder=ENCODER, on_error="skip")
    assert len(benchmark.skipped) == n_skipped, benchmark.skipped
    assert any(re.search(message, f"{where}: {reason}") for where, reason in benchmark.skipped)
    assert benchmark.class_names == ["a", "b"]
    return benchmark


# ------------------------------------------------------------------------------------ images
def test_header_bomb_is_named_at_build_and_at_load(folder):
    root, captions = folder
    (root / "a" / "bomb.png").write_bytes(bomb_png())
    _caption(captions, "a/bomb.png")
    _raises_then_skips(root, captions, r"bomb\.png: refused as a possible decompression bomb")
    dataset = ImageTextDataset([root / "a" / "bomb.png"], ["text"], [0], encoder=ENCODER)  # not verified
    with pytest.raises(BadInputError, match=r"bomb\.png: refused as a possible decompression bomb"):
        dataset[0]


def test_real_huge_images_are_refused_from_the_header_without_decoding(tmp_path, monkeypatch):
    very_large = huge_png(tmp_path / "12000.png", 12000)  # 144 MP: PIL itself flags it
    large = huge_png(tmp_path / "7000.png", 7000)  # 49 MP: above the default cap of 40 MP

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert "decompression bomb" in check_image_file(very_large)
    assert "7000x7000 = 49000000 pixels exceeds the limit of 40000000" in check_image_file(large)
    assert "exceeds the limit of 1000" in check_image_file(tmp_path / "7000.png", limits=ImageLimits(max_pixels=1000))
    monkeypatch.undo()
    assert check_image_file(large, limits=ImageLimits(max_pixels=None)) is None


def test_huge_image_in_a_benchmark_is_named_or_skipped(folder):
    root, captions = folder
    huge_png(root / "b" / "huge.png", 12000)
    _caption(captions, "b/huge.png")
    _raises_then_skips(root, captions, r"huge\.png: refused as a possible decompression bomb")


def test_truncated_pixels_are_caught_at_build_not_in_training(folder):
    root, captions = folder
    truncated_jpeg(root / "a" / "a_1.jpg")
    _raises_then_skips(root, captions, r"a_1\.jpg: pixel data does not decode \(image file is truncated")
    unverified = image_text_folder(root, captions, n_experiences=1, encoder=ENCODER, verify_images=False)
    assert unverified.skipped == []  # only a full decode finds it


def test_tiny_images_are_refused_not_upscaled(folder):
    root, captions = folder
    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / "a" / "dot.png")
    _caption(captions, "a/dot.png")
    _raises_then_skips(root, captions, r"dot\.png: image of 1x1 pixels is smaller than 8 pixels on a side")
    assert check_image_file(root / "a" / "dot.png", limits=ImageLimits(min_side=1)) is None


def test_open_image_names_no_file_and_passes_body_errors_through(tmp_path):
    with pytest.raises(UnusableImage, match="^not a readable image"):
        with open_image(io.BytesIO(b"not an image")):
            pass
    with pytest.raises(KeyError):
        with open_image(write_jpeg(tmp_path / "x.jpg", 0)):
            raise KeyError("from the body")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.sampled_from(["JPEG", "PNG"]),
    cut=st.integers(min_value=0, max_value=400),
    flips=st.lists(st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(1, 255)), max_size=4),
)
def test_randomly_corrupted_files_are_either_refused_or_load(tmp_path, fmt, cut, flips):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 120, 230)).save(buffer, format=fmt)
    data = bytearray(buffer.getvalue())
    for position, mask in flips:
        data[position % len(data)] ^= mask
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(bytes(data[: max(len(data) - cut, 0)]))
    problem = check_image_file(path)
    if problem is None:  # a verified image always loads
        sample, _ = ImageTextDataset([path], ["t"], [0], encoder=ENCODER)[0]
        assert sample.image.shape == (3, 64, 64)
    else:
        assert isinstance(problem, str) and problem


# ------------------------------------------------------------------------------------ files
def test_captions_jsonl_that_is_not_utf8_names_file_and_line(folder):
    root, captions = folder
    lines = captions.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"a photo", b"a ph\xe9to")  # Latin-1, not UTF-8
    captions.write_bytes(b"\n".join(lines))
    benchmark = _raises_then_skips(root, captions, r"captions\.jsonl:3: not UTF-8 text \(byte 0xe9", n_skipped=2)
    assert any("image without caption" in reason for _, reason in benchmark.skipped)  # its image, then


def test_captions_json_that_is_not_utf8_names_file_and_line(tmp_path):
    root, captions = make_image_text_folder(tmp_path, {"a": 3, "b": 3}, captions_name="captions.json")
    captions.write_bytes(captions.read_bytes().replace(b"number 2", b"n\xfcmber 2", 1))
    for on_error in ("raise", "skip"):
        with pytest.raises(BadInputError, match=r"captions\.json:1: not UTF-8 text \(byte 0xfc"):
            image_text_folder(root, captions, n_experiences=1, encoder=ENCODER, on_error=on_error)


def test_file_list_that_is_not_utf8_names_file_and_line(tmp_path):
    (tmp_path / "train.txt").write_bytes(b"a/a_0.jpg\na/\xff.jpg\n")
    with pytest.raises(BadInputError, match=r"train\.txt:2: not UTF-8 text"):
        read_file_list(tmp_path / "train.txt")


def test_duplicate_keys_in_a_json_object_are_named(tmp_path):
    root, captions = make_image_text_folder(tmp_path, {"a": 3, "b": 3}, captions_name="captions.json")
    text = captions.read_text(encoding="utf-8")
    captions.write_text(text[:-1] + ', "a/a_1.jpg": "a later caption"}', encoding="utf-8")
    benchmark = _raises_then_skips(root, captions, r"captions\.json: key 'a/a_1\.jpg': duplicate key")
    assert benchmark.split_sizes == {"train": 4, "test": 2}  # the first caption was kept


@pytest.mark.parametrize("where", ["root", "class"])
def test_symlink_loops_are_named_or_skipped(folder, where):
    root, captions = folder
    loop = root / "loop" if where == "root" else root / "b" / "loop.jpg"
    os.symlink(loop.name, loop)  # points at itself
    _raises_then_skips(root, captions, rf"{re.escape(str(loop))}: cannot be read \(Too many levels of symbolic links")


def test_image_root_that_is_a_symlink_loop_is_named(tmp_path):
    root = tmp_path / "images"
    os.symlink("images", root)
    write_captions(tmp_path / "captions.jsonl", [("a/x.jpg", "text")])
    with pytest.raises(BadInputError, match=r"images: image root is a symbolic link that does not resolve"):
        image_text_folder(root, tmp_path / "captions.jsonl", n_experiences=1, encoder=ENCODER, on_error="skip")


# ------------------------------------------------------------------------------- Hugging Face
def _png_bytes(size=(20, 16), colour=(0, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _hf_dataset(bad: bytes) -> Dataset:
    images = [{"bytes": _png_bytes(colour=(40 * c, 10 * i, 0)), "path": None} for c in range(2) for i in range(4)]
    images[5] = {"bytes": bad, "path": None}
    dataset = Dataset.from_dict(
        {"image": images, "text": [f"item {i}" for i in range(8)], "label": [c for c in range(2) for _ in range(4)]}
    )
    return dataset.cast_column("image", ImageFeature()).cast_column("label", ClassLabel(names=["x", "y"]))


@pytest.mark.parametrize(
    "bad, message",
    [(bomb_png(), "refused as a possible decompression bomb"), (_png_bytes((1, 30)), "smaller than 8 pixels")],
    ids=["bomb", "tiny"],
)
def test_hf_images_are_checked_at_build_and_at_load(bad, message):
    dataset = _hf_dataset(bad)
    with pytest.raises(BadInputError, match=rf"row 5: .*{message}"):
        image_text_folder(dataset=dataset, n_experiences=1, encoder=ENCODER)
    benchmark = image_text_folder(dataset=dataset, n_experiences=1, encoder=ENCODER, on_error="skip")
    assert [where for where, _ in benchmark.skipped] == ["Hugging Face dataset (dataset), row 5"]
    items = HFImageTextDataset(dataset, [4, 5], [1, 1], encoder=ENCODER)
    assert items[0][0].image.shape == (3, 64, 64)
    with pytest.raises(BadInputError, match=rf"row 5 of the Hugging Face dataset: .*{message}"):
        items[1]
