"""Reading an experience's exemplar candidates, class after class, with one pool of DataLoader workers.

The buffer update reads the candidates of each new class (images decoded and resized) before it
scores them. With loader workers, starting a DataLoader per class starts a pool of worker processes
per class: with hundreds of classes an experience, or a worker start that imports the package, that
start-up is most of the update. :class:`CandidateReader` starts its workers once (a DataLoader with
``persistent_workers``, whose sampler is pointed at each class's indices in turn) and keeps them
until :meth:`CandidateReader.close`.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["CandidateReader"]


def _as_is(item: Any) -> Any:
    """A DataLoader ``collate_fn`` returning each item unchanged (module level: workers pickle it)."""
    return item


class _ClassIndices(Sampler[int]):
    """A sampler over the indices it was last given (one class's candidates)."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class CandidateReader:
    """Items of ``dataset`` read by index lists, in ``num_workers`` DataLoader workers started once.

    Each :meth:`read` returns ``[dataset[i] for i in indices]`` (the items as the dataset returns
    them, in order). With ``num_workers == 0``, or fewer than two indices, the items are read in
    this process. Otherwise the workers start at the first such read and serve every later one.
    Every read in workers draws one int64 from torch's global generator (what a DataLoader draws
    for its workers' base seed at each new iterator), so the global random stream after an update
    is the one a DataLoader per class would leave.

    Use as a context manager, or call :meth:`close` (stops the workers).

    :param dataset: the experience's (eval-mode) dataset.
    :param num_workers: DataLoader worker processes (``0``: read here).
    """

    def __init__(self, dataset: Dataset, num_workers: int) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0; got {num_workers}")
        self.dataset = dataset
        self.num_workers = num_workers
        self._indices = _ClassIndices()
        self._loader: DataLoader | None = None

    def read(self, indices: list[int]) -> list:
        """The items at ``indices``, in order."""
        if not self.num_workers or len(indices) < 2:
            return [self.dataset[index] for index in indices]
        self._indices.indices = list(indices)
        if self._loader is None:
            self._loader = DataLoader(
                self.dataset, batch_size=None, sampler=self._indices, collate_fn=_as_is,
                num_workers=self.num_workers, persistent_workers=True,
            )
        else:
            torch.empty((), dtype=torch.int64).random_()  # the base-seed draw a new loader would make
        return list(self._loader)

    def close(self) -> None:
        """Stop the workers (they stop when the last reference to the loader's iterator goes)."""
        self._loader = None

    def __enter__(self) -> CandidateReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
