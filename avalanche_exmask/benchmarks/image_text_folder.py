"""The generic image-text benchmark generator, and the stages the specific generators reuse.

On-disk layout::

    root/<class>/<file>          one folder per class, images inside (.jpg, .png, ...)
    captions.jsonl               {"image": "<class>/<file>", "text": "..."} per line
      or captions.json           {"<class>/<file>": "...", ...}

A benchmark is built in stages, each a public function here: collect :class:`Records` (image,
text, class of every pair; no image is read), split them (:func:`stratified_split`, explicit
file lists :func:`split_by_file_lists`, or a generator's own fixed split), check the images
(:func:`check_images`) and assemble the Avalanche benchmark (:func:`build_benchmark`), whose
datasets read each image only when it is indexed. :func:`from_hf_dataset` does the same for a
Hugging Face ``datasets.Dataset`` and is what every generator's ``dataset=`` argument uses.

Bad input is handled by :class:`~avalanche_exmask.data.image_text.InputIssues`: by default the
first problem raises an error naming the file and line; ``on_error="skip"`` skips, logs and
reports every problem in ``benchmark.skipped``.
"""
from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Hashable, Mapping, NamedTuple, Optional, Sequence, Union

from avalanche.benchmarks.scenarios.generic_scenario import CLScenario
from torch.utils.data import Dataset

from avalanche_exmask.benchmarks.common import build_class_incremental
from avalanche_exmask.data.encode import SampleEncoder
from avalanche_exmask.data.image_text import (
    BadInputError,
    HFImageTextDataset,
    ImageTextDataset,
    InputIssues,
    OnError,
    check_image_file,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "Caption",
    "Records",
    "read_captions",
    "read_file_list",
    "list_class_images",
    "folder_records",
    "stratified_split",
    "split_by_file_lists",
    "carve_validation",
    "check_images",
    "build_benchmark",
    "folder_dataset_maker",
    "from_hf_dataset",
    "image_text_folder",
]

logger = logging.getLogger(__name__)

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


def stratified_split(
    classes: Sequence[Hashable], *, fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Split indices per class into a kept part and a held-out ``fraction``.

    Each class holds out ``round(fraction * n)`` of its ``n`` items, at least one and at most
    ``n - 1`` (a class with one item keeps it). The draw uses a private generator seeded by
    ``(seed, class)``, so a class's split depends only on its own items (in the order given) and
    the global RNG is untouched.

    :return: ``(kept indices, held-out indices)``, each sorted.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1); got {fraction}")
    by_class: dict[Hashable, list[int]] = {}
    for index, cls in enumerate(classes):
        by_class.setdefault(cls, []).append(index)
    kept: list[int] = []
    held: list[int] = []
    for cls, indices in by_class.items():
        n_held = min(max(round(fraction * len(indices)), 1), len(indices) - 1)
        chosen = set(random.Random(f"{seed}/{cls}").sample(indices, n_held))
        held.extend(i for i in indices if i in chosen)
        kept.extend(i for i in indices if i not in chosen)
    return sorted(kept), sorted(held)


def split_by_file_lists(
    records: Records,
    *,
    train_files: Union[PathLike, Sequence[str]],
    test_files: Union[PathLike, Sequence[str]],
    issues: InputIssues,
) -> dict[str, Records]:
    """Split file records by explicit lists of relative image paths.

    :param train_files: paths relative to the image root, or a text file listing them.
    :param test_files: same for the test split.
    :param issues: receives listed files that are not usable records (missing on disk or
        without caption).
    :raises BadInputError: if a file is in both lists.
    :return: ``{"train": ..., "test": ...}``; usable records in neither list are left out and
        their number is logged.
    """
    position = {source: i for i, source in enumerate(records.sources)}
    split: dict[str, Records] = {}
    listed: set[str] = set()
    for name, files in (("train", train_files), ("test", test_files)):
        paths = read_file_list(files)
        both = listed.intersection(paths)
        if both:
            raise BadInputError(f"{sorted(both)[0]}: listed in both train_files and test_files")
        listed.update(paths)
        indices = []
        for path in paths:
            if path in position:
                indices.append(position[path])
            else:
                issues.report(path, f"listed in {name}_files but not an image with a caption")
        split[name] = records.select(indices)
    unlisted = len(records) - sum(len(r) for r in split.values())
    if unlisted:
        logger.info("%d image-text pairs are in neither train_files nor test_files; left out", unlisted)
    return split


def carve_validation(splits: dict[str, Records], *, fraction: float, seed: int) -> dict[str, Records]:
    """Move a seeded, stratified ``fraction`` of each train class into a ``"valid"`` split."""
    train = splits["train"]
    kept, held = stratified_split(train.classes, fraction=fraction, seed=seed)
    return {**splits, "train": train.select(kept), "valid": train.select(held)}


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


def _drop_incomplete_classes(
    splits: dict[str, Records], class_keys: Sequence[Hashable], issues: InputIssues
) -> list[Hashable]:
    present = {name: set(records.classes) for name, records in splits.items()}
    complete = []
    for cls in class_keys:
        empty = [name for name in splits if cls not in present[name]]
        if empty:
            issues.report(f"class {cls!r}", f"no samples in split(s) {', '.join(empty)}")
        else:
            complete.append(cls)
    return complete


def build_benchmark(
    splits: dict[str, Records],
    *,
    make_dataset: Callable[[str, Records, list[int]], Dataset],
    encoder: SampleEncoder,
    issues: InputIssues,
    class_keys: Optional[Sequence[Hashable]] = None,
    class_names: Optional[Sequence[str]] = None,
    n_experiences: Optional[int] = None,
    classes_per_experience: Optional[Union[int, Sequence[int]]] = None,
    seed: Optional[int] = 0,
    class_order: Optional[Sequence[int]] = None,
) -> CLScenario:
    """Assemble a class-incremental Avalanche benchmark from split records.

    :param splits: ``"train"`` and ``"test"`` records, optionally ``"valid"``.
    :param make_dataset: ``(split name, records, labels) -> Dataset`` of lazily loaded
        ``(MultimodalSample, label)`` items.
    :param encoder: used to count texts longer than the context length.
    :param issues: receives classes missing from a split; its skipped items become
        ``benchmark.skipped``.
    :param class_keys: the classes in label order (label ``i`` is ``class_keys[i]``); default:
        the sorted classes found in the splits. Classes left without samples in some split are
        reported and, when skipping, removed (labels stay consecutive).
    :param class_names: a readable name per entry of ``class_keys``; default ``str(key)``.
    :param n_experiences: see :func:`~avalanche_exmask.benchmarks.common.build_class_incremental`.
    :param classes_per_experience: idem.
    :param seed: seed of the class order.
    :param class_order: a fixed class order (labels).
    :return: a ``CLScenario`` with ``train_stream``, ``test_stream`` (and ``valid_stream``), and
        attributes ``class_names``, ``class_keys`` (the class key of each label: folder name,
        label name or value), ``class_order``, ``classes_per_experience``, ``skipped``
        (list of ``(where, reason)``), ``n_truncated`` (texts longer than the context length,
        truncated when encoded) and ``split_sizes`` (``{split: number of pairs}``).
    """
    seen = set().union(*(records.classes for records in splits.values()))
    keys = list(class_keys) if class_keys is not None else sorted(seen)
    names = list(class_names) if class_names is not None else [str(k) for k in keys]
    if len(names) != len(keys):
        raise ValueError(f"got {len(names)} class names for {len(keys)} classes")
    name_of = dict(zip(keys, names))
    complete = _drop_incomplete_classes(splits, keys, issues)
    if not complete:
        raise BadInputError("no class has samples in every split; nothing to build a benchmark from")
    label_of = {cls: label for label, cls in enumerate(complete)}
    splits = {
        name: records.select([i for i, c in enumerate(records.classes) if c in label_of])
        for name, records in splits.items()
    }
    targets = {name: [label_of[c] for c in records.classes] for name, records in splits.items()}
    datasets = {name: make_dataset(name, records, targets[name]) for name, records in splits.items()}
    benchmark = build_class_incremental(
        datasets["train"],
        datasets["test"],
        targets["train"],
        targets["test"],
        valid=datasets.get("valid"),
        valid_targets=targets.get("valid"),
        n_experiences=n_experiences,
        classes_per_experience=classes_per_experience,
        seed=seed,
        class_order=class_order,
        class_names=[name_of[c] for c in complete],
    )
    benchmark.class_keys = complete
    benchmark.skipped = list(issues.skipped)
    benchmark.n_truncated = sum(encoder.is_truncated(t) for records in splits.values() for t in records.texts)
    benchmark.split_sizes = {name: len(records) for name, records in splits.items()}
    issues.log_summary("benchmark")
    if benchmark.n_truncated:
        logger.info(
            "%d of %d texts exceed the context length of %d tokens and are truncated",
            benchmark.n_truncated,
            sum(benchmark.split_sizes.values()),
            encoder.context_length,
        )
    return benchmark


def _hf_records(dataset, *, issues: InputIssues, image_column: str, text_column: str, label_column: str, split: str):
    """Records (row indices) of one HF split, plus the label feature's class names if any."""
    from datasets import ClassLabel, Image

    missing = {image_column, text_column, label_column} - set(dataset.column_names)
    if missing:
        raise BadInputError(
            f"Hugging Face dataset ({split}): missing column(s) {sorted(missing)}; has {dataset.column_names}"
        )
    feature = dataset.features[label_column]
    label_names = list(feature.names) if isinstance(feature, ClassLabel) else None
    texts = list(dataset[text_column])
    labels = list(dataset[label_column])
    images = dataset.select_columns([image_column]).cast_column(image_column, Image(decode=False))
    records = Records()
    row = 0
    for batch in images.iter(batch_size=1000):
        for image in batch[image_column]:
            text, label = texts[row], labels[row]
            where = f"Hugging Face dataset ({split}), row {row}"
            if image is None or (image.get("bytes") is None and not image.get("path")):
                issues.report(where, "no image")
            elif not isinstance(text, str) or not text.strip():
                issues.report(where, "empty text")
            elif label is None:
                issues.report(where, "no label")
            else:
                records.append(row, text, label_names[label] if label_names else label)
            row += 1
    return records, label_names


def from_hf_dataset(
    dataset,
    *,
    encoder: SampleEncoder,
    n_experiences: Optional[int] = None,
    classes_per_experience: Optional[Union[int, Sequence[int]]] = None,
    seed: int = 0,
    class_order: Optional[Sequence[int]] = None,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.0,
    on_error: OnError = "raise",
    image_column: str = "image",
    text_column: str = "text",
    label_column: str = "label",
    rename_class: Optional[Callable[[str], str]] = None,
) -> CLScenario:
    """A class-incremental benchmark from a Hugging Face ``datasets.Dataset`` (or ``DatasetDict``).

    The generators' ``dataset=`` argument. A ``DatasetDict`` with ``"train"`` and ``"test"`` keeps
    that split; a single ``Dataset`` is split per class by :func:`stratified_split` with
    ``test_fraction``. Labels may be a ``ClassLabel`` (its names become the class names),
    integers or strings. Images stay in the memory-mapped Arrow table until indexed.

    :param dataset: e.g. from ``datasets.load_from_disk``; columns ``image`` (``Image`` feature),
        ``text`` and ``label`` by default.
    :param encoder: encodes each item.
    :param validation_fraction: if positive, a stratified part of train becomes ``valid_stream``.
    :param rename_class: maps a class (label name or value, as a string) to its readable name.
    :return: see :func:`build_benchmark`.
    """
    issues = InputIssues(on_error)
    columns = dict(image_column=image_column, text_column=text_column, label_column=label_column)
    if hasattr(dataset, "keys"):
        if not {"train", "test"} <= set(dataset.keys()):
            raise BadInputError(f"Hugging Face DatasetDict needs 'train' and 'test' splits; has {list(dataset.keys())}")
        parts = {name: dataset[name] for name in ("train", "test")}
        splits, label_names = {}, None
        for name, part in parts.items():
            splits[name], label_names = _hf_records(part, issues=issues, split=name, **columns)
    else:
        records, label_names = _hf_records(dataset, issues=issues, split="dataset", **columns)
        train, test = stratified_split(records.classes, fraction=test_fraction, seed=seed)
        parts = {"train": dataset, "test": dataset}
        splits = {"train": records.select(train), "test": records.select(test)}
    if validation_fraction > 0:
        splits = carve_validation(splits, fraction=validation_fraction, seed=seed)
        parts["valid"] = parts["train"]
    seen = set().union(*(records.classes for records in splits.values()))
    keys = [k for k in label_names if k in seen] if label_names is not None else sorted(seen)
    rename = rename_class or str
    return build_benchmark(
        splits,
        make_dataset=lambda name, records, labels: HFImageTextDataset(
            parts[name], records.sources, labels, encoder=encoder, image_column=image_column, text_column=text_column
        ),
        encoder=encoder,
        issues=issues,
        class_keys=keys,
        class_names=[rename(str(k)) for k in keys],
        n_experiences=n_experiences,
        classes_per_experience=classes_per_experience,
        seed=seed,
        class_order=class_order,
    )


def image_text_folder(
    root: Optional[PathLike] = None,
    captions: Optional[Union[PathLike, Mapping[str, str]]] = None,
    *,
    n_experiences: Optional[int] = None,
    classes_per_experience: Optional[Union[int, Sequence[int]]] = None,
    seed: int = 0,
    class_order: Optional[Sequence[int]] = None,
    model_name: str = "exmask-tiny",
    encoder: Optional[SampleEncoder] = None,
    train_files: Optional[Union[PathLike, Sequence[str]]] = None,
    test_files: Optional[Union[PathLike, Sequence[str]]] = None,
    test_fraction: float = 0.2,
    verify_images: bool = True,
    on_error: OnError = "raise",
    dataset=None,
) -> CLScenario:
    """A class-incremental benchmark from a folder of images per class and their captions.

    Items are ``(MultimodalSample, label)`` (``image`` ``uint8 [3, S, S]``, ``input_ids`` ``long
    [T]``, ``S`` and ``T`` from the model), read from disk when indexed. Labels follow the
    sorted class folder names; the class order over experiences is drawn from ``seed`` or given
    by ``class_order``. Uneven splits are allowed and no class is dropped.

    :param root: the image root, holding ``<class>/<file>``.
    :param captions: a captions file (JSON Lines ``{"image": "<class>/<file>", "text": ...}``
        or a ``.json`` object ``{path: text}``) or a mapping ``{path: text}``.
    :param n_experiences: number of experiences.
    :param classes_per_experience: instead of ``n_experiences``: an int or a list of counts.
    :param seed: seed of the class order and of the train/test split.
    :param class_order: a fixed order of the labels.
    :param model_name: open_clip model whose resolution and tokenizer encode the items.
    :param encoder: an explicit encoder (overrides ``model_name``).
    :param train_files: relative image paths of the train split (a sequence, or a text file
        with one path per line); give ``test_files`` too.
    :param test_files: relative image paths of the test split.
    :param test_fraction: without file lists, the per-class fraction held out for test
        (seeded, stratified).
    :param verify_images: read each image's header when building (one file open per image);
        missing and empty files are always caught.
    :param on_error: ``"raise"`` (default): the first bad input raises
        :class:`~avalanche_exmask.data.image_text.BadInputError` naming the file (and line);
        ``"skip"``: bad items are left out, logged and listed in ``benchmark.skipped``.
    :param dataset: a Hugging Face ``Dataset``/``DatasetDict`` with ``image``, ``text`` and
        ``label`` columns, used instead of ``root`` and ``captions`` (see :func:`from_hf_dataset`).
    :return: see :func:`build_benchmark`.
    """
    encoder = encoder or SampleEncoder.for_model(model_name)
    split_args = dict(n_experiences=n_experiences, classes_per_experience=classes_per_experience, seed=seed)
    if dataset is not None:
        return from_hf_dataset(
            dataset, encoder=encoder, class_order=class_order, test_fraction=test_fraction, on_error=on_error, **split_args
        )
    if root is None or captions is None:
        raise ValueError("give `root` and `captions`, or a Hugging Face `dataset`")
    if (train_files is None) != (test_files is None):
        raise ValueError("give both `train_files` and `test_files`, or neither")
    issues = InputIssues(on_error)
    records = folder_records(root, captions, issues=issues)
    if train_files is not None:
        splits = split_by_file_lists(records, train_files=train_files, test_files=test_files, issues=issues)
    else:
        train, test = stratified_split(records.classes, fraction=test_fraction, seed=seed)
        splits = {"train": records.select(train), "test": records.select(test)}
    return build_benchmark(
        {name: check_images(r, root=root, issues=issues, read_header=verify_images) for name, r in splits.items()},
        make_dataset=folder_dataset_maker(root, encoder),
        encoder=encoder,
        issues=issues,
        class_order=class_order,
        **split_args,
    )


def folder_dataset_maker(root: PathLike, encoder: SampleEncoder) -> Callable[[str, Records, list[int]], Dataset]:
    """``make_dataset`` for :func:`build_benchmark`, for records whose sources are paths relative to ``root``."""

    def make(_: str, records: Records, labels: list[int]) -> ImageTextDataset:
        return ImageTextDataset(
            [os.path.join(root, source) for source in records.sources], records.texts, labels, encoder=encoder
        )

    return make
