"""The buffer's small datasets: candidates as Avalanche reads them, and stored records decoded for replay."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch.utils.data import Dataset

from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.storage.codecs.base import Record

__all__ = ["Augmentation", "ListDataset", "RecordDataset"]

Augmentation = Callable[[Record, Sequence[Record], Callable[[Record], MultimodalSample]], MultimodalSample]
"""``augmentation(record, class_records, decode) -> sample``: decode ``record``, possibly combined
with other records of its class (``class_records`` includes ``record`` itself)."""


class ListDataset(Dataset):
    """Items ``(x, y)`` of a list of candidates (an Avalanche selection strategy reads them)."""

    def __init__(self, items: list) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int):
        x, y, *_ = self._items[index]
        return x, y


class RecordDataset(Dataset):
    """Items ``(MultimodalSample, label)`` decoded from records on access."""

    def __init__(
        self,
        records: Mapping[int, list[Record]],
        decode: Callable[[Record], MultimodalSample],
        augmentation: Augmentation | None,
    ) -> None:
        self._by_class = dict(records)
        self._items = [(label, position) for label, group in self._by_class.items() for position in range(len(group))]
        self._decode = decode
        self._augmentation = augmentation

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> tuple[MultimodalSample, int]:
        label, position = self._items[index]
        group = self._by_class[label]
        if self._augmentation is None:
            return self._decode(group[position]), label
        return self._augmentation(group[position], group, self._decode), label
