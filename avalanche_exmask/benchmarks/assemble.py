"""From split :class:`~avalanche_exmask.benchmarks.records.Records` to an Avalanche benchmark.

:func:`build_benchmark` is the last stage the image-text generators share: it gives labels to
the classes, drops (or reports) classes missing from a split, wraps each split in a lazily
loading dataset and hands over to
:func:`~avalanche_exmask.benchmarks.common.build_class_incremental`, which attaches the
:class:`~avalanche_exmask.benchmarks.info.BenchmarkInfo`.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypedDict

from avalanche.benchmarks.scenarios.generic_scenario import CLScenario
from torch.utils.data import Dataset

from avalanche_exmask.benchmarks.common import build_class_incremental
from avalanche_exmask.benchmarks.records import PathLike, Records, check_images
from avalanche_exmask.benchmarks.splits import carve_validation
from avalanche_exmask.data.encode import SampleEncoder
from avalanche_exmask.data.image_text import BadInputError, ImageTextDataset, InputIssues
from avalanche_exmask.data.images import ImageLimits

__all__ = ["ExperienceOptions", "build_benchmark", "build_folder_benchmark", "folder_dataset_maker"]


class ExperienceOptions(TypedDict):
    """The class order and experience split a generator passes on to :func:`build_benchmark` (or
    :func:`~avalanche_exmask.benchmarks.hf.from_hf_dataset`) as keyword arguments."""

    n_experiences: int | None
    classes_per_experience: int | Sequence[int] | None
    seed: int
    class_order: Sequence[int] | None

logger = logging.getLogger(__name__)


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
    class_keys: Sequence[Hashable] | None = None,
    class_names: Sequence[str] | None = None,
    n_experiences: int | None = None,
    classes_per_experience: int | Sequence[int] | None = None,
    seed: int | None = 0,
    class_order: Sequence[int] | None = None,
) -> CLScenario:
    """Assemble a class-incremental Avalanche benchmark from split records.

    :param splits: ``"train"`` and ``"test"`` records, optionally ``"valid"``.
    :param make_dataset: ``(split name, records, labels) -> Dataset`` of lazily loaded
        ``(MultimodalSample, label)`` items.
    :param encoder: used to count texts longer than the context length.
    :param issues: receives classes missing from a split; its skipped items become
        ``benchmark.info.skipped``.
    :param class_keys: the classes in label order (label ``i`` is ``class_keys[i]``); default:
        the sorted classes found in the splits. Classes left without samples in some split are
        reported and, when skipping, removed (labels stay consecutive).
    :param class_names: a readable name per entry of ``class_keys``; default ``str(key)``.
    :param n_experiences: see :func:`~avalanche_exmask.benchmarks.common.build_class_incremental`.
    :param classes_per_experience: idem; overrides ``n_experiences``.
    :param seed: seed of the class order.
    :param class_order: a fixed class order (labels).
    :return: a ``CLScenario`` with ``train_stream``, ``test_stream`` (and ``valid_stream``) and
        ``info`` (:class:`~avalanche_exmask.benchmarks.info.BenchmarkInfo`, its fields also
        scenario attributes): ``class_names``, ``class_keys`` (the class key of each label:
        folder name, label name or value), ``class_order``, ``classes_per_experience``,
        ``skipped`` (list of ``(where, reason)``), ``n_truncated`` (texts longer than the context
        length, truncated when encoded) and ``split_sizes`` (``{split: number of pairs}``).
    """
    seen = set().union(*(records.classes for records in splits.values()))
    keys = list(class_keys) if class_keys is not None else sorted(seen)
    names = list(class_names) if class_names is not None else [str(k) for k in keys]
    if len(names) != len(keys):
        raise ValueError(f"got {len(names)} class names for {len(keys)} classes")
    name_of = dict(zip(keys, names, strict=True))
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
        class_keys=complete,
        skipped=issues.skipped,
        n_truncated=sum(encoder.is_truncated(t) for records in splits.values() for t in records.texts),
    )
    info = benchmark.info
    issues.log_summary("benchmark")
    if info.n_truncated:
        logger.info(
            "%d of %d texts exceed the context length of %d tokens and are truncated",
            info.n_truncated,
            sum(info.split_sizes.values()),
            encoder.context_length,
        )
    return benchmark


def folder_dataset_maker(
    root: PathLike, encoder: SampleEncoder, limits: ImageLimits = ImageLimits()
) -> Callable[[str, Records, list[int]], Dataset]:
    """``make_dataset`` for :func:`build_benchmark`, for records whose sources are paths relative to
    ``root``; ``limits`` are the image sizes the datasets accept."""

    def make(_: str, records: Records, labels: list[int]) -> ImageTextDataset:
        return ImageTextDataset(
            [os.path.join(root, source) for source in records.sources],
            records.texts,
            labels,
            encoder=encoder,
            limits=limits,
        )

    return make


def build_folder_benchmark(
    splits: dict[str, Records],
    *,
    root: PathLike,
    encoder: SampleEncoder,
    issues: InputIssues,
    verify_images: bool,
    image_limits: ImageLimits,
    validation_fraction: float,
    seed: int,
    **experiences_and_names: Any,
) -> CLScenario:
    """The shared end of the on-disk benchmarks (image-text folders, MM-ImageNet-R, UPMC-Food101):
    a seeded, stratified ``validation_fraction`` of each train class carved off (if positive), every
    record's image checked (:func:`~avalanche_exmask.benchmarks.records.check_images`), then
    :func:`build_benchmark` over datasets that read the images under ``root`` when indexed.

    :param splits: ``{"train": ..., "test": ...}`` records, image paths relative to ``root``.
    :param seed: seeds the validation split and the class order.
    :param experiences_and_names: ``n_experiences``, ``classes_per_experience``, ``class_order``,
        ``class_keys``, ``class_names``: passed to :func:`build_benchmark`.
    """
    if validation_fraction > 0:
        splits = carve_validation(splits, fraction=validation_fraction, seed=seed)
    return build_benchmark(
        {name: check_images(r, root=root, issues=issues, verify=verify_images, limits=image_limits) for name, r in splits.items()},
        make_dataset=folder_dataset_maker(root, encoder, image_limits),
        encoder=encoder,
        issues=issues,
        seed=seed,
        **experiences_and_names,
    )
