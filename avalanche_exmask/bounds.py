"""Numeric bounds as ``typing.Annotated`` metadata, read by the config validation.

A function parameter annotated ``Annotated[int, Bounds(low=1)]`` declares its range in its
signature, where :func:`avalanche_exmask.run_checks.check_benchmark_args` finds it, so a config
naming the function is checked before the function runs.
"""
from __future__ import annotations

import dataclasses

__all__ = ["Bounds"]


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The closed interval ``[low, high]`` (``None``: unbounded on that side)."""

    low: float | None = None
    high: float | None = None

    def __contains__(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f">= {self.low}"
        if self.low is None:
            return f"<= {self.high}"
        return f"in [{self.low}, {self.high}]"
