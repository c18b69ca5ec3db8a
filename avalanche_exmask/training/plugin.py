"""``ExemplarMaskingPlugin``: masked, byte-budgeted replay for any Avalanche strategy."""
from __future__ import annotations

import time
from typing import Any, Optional

from avalanche.training.plugins import ReplayPlugin

from avalanche_exmask.storage.buffer import MaskedExemplarBuffer

__all__ = ["ExemplarMaskingPlugin"]


class ExemplarMaskingPlugin(ReplayPlugin):
    """Replay from a byte-budgeted buffer of masked exemplars.

    A thin :class:`~avalanche.training.plugins.ReplayPlugin` whose storage policy is a
    :class:`~avalanche_exmask.storage.buffer.MaskedExemplarBuffer` (or any byte-budgeted buffer of
    this package, e.g. with the raw, JPEG or CIM codec): after each experience the buffer selects
    and encodes exemplars of the new classes from one eval forward pass; during training, each
    batch of current data is joined by a batch of (decoded, augmented) exemplars.

    It also times the two phases of every experience (``timings``: a list of
    ``{"experience", "train_s", "update_s"}``, seconds), so the cost of masking and selection can be
    read against training.

    :param mem_size: the budget in **bytes** (see
        :func:`avalanche_exmask.storage.budget.budget_from_samples_per_class`).
    :param storage_policy: the buffer; default: a ``MaskedExemplarBuffer(max_size=mem_size)``.
    :param batch_size_mem: replayed exemplars per batch (default: the train batch size).
    """

    def __init__(
        self,
        *,
        mem_size: int,
        storage_policy: Optional[Any] = None,
        batch_size_mem: Optional[int] = None,
    ) -> None:
        if storage_policy is None:
            storage_policy = MaskedExemplarBuffer(max_size=mem_size)
        super().__init__(mem_size=mem_size, batch_size_mem=batch_size_mem, storage_policy=storage_policy)
        self.timings: list[dict[str, float]] = []
        self._train_start = 0.0

    def before_training_exp(self, strategy, num_workers: int = 0, shuffle: bool = True, **kwargs):
        super().before_training_exp(strategy, num_workers=num_workers, shuffle=shuffle, **kwargs)
        self._train_start = time.perf_counter()

    def after_training_exp(self, strategy, **kwargs):
        train_seconds = time.perf_counter() - self._train_start
        start = time.perf_counter()
        super().after_training_exp(strategy, **kwargs)
        self.timings.append(
            {
                "experience": int(strategy.experience.current_experience),
                "train_s": train_seconds,
                "update_s": time.perf_counter() - start,
            }
        )
