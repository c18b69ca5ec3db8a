"""Shared machinery of the benchmark generators: class splits and Avalanche scenario assembly.

:func:`build_class_incremental` is the last stage of every generator and the one place where a
benchmark gets its :class:`~avalanche_exmask.benchmarks.info.BenchmarkInfo`.

Avalanche 0.6.0's ``class_incremental_benchmark`` drops the remainder classes when
``num_experiences`` does not divide the class count, and reseeds torch's global RNG when given a
seed. The helpers here avoid both: the class order is drawn from a private generator, and the
per-experience class counts are computed so that every class lands in some experience.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence, Sized
from typing import Any

import torch
from avalanche.benchmarks.scenarios.generic_scenario import CLScenario
from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark
from avalanche.benchmarks.utils import _make_taskaware_classification_dataset
from torch.utils.data import Dataset

from avalanche_exmask.benchmarks.info import BenchmarkInfo

__all__ = ["split_classes", "draw_class_order", "as_classification_dataset", "build_class_incremental"]


def split_classes(
    n_classes: int,
    n_experiences: int | None = None,
    classes_per_experience: int | Sequence[int] | None = None,
) -> list[int]:
    """Number of classes in each experience; the counts always sum to ``n_classes``.

    With ``n_experiences``, classes are spread as evenly as possible and the *first*
    ``n_classes % n_experiences`` experiences get one class more (101 classes in 10 experiences:
    ``[11, 10, ..., 10]``). With an int ``classes_per_experience``, the last experience takes the
    remainder. A sequence is used as given after checking its sum.

    :raises ValueError: if neither or both are given, or the counts cannot cover the classes.
    """
    if (n_experiences is None) == (classes_per_experience is None):
        raise ValueError("give exactly one of `n_experiences` and `classes_per_experience`")
    if n_experiences is not None:
        if not 1 <= n_experiences <= n_classes:
            raise ValueError(f"n_experiences must be in [1, {n_classes}] for {n_classes} classes; got {n_experiences}")
        base, extra = divmod(n_classes, n_experiences)
        return [base + (1 if i < extra else 0) for i in range(n_experiences)]
    if isinstance(classes_per_experience, int):
        if not 1 <= classes_per_experience <= n_classes:
            raise ValueError(
                f"classes_per_experience must be in [1, {n_classes}]; got {classes_per_experience}"
            )
        full, rest = divmod(n_classes, classes_per_experience)
        return [classes_per_experience] * full + ([rest] if rest else [])
    assert classes_per_experience is not None  # exactly one of the two is given (checked above)
    counts = [int(c) for c in classes_per_experience]
    if sum(counts) != n_classes or min(counts) < 1:
        raise ValueError(
            f"classes_per_experience {counts} must be positive and sum to the {n_classes} classes"
        )
    return counts


def draw_class_order(
    n_classes: int, seed: int | None = None, class_order: Sequence[int] | None = None
) -> list[int]:
    """A class order: ``class_order`` checked as a permutation, else a seeded random one.

    The caller's global RNG is neither read nor reseeded (a private ``torch.Generator`` is used);
    with neither argument the order is ``0 .. n_classes-1``.
    """
    if class_order is not None:
        order = [int(c) for c in class_order]
        if sorted(order) != list(range(n_classes)):
            raise ValueError(f"class_order must be a permutation of 0..{n_classes - 1}; got {order}")
        return order
    if seed is None:
        return list(range(n_classes))
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_classes, generator=generator).tolist()


def as_classification_dataset(dataset: Dataset, targets: Sequence[int]):
    """Wrap a dataset of ``(MultimodalSample, label)`` items as an Avalanche classification dataset.

    Items become ``(x, y, t)`` with task label 0; ``targets`` (one int per item) are given so
    that Avalanche never iterates the dataset (which would load every image) to find them.
    """
    return _make_taskaware_classification_dataset(dataset, targets=list(targets), task_labels=0)


def build_class_incremental(
    train: Dataset,
    test: Dataset,
    train_targets: Sequence[int],
    test_targets: Sequence[int],
    *,
    valid: Dataset | None = None,
    valid_targets: Sequence[int] | None = None,
    n_experiences: int | None = None,
    classes_per_experience: int | Sequence[int] | None = None,
    seed: int | None = None,
    class_order: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    class_keys: Sequence[Hashable] | None = None,
    skipped: Sequence[tuple[str, str]] = (),
    n_truncated: int = 0,
    extras: Mapping[str, Any] | None = None,
) -> CLScenario:
    """An Avalanche class-incremental benchmark with train and test streams, and its info.

    This is where every generator's benchmark gets its
    :class:`~avalanche_exmask.benchmarks.info.BenchmarkInfo`: ``scenario.info``, whose fields
    (and extras) are also set as attributes of the scenario (``scenario.class_order``, ...).

    :param train: dataset of ``(MultimodalSample, int)`` items; labels ``0 .. C-1``.
    :param test: same for the test split (must contain the same classes).
    :param train_targets: the label of each train item, without loading it.
    :param test_targets: the label of each test item.
    :param valid: an optional validation split (same classes); gives a ``valid_stream`` split by
        the same class order and counts.
    :param valid_targets: the label of each validation item.
    :param n_experiences: number of experiences (uneven splits allowed; no class dropped).
    :param classes_per_experience: alternative to ``n_experiences``, which it overrides: an int or
        a list of counts.
    :param seed: seed of the class order (ignored when ``class_order`` is given).
    :param class_order: a fixed class order.
    :param class_names: human-readable names, one per label.
    :param class_keys: the class key of each label (folder name, label value, ...).
    :param skipped: ``(where, reason)`` of the input items the generator left out.
    :param n_truncated: number of texts longer than the model's context length.
    :param extras: generator-specific objects, also set as scenario attributes.
    :return: a ``CLScenario`` with ``train_stream``, ``test_stream`` (and ``valid_stream``) and
        ``info``; ``info.split_sizes`` holds the length of each split's dataset.
    """
    labels_seen = set(int(t) for t in train_targets)
    n_classes = len(labels_seen)
    if labels_seen != set(range(n_classes)):
        raise ValueError(f"train labels must be 0..{n_classes - 1}; got {sorted(labels_seen)[:10]}...")
    splits = {"train": (train, train_targets), "test": (test, test_targets)}
    if valid is not None:
        if valid_targets is None:
            raise ValueError("a validation split needs valid_targets")
        splits["valid"] = (valid, valid_targets)
    for name, (_, targets) in splits.items():
        missing = labels_seen - set(int(t) for t in targets)
        if missing:
            raise ValueError(f"classes {sorted(missing)} have train samples but no {name} samples")
    if classes_per_experience is not None:
        n_experiences = None
    counts = split_classes(n_classes, n_experiences, classes_per_experience)
    order = draw_class_order(n_classes, seed, class_order)
    scenario = class_incremental_benchmark(
        {name: as_classification_dataset(dataset, targets) for name, (dataset, targets) in splits.items()},
        class_order=order,
        num_classes_per_exp=counts,
    )
    info = BenchmarkInfo(
        class_order=order,
        classes_per_experience=counts,
        class_names=list(class_names) if class_names is not None else None,
        class_keys=list(class_keys) if class_keys is not None else None,
        split_sizes={name: _length(dataset) for name, (dataset, _) in splits.items()},
        skipped=list(skipped),
        n_truncated=n_truncated,
        extras=dict(extras or {}),
    )
    scenario.info = info
    for name, value in info.scenario_attributes().items():
        setattr(scenario, name, value)
    return scenario


def _length(dataset: Dataset) -> int:
    """``len(dataset)``; a benchmark's datasets have one (torch's ``Dataset`` type does not say so).

    :raises TypeError: for a dataset without ``__len__``, as ``len`` would.
    """
    if not isinstance(dataset, Sized):
        raise TypeError(f"a benchmark dataset needs a length; {type(dataset).__name__} has no __len__")
    return len(dataset)
