"""Benchmarks from a Hugging Face ``datasets.Dataset``: what every generator's ``dataset=`` uses.

Rows become :class:`~avalanche_exmask.benchmarks.records.Records` whose sources are row indices;
images stay in the memory-mapped Arrow table until their item is indexed (with ``verify_images``,
each is decoded once while building, to leave out the unusable ones before training). ``datasets``
is imported only when a dataset is read.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from avalanche.benchmarks.scenarios.generic_scenario import CLScenario

from avalanche_exmask.benchmarks.assemble import build_benchmark
from avalanche_exmask.benchmarks.records import Records
from avalanche_exmask.benchmarks.splits import carve_validation, stratified_split
from avalanche_exmask.data.encode import SampleEncoder
from avalanche_exmask.data.image_text import BadInputError, HFImageTextDataset, InputIssues, OnError, hf_image_source
from avalanche_exmask.data.images import ImageLimits, UnusableImage, open_image

__all__ = ["from_hf_dataset"]


def _image_problem(value: dict | None, *, verify: bool, limits: ImageLimits) -> str | None:
    """What is wrong with one undecoded image value (``{"bytes", "path"}``), or ``None``.

    :param verify: open it, check its size against ``limits`` and decode all of its pixels;
        otherwise only an absent image is a problem.
    """
    try:
        source = hf_image_source(value)
        if verify:
            with open_image(source, limits=limits, decode=True):
                pass
    except UnusableImage as error:
        return str(error)
    return None


def _hf_records(
    dataset,
    *,
    issues: InputIssues,
    image_column: str,
    text_column: str,
    label_column: str,
    split: str,
    verify: bool,
    limits: ImageLimits,
) -> tuple[Records, list[str] | None]:
    """Records of one Hugging Face split, plus the label feature's class names if any.

    :param dataset: a ``datasets.Dataset``.
    :param issues: receives rows without image, text or label, and (``verify``) rows whose image
        is unusable (named by ``split`` and row).
    :param split: the split's name in messages.
    :param verify: decode every image (see :func:`_image_problem`).
    :param limits: the image sizes allowed.
    :return: ``(records whose sources are row indices and classes label names or values,
        the ClassLabel names or None)``.
    :raises BadInputError: if a column is missing.
    """
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
            if not isinstance(text, str) or not text.strip():
                issues.report(where, "empty text")
            elif label is None:
                issues.report(where, "no label")
            elif (problem := _image_problem(image, verify=verify, limits=limits)) is not None:
                issues.report(where, problem)
            else:
                records.append(row, text, label_names[label] if label_names else label)
            row += 1
    return records, label_names


def from_hf_dataset(
    dataset,
    *,
    encoder: SampleEncoder,
    n_experiences: int | None = None,
    classes_per_experience: int | Sequence[int] | None = None,
    seed: int = 0,
    class_order: Sequence[int] | None = None,
    validation_fraction: float = 0.0,
    on_error: OnError = "raise",
    test_fraction: float = 0.2,
    image_column: str = "image",
    text_column: str = "text",
    label_column: str = "label",
    rename_class: Callable[[str], str] | None = None,
    verify_images: bool = True,
    image_limits: ImageLimits = ImageLimits(),
) -> CLScenario:
    """A class-incremental benchmark from a Hugging Face ``datasets.Dataset`` (or ``DatasetDict``).

    The generators' ``dataset=`` argument. A ``DatasetDict`` with ``"train"`` and ``"test"`` keeps
    that split; a single ``Dataset`` is split per class by
    :func:`~avalanche_exmask.benchmarks.splits.stratified_split` with ``test_fraction``. Labels
    may be a ``ClassLabel`` (its names become the class names), integers or strings.

    :param dataset: e.g. from ``datasets.load_from_disk``; columns ``image`` (``Image`` feature),
        ``text`` and ``label`` by default.
    :param encoder: encodes each item.
    :param n_experiences: number of experiences.
    :param classes_per_experience: instead of ``n_experiences`` (which it overrides): an int or a
        list of counts.
    :param seed: seed of the class order and of the test and validation splits.
    :param class_order: a fixed order of the labels.
    :param validation_fraction: if positive, a stratified part of train becomes ``valid_stream``.
    :param on_error: ``"raise"`` or ``"skip"`` rows without image, text or label.
    :param test_fraction: for a single ``Dataset``, the per-class fraction held out for test.
    :param image_column: the column of the images.
    :param text_column: the column of the texts.
    :param label_column: the column of the labels.
    :param rename_class: maps a class (label name or value, as a string) to its readable name.
    :param verify_images: decode every image once while building (checking its size against
        ``image_limits`` first), so that unusable images are reported here, not in training.
    :param image_limits: the image sizes allowed, at build time and when an item is loaded.
    :return: see :func:`~avalanche_exmask.benchmarks.assemble.build_benchmark`.
    """
    issues = InputIssues(on_error)

    def records_of(part: Any, split: str) -> tuple[Records, list[str] | None]:
        return _hf_records(
            part, issues=issues, split=split, image_column=image_column, text_column=text_column, label_column=label_column,
            verify=verify_images, limits=image_limits,
        )

    if hasattr(dataset, "keys"):
        if not {"train", "test"} <= set(dataset.keys()):
            raise BadInputError(f"Hugging Face DatasetDict needs 'train' and 'test' splits; has {list(dataset.keys())}")
        parts = {name: dataset[name] for name in ("train", "test")}
        splits, label_names = {}, None
        for name, part in parts.items():
            splits[name], label_names = records_of(part, name)
    else:
        records, label_names = records_of(dataset, "dataset")
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
            parts[name], records.sources, labels, encoder=encoder, image_column=image_column, text_column=text_column,
            limits=image_limits,
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
