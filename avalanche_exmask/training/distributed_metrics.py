"""Avalanche's accuracy metrics, summed over the ranks of a distributed evaluation.

Avalanche 0.6's ``Accuracy`` keeps a running mean (correct predictions and patterns seen) of the
batches *this process* saw; under ``torchrun`` each rank sees only its shard of the test data
(:class:`~avalanche_exmask.training.distributed_plugin.DistributedTrainingPlugin`), so each would
report its shard's accuracy. :class:`GatheredAccuracy` sums the two counts over the ranks when the
result is read: every rank reports the accuracy over the whole test set, the same number a single
process reports. In a single process it is Avalanche's ``Accuracy``. :class:`GatheredClassAccuracy`
does the same for Avalanche's per-class accuracy (its counts are gathered as objects, since a rank's
shard may lack a class).
"""
from __future__ import annotations

from collections import defaultdict

from avalanche.evaluation.metrics.accuracy import Accuracy, ExperienceAccuracy, StreamAccuracy
from avalanche.evaluation.metrics.class_accuracy import ClassAccuracy, StreamClassAccuracy

from avalanche_exmask.distributed import all_reduce_sum, gather_objects

__all__ = [
    "GatheredAccuracy", "GatheredExperienceAccuracy", "GatheredStreamAccuracy", "gathered_accuracy_metrics",
    "GatheredClassAccuracy", "GatheredStreamClassAccuracy", "gathered_class_accuracy_metrics",
]


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


class GatheredClassAccuracy(ClassAccuracy):
    """Avalanche's ``ClassAccuracy`` whose :meth:`result` counts every rank's patterns of each class
    (a collective call under ``torchrun``, like :meth:`GatheredAccuracy.result`)."""

    def result(self) -> dict[int, dict[int, float]]:
        local = {
            (task, label): (mean.summed, mean.weight)
            for task, classes in self._class_accuracies.items()
            for label, mean in classes.items()
        }
        totals: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for counts in gather_objects(local):
            for key, (correct, seen) in counts.items():
                totals[key][0] += correct
                totals[key][1] += seen
        result: dict[int, dict[int, float]] = {}
        for (task, label), (correct, seen) in sorted(totals.items()):
            result.setdefault(task, {})[label] = correct / seen if seen else 0.0
        return result


class GatheredStreamClassAccuracy(StreamClassAccuracy):
    """Avalanche's ``StreamClassAccuracy`` (metric name ``Top1_ClassAcc_Stream``) over every rank."""

    def __init__(self) -> None:
        super().__init__()
        self._metric = GatheredClassAccuracy()


def gathered_class_accuracy_metrics() -> list:
    """Like Avalanche's ``class_accuracy_metrics(stream=True)``, with the counts gathered over ranks."""
    return [GatheredStreamClassAccuracy()]
