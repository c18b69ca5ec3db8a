"""What a generated benchmark is made of beyond its streams: :class:`BenchmarkInfo`.

Every generator returns an Avalanche ``CLScenario`` carrying one :class:`BenchmarkInfo` as
``scenario.info``, attached by
:func:`~avalanche_exmask.benchmarks.common.build_class_incremental`. For compatibility each field
(and each entry of :attr:`BenchmarkInfo.extras`) is also an attribute of the scenario under the
same name: ``scenario.class_order is scenario.info.class_order``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BenchmarkInfo"]


@dataclass(frozen=True)
class BenchmarkInfo:
    """The classes, splits and input problems of a generated benchmark.

    :ivar class_order: the labels in the order the experiences see them.
    :ivar classes_per_experience: number of classes of each experience; sums to the class count.
    :ivar class_names: a readable name per label, or ``None`` when the generator has none.
    :ivar class_keys: the class key of each label (folder name, wnid, label name or value), or
        ``None`` when the generator has none.
    :ivar split_sizes: ``{split: number of items}`` of ``"train"``, ``"test"`` (and ``"valid"``).
    :ivar skipped: ``(where, reason)`` of every input item left out with ``on_error="skip"``.
    :ivar n_truncated: number of texts longer than the model's context length, truncated when
        encoded.
    :ivar extras: generator-specific objects, e.g. the synthetic generator's ``classes`` (the
        ``SyntheticClass`` of each label), ``train_dataset`` and ``test_dataset``.
    """

    class_order: list[int]
    classes_per_experience: list[int]
    class_names: list[str] | None = None
    class_keys: list[Hashable] | None = None
    split_sizes: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    n_truncated: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = {f.name for f in dataclasses.fields(self)} | {"info"}
        clashes = names & self.extras.keys()
        if clashes:
            raise ValueError(f"extras {sorted(clashes)} clash with scenario attributes of the same name")

    def scenario_attributes(self) -> dict[str, Any]:
        """``{name: value}`` of the scenario attributes that mirror this info: every field but
        ``extras``, and the entries of ``extras``."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extras"}
        return {**fields, **self.extras}
