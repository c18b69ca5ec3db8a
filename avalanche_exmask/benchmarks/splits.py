"""Splitting :class:`~avalanche_exmask.benchmarks.records.Records` into train, test and validation.

Three ways, shared by the generators: a seeded split per class (:func:`stratified_split`),
explicit lists of image paths (:func:`split_by_file_lists`), and a validation part carved from
train (:func:`carve_validation`). A generator's own fixed split (e.g. MM-ImageNet-R's) lives
with the generator.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Hashable, Sequence

from avalanche_exmask.benchmarks.records import PathLike, Records, read_file_list
from avalanche_exmask.data.image_text import BadInputError, InputIssues

__all__ = ["stratified_split", "split_by_file_lists", "carve_validation"]

logger = logging.getLogger(__name__)


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
    train_files: PathLike | Sequence[str],
    test_files: PathLike | Sequence[str],
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
