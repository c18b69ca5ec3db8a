"""Avalanche's accuracy metrics, summed over the ranks of a distributed evaluation.

Avalanche 0.6's ``Accuracy`` keeps a running mean (correct predictions and patterns seen) of the
batches *this process* saw; under ``torchrun`` each rank sees only its shard of the test data
(:class:`~avalanche_exmask.training.distributed_plugin.DistributedTrainingPlugin`), so each would
report its shard's accuracy. :class:`GatheredAccuracy` sums the two counts over the ranks when the
result is read: every rank reports the accuracy over the whole test set, the same number a single
process reports. In a single process it is Avalanche's ``Accuracy``.
"""
from __future__ import annotations

from avalanche.evaluation.metrics.accuracy import Accuracy, ExperienceAccuracy, StreamAccuracy

from avalanche_exmask.distributed import all_reduce_sum

__all__ = ["GatheredAccuracy", "GatheredExperienceAccuracy", "GatheredStreamAccuracy", "gathered_accuracy_metrics"]


class GatheredAccuracy(Accuracy):
    """Avalanche's ``Accuracy`` whose :meth:`result` counts the patterns of every rank.

    ``result`` is a collective call under ``torchrun``: every rank must read it at the same point,
    as Avalanche's ``EvaluationPlugin`` does (it computes metrics on every rank; only rank 0 logs).
    """

    def result(self) -> float:
        correct, seen = all_reduce_sum([self._mean_accuracy.summed, self._mean_accuracy.weight])
        return correct / seen if seen else 0.0


class GatheredExperienceAccuracy(ExperienceAccuracy):
    """Avalanche's ``ExperienceAccuracy`` over the whole test experience of every rank."""

    def __init__(self) -> None:
        super().__init__()
        self._metric = GatheredAccuracy()


class GatheredStreamAccuracy(StreamAccuracy):
    """Avalanche's ``StreamAccuracy`` over the whole test stream of every rank."""

    def __init__(self) -> None:
        super().__init__()
        self._metric = GatheredAccuracy()


def gathered_accuracy_metrics(*, experience: bool = False, stream: bool = False) -> list:
    """Like Avalanche's ``accuracy_metrics(experience=..., stream=...)`` (same metric names in the
    results), with the counts summed over ranks."""
    return [
        *([GatheredExperienceAccuracy()] if experience else []),
        *([GatheredStreamAccuracy()] if stream else []),
    ]
