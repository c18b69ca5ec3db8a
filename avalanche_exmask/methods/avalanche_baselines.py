"""Avalanche's own strategies as methods: ``naive`` (fine-tuning), ``replay`` (Avalanche's
``Replay`` with ``samples_per_class x classes`` plain samples, the same bytes as our ``raw``
buffer) and ``joint`` (``JointTraining`` on the whole stream, an upper bound)."""
from __future__ import annotations

from typing import Any

from avalanche.training import JointTraining, Naive, Replay
from avalanche.training.plugins import ReplayPlugin

from avalanche_exmask.methods.base import BuildContext, MethodSpec
from avalanche_exmask.registry import METHODS


def _replay(context: BuildContext) -> Replay:
    mem_size = int(context.config.storage.budget.samples_per_class * context.n_classes)
    return Replay(mem_size=mem_size, **context.template_kwargs)


def _replay_report(strategy: Any, context: BuildContext) -> dict[str, Any]:
    plugin = next(p for p in strategy.plugins if isinstance(p, ReplayPlugin))
    return {"exemplars_per_class": len(plugin.storage_policy.buffer) / context.n_classes}


METHODS.register("naive")(MethodSpec(build=lambda c: Naive(**c.template_kwargs), description="Avalanche's Naive: fine-tuning, no replay"))
METHODS.register("replay")(
    MethodSpec(
        build=_replay, report=_replay_report, description="Avalanche's Replay: plain samples, experience-balanced, fixed memory batch"
    )
)
METHODS.register("joint")(
    MethodSpec(
        build=lambda c: JointTraining(**c.template_kwargs), joint=True,
        description="Avalanche's JointTraining on the whole stream (upper bound)",
    )
)
