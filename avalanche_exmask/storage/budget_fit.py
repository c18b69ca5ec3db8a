"""Fitting records into a byte budget: the rule that fills each class's share (bytes throughout).

The budgets themselves (bytes, and the paper's samples per class) are :mod:`~avalanche_exmask.storage.budget`.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from avalanche_exmask.storage.codecs.base import Record

__all__ = ["fit_to_budget", "record_sizes"]


def fit_to_budget(sizes: Iterable[int], budget: int) -> list[int]:
    """Indices of the records kept in a ``budget`` (bytes), given their sizes in selection order.

    Records that do not fit before the first kept one are skipped; after it, the first record
    that does not fit ends the walk (``sizes`` is not consumed further, so it may be lazy).

    :return: increasing indices whose sizes sum to at most ``budget``; empty only if no single
        record fits.
    """
    kept: list[int] = []
    spent = 0
    for index, size in enumerate(sizes):
        if spent + size <= budget:
            kept.append(index)
            spent += size
        elif kept:
            break
    return kept


def record_sizes(records: Iterable[Record], seen: list[Record]) -> Iterator[int]:
    """The ``nbytes`` of ``records``, appending each record to ``seen`` as it is drawn."""
    for record in records:
        seen.append(record)
        yield record.nbytes
