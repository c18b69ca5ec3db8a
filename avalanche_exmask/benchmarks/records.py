"""Image-text pairs before any image is read: :class:`Records`, and how they are collected from disk.

On-disk layout of a folder of images per class::

    root/<class>/<file>          one folder per class, images inside (.jpg, .png, ...)
    captions.jsonl               {"image": "<class>/<file>", "text": "..."} per line
      or captions.json           {"<class>/<file>": "...", ...}

:func:`folder_records` collects the (image, caption, class) pairs of such a layout without
opening an image; :func:`check_images` then keeps the pairs whose image file is usable. Bad
input goes to an :class:`~avalanche_exmask.data.image_text.InputIssues`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Hashable, Mapping, NamedTuple, Sequence, Union

from avalanche_exmask.data.image_text import BadInputError, InputIssues, check_image_file

__all__ = [
    "PathLike",
    "IMAGE_EXTENSIONS",
    "Caption",
    "Records",
    "read_captions",
    "read_file_list",
    "list_class_images",
    "folder_records",
    "check_images",
]

PathLike = Union[str, os.PathLike]

#: File name endings (lower case) taken as images in class folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class Caption(NamedTuple):
    """A caption and where it was read (``file:line``), for error messages."""

    text: str
    where: str


@dataclass
class Records:
    """Image-text pairs before any image is read.

    :ivar sources: where each image is: a path relative to the data root (POSIX separators) or a
        row index of a Hugging Face dataset.
    :ivar texts: the text of each pair.
    :ivar classes: the class (folder name, class name or label value) of each pair.
    """

    sources: list = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    classes: list[Hashable] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sources)

    def append(self, source: Union[str, int], text: str, cls: Hashable) -> None:
        """Add one pair."""
        self.sources.append(source)
        self.texts.append(text)
        self.classes.append(cls)

    def select(self, indices: Sequence[int]) -> "Records":
        """The pairs at ``indices``, in that order."""
        return Records(
            [self.sources[i] for i in indices],
            [self.texts[i] for i in indices],
            [self.classes[i] for i in indices],
        )


def _normalise_key(key: str) -> str:
    return PurePosixPath(key.replace("\\", "/")).as_posix()


def read_captions(path: PathLike, *, issues: InputIssues) -> dict[str, Caption]:
    """Read a captions file: JSON Lines, or (for a ``.json`` file) one JSON object.

    JSON Lines: one object per line with string fields ``image`` (path relative to the image
    root, ``/``-separated) and ``text``; other fields (e.g. ``model``, ``prompt``) are ignored;
    blank lines are ignored. JSON: an object mapping image path to text.

    :param path: the captions file.
    :param issues: receives malformed lines and duplicate images (the first one is kept).
    :return: ``{image path: Caption}``; texts may be empty (:func:`folder_records` checks them).
    :raises FileNotFoundError: if ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"captions file not found: {path}")
    captions: dict[str, Caption] = {}

    def add(image: object, text: object, where: str) -> None:
        if not isinstance(image, str) or not image:
            issues.report(where, f"caption without an image path (got {image!r})")
        elif not isinstance(text, str):
            issues.report(where, f"text of {image} is not a string (got {type(text).__name__})")
        elif _normalise_key(image) in captions:
            first = captions[_normalise_key(image)].where
            issues.report(where, f"second caption for image {image} (first at {first})")
        else:
            captions[_normalise_key(image)] = Caption(text, where)

    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise BadInputError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from error
        if not isinstance(mapping, dict):
            raise BadInputError(f"{path}: expected a JSON object mapping image path to text")
        for image, text in mapping.items():
            add(image, text, f"{path}: key {image!r}")
        return captions
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                issues.report(where, f"not valid JSON ({error.msg})")
                continue
            if not isinstance(record, dict):
                issues.report(where, 'expected an object {"image": ..., "text": ...}')
                continue
            add(record.get("image"), record.get("text"), where)
    return captions


def read_file_list(files: Union[PathLike, Sequence[str]]) -> list[str]:
    """Relative image paths from a sequence, or from a text file with one path per line."""
    if isinstance(files, (str, os.PathLike)):
        with open(files, encoding="utf-8") as lines:
            return [_normalise_key(line.strip()) for line in lines if line.strip()]
    return [_normalise_key(str(f)) for f in files]


def list_class_images(root: PathLike, *, issues: InputIssues) -> dict[str, list[str]]:
    """Image files of every class folder under ``root``, without opening them.

    Hidden entries and files whose ending is not in :data:`IMAGE_EXTENSIONS` are ignored.

    :return: ``{class folder name: sorted paths relative to root}`` for the folders, in sorted
        order, that hold at least one image; an empty class folder goes to ``issues``.
    :raises FileNotFoundError: if ``root`` is not a folder.
    :raises BadInputError: if ``root`` has no class folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root folder not found: {root}")
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not folders:
        raise BadInputError(f"{root}: no class folders (expected root/<class>/<image file>)")
    images: dict[str, list[str]] = {}
    for folder in folders:
        files = sorted(
            f"{folder}/{e.name}"
            for e in os.scandir(root / folder)
            if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if files:
            images[folder] = files
        else:
            issues.report(str(root / folder), "class folder without images")
    return images


def folder_records(
    root: PathLike, captions: Union[PathLike, Mapping[str, str]], *, issues: InputIssues
) -> Records:
    """Every (image, caption, class folder) pair of a ``root/<class>/<file>`` layout.

    :param root: the image root.
    :param captions: a captions file (see :func:`read_captions`) or a mapping image path -> text.
    :param issues: receives images without a caption, captions whose image is not on disk,
        empty texts and empty class folders.
    :return: records with ``sources`` relative to ``root``, sorted by class then file name.
    """
    class_images = list_class_images(root, issues=issues)
    if isinstance(captions, Mapping):
        caption_of = {_normalise_key(image): Caption(text, f"captions[{image!r}]") for image, text in captions.items()}
    else:
        caption_of = read_captions(captions, issues=issues)
    records = Records()
    on_disk = set()
    for cls, files in class_images.items():
        for relative in files:
            on_disk.add(relative)
            caption = caption_of.get(relative)
            if caption is None:
                issues.report(str(Path(root) / relative), "image without caption")
            elif not isinstance(caption.text, str) or not caption.text.strip():
                issues.report(caption.where, f"empty text for image {relative}")
            else:
                records.append(relative, caption.text, cls)
    for image, caption in caption_of.items():
        if image not in on_disk:
            issues.report(caption.where, f"captioned image {image} not found under {root}")
    return records


def check_images(
    records: Records, *, root: PathLike, issues: InputIssues, read_header: bool = True
) -> Records:
    """The records whose image file exists, is not empty and (optionally) has a readable header.

    Reading headers costs one file open per image (see ``benchmarks/build_time.py``); pixel data
    is not decoded, so a truncated file is only caught when its item is loaded.
    """
    good = []
    for index, source in enumerate(records.sources):
        path = Path(root) / source
        problem = check_image_file(path, read_header=read_header)
        if problem is None:
            good.append(index)
        else:
            issues.report(str(path), problem)
    return records.select(good)
