"""What a byte-budget buffer holds: per-class and whole-buffer statistics (bytes throughout)."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

__all__ = ["ClassStats", "BufferStats", "mean_of"]


@dataclasses.dataclass(frozen=True)
class ClassStats:
    """What the buffer holds for one class.

    :param n_exemplars: stored records.
    :param nbytes: their accounted bytes.
    :param kept_patch_fraction: mean kept-patch fraction (masked records; else ``None``).
    :param kept_token_fraction: mean kept-token fraction (masked records; else ``None``).
    """

    n_exemplars: int
    nbytes: int
    kept_patch_fraction: float | None
    kept_token_fraction: float | None


@dataclasses.dataclass(frozen=True)
class BufferStats:
    """A snapshot of the buffer (bytes throughout).

    :param budget_nbytes: ``max_size``.
    :param accounted_nbytes: the sum of the stored records' ``nbytes``.
    :param resident_nbytes: the bytes the records' Python objects occupy.
    :param classes: per-class statistics.
    """

    codec: str
    budget_nbytes: int
    accounted_nbytes: int
    resident_nbytes: int
    classes: dict[int, ClassStats]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (class keys as strings)."""
        summary = dataclasses.asdict(self)
        summary["classes"] = {str(label): stats for label, stats in summary["classes"].items()}
        return summary


def mean_of(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not ``None``; ``None`` if there are none."""
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else None
