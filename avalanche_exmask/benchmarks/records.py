"""Image-text pairs before any image is read: :class:`Records`, and how they are collected from disk.

On-disk layout of a folder of images per class::

    root/<class>/<file>          one folder per class, images inside (.jpg, .png, ...)
    captions.jsonl               {"image": "<class>/<file>", "text": "..."} per line
      or captions.json           {"<class>/<file>": "...", ...}

:func:`folder_records` collects the (image, caption, class) pairs of such a layout without
opening an image; :func:`check_images` then keeps the pairs whose image file is usable. Bad
input goes to an :class:`~avalanche_exmask.data.image_text.InputIssues`: text files that are not
UTF-8, duplicate keys of a JSON object, entries that cannot be read (a symbolic link that loops)
are named with their file (and line or key), never left to a bare ``UnicodeDecodeError`` or ``OSError``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from avalanche_exmask.data.image_text import BadInputError, InputIssues, check_image_file
from avalanche_exmask.data.images import ImageLimits

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

PathLike = str | os.PathLike

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

    def append(self, source: str | int, text: str, cls: Hashable) -> None:
        """Add one pair."""
        self.sources.append(source)
        self.texts.append(text)
        self.classes.append(cls)

    def select(self, indices: Sequence[int]) -> Records:
        """The pairs at ``indices``, in that order."""
        return Records(
            [self.sources[i] for i in indices],
            [self.texts[i] for i in indices],
            [self.classes[i] for i in indices],
        )


def _normalise_key(key: str) -> str:
    return PurePosixPath(key.replace("\\", "/")).as_posix()


class _JsonObject(dict):
    """A JSON object that remembers the keys it held more than once (their first value is kept).

    :ivar duplicates: the repeated keys, in file order.
    """

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__()
        self.duplicates: list[str] = []
        for key, value in pairs:
            if key in self:
                self.duplicates.append(key)
            else:
                self[key] = value


def _not_utf8(error: UnicodeDecodeError) -> str:
    """The reason for ``error``, naming the first byte that is not UTF-8."""
    return f"not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}: {error.reason})"


def read_captions(path: PathLike, *, issues: InputIssues) -> dict[str, Caption]:
    """Read a captions file: JSON Lines, or (for a ``.json`` file) one JSON object.

    JSON Lines: one object per line with string fields ``image`` (path relative to the image
    root, ``/``-separated) and ``text``; other fields (e.g. ``model``, ``prompt``) are ignored;
    blank lines are ignored. JSON: an object mapping image path to text. Both are UTF-8.

    :param path: the captions file.
    :param issues: receives malformed lines, lines that are not UTF-8, duplicate keys of the JSON
        object and duplicate images (the first one is kept).
    :return: ``{image path: Caption}``; texts may be empty (:func:`folder_records` checks them).
    :raises FileNotFoundError: if ``path`` does not exist.
    :raises BadInputError: if a ``.json`` file is not UTF-8, not valid JSON or not an object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"captions file not found: {path}")
    captions: dict[str, Caption] = {}

    def add(image: object, text: object, where: str) -> None:
        if not isinstance(image, str) or not image:
            issues.report(where, f"caption without an image path (got {image!r})")
        elif not isinstance(text, str):
            kind = "object" if isinstance(text, dict) else type(text).__name__
            issues.report(where, f"text of {image} is not a string (got {kind})")
        elif _normalise_key(image) in captions:
            first = captions[_normalise_key(image)].where
            issues.report(where, f"second caption for image {image} (first at {first})")
        else:
            captions[_normalise_key(image)] = Caption(text, where)

    if path.suffix.lower() == ".json":
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line_number = data.count(b"\n", 0, error.start) + 1
            raise BadInputError(f"{path}:{line_number}: {_not_utf8(error)}") from error
        try:
            mapping = json.loads(text, object_pairs_hook=_JsonObject)
        except json.JSONDecodeError as error:
            raise BadInputError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from error
        # Every JSON object is built by the hook, so this is the test for a top-level object.
        if not isinstance(mapping, _JsonObject):
            raise BadInputError(f"{path}: expected a JSON object mapping image path to text")
        for key in mapping.duplicates:
            issues.report(f"{path}: key {key!r}", "duplicate key in the JSON object (its first value is kept)")
        for image, text in mapping.items():
            add(image, text, f"{path}: key {image!r}")
        return captions
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                issues.report(where, _not_utf8(error))
                continue
            if not line.strip():
                continue
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


def read_file_list(files: PathLike | Sequence[str]) -> list[str]:
    """Relative image paths from a sequence, or from a UTF-8 text file with one path per line.

    :raises BadInputError: naming the file and line of a line that is not UTF-8.
    """
    if not isinstance(files, (str, os.PathLike)):
        return [_normalise_key(str(f)) for f in files]
    paths = []
    with open(files, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as error:
                raise BadInputError(f"{files}:{number}: {_not_utf8(error)}") from error
            if line:
                paths.append(_normalise_key(line))
    return paths


def _scan(folder: Path, *, want: Callable[[os.DirEntry], bool], issues: InputIssues) -> list[os.DirEntry]:
    """The visible entries of ``folder`` that ``want`` accepts.

    ``want`` may look at an entry's type; an entry for which that raises ``OSError`` (a symbolic
    link that loops, ...) goes to ``issues``, named by its path.

    :raises OSError: if ``folder`` cannot be listed.
    """
    entries = []
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        try:
            if want(entry):
                entries.append(entry)
        except OSError as error:
            issues.report(entry.path, f"cannot be read ({error.strerror or error})")
    return entries


def _is_image_file(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a file named like an image (the name is tested first)."""
    return entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file()


def list_class_images(root: PathLike, *, issues: InputIssues) -> dict[str, list[str]]:
    """Image files of every class folder under ``root``, without opening them.

    Hidden entries and files whose ending is not in :data:`IMAGE_EXTENSIONS` are ignored; symbolic
    links are followed one level (a linked class folder or image counts), not searched further.

    :return: ``{class folder name: sorted paths relative to root}`` for the folders, in sorted
        order, that hold at least one image; an empty class folder, a class folder that cannot be
        listed and an entry that cannot be read (a symbolic link that loops) go to ``issues``.
    :raises FileNotFoundError: if ``root`` is not a folder.
    :raises BadInputError: if ``root`` cannot be listed or has no class folder.
    """
    root = Path(root)
    if not root.is_dir():
        if root.is_symlink():
            raise BadInputError(f"{root}: image root is a symbolic link that does not resolve (broken, or a loop)")
        raise FileNotFoundError(f"image root folder not found: {root}")
    try:
        folders = sorted(e.name for e in _scan(root, want=os.DirEntry.is_dir, issues=issues))
    except OSError as error:
        raise BadInputError(f"{root}: cannot list the image root ({error.strerror or error})") from error
    if not folders:
        raise BadInputError(f"{root}: no class folders (expected root/<class>/<image file>)")
    images: dict[str, list[str]] = {}
    for folder in folders:
        try:
            entries = _scan(root / folder, want=_is_image_file, issues=issues)
        except OSError as error:
            issues.report(str(root / folder), f"class folder cannot be listed ({error.strerror or error})")
            continue
        files = sorted(f"{folder}/{e.name}" for e in entries)
        if files:
            images[folder] = files
        else:
            issues.report(str(root / folder), "class folder without images")
    return images


def folder_records(
    root: PathLike, captions: PathLike | Mapping[str, str], *, issues: InputIssues
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
    records: Records, *, root: PathLike, issues: InputIssues, verify: bool = True, limits: ImageLimits = ImageLimits()
) -> Records:
    """The records whose image file exists, is not empty and (``verify``) is a usable image.

    :param verify: open every image, check its size against ``limits`` from the header and decode
        all of its pixels (see :func:`~avalanche_exmask.data.image_text.check_image_file`), so that
        no bad image is left for training to find; this costs one full decode per image (see
        ``benchmarks/build_time.py``).
    :param limits: the image sizes allowed.
    """
    good = []
    for index, source in enumerate(records.sources):
        path = Path(root) / source
        problem = check_image_file(path, verify=verify, limits=limits)
        if problem is None:
            good.append(index)
        else:
            issues.report(str(path), problem)
    return records.select(good)
