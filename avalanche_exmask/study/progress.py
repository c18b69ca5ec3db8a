"""The study-level progress line every launcher prints.

``study: 3/10 done, 2 running, 1 failed, 4 pending; 0:05:12 elapsed, about 0:10:24 left``

Counts are of the runs submitted by this launch (runs skipped because their results existed are
said once, at the start). The estimate assumes the runs still to finish (running and pending) go at
the pace of those done so far: elapsed x (running + pending) / done; there is none before the first
run is done.
"""
from __future__ import annotations

import dataclasses
import datetime

__all__ = ["StudyProgress", "RUN_STATES"]

RUN_STATES = ("pending", "running", "done", "failed")
"""A submitted run's states: submitted and not started, started, results written, ended without results."""


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


@dataclasses.dataclass
class StudyProgress:
    """The states of a launch's runs (by results path) and the line that sums them up."""

    states: dict[str, str]

    @classmethod
    def pending(cls, runs: list[str]) -> StudyProgress:
        """Every run of ``runs`` (results paths) pending."""
        return cls({run: "pending" for run in runs})

    def set(self, run: str, state: str) -> bool:
        """Put ``run`` in ``state``; whether that changed anything.

        :raises ValueError: for an unknown state or run.
        """
        if state not in RUN_STATES or run not in self.states:
            raise ValueError(f"unknown run {run!r} or state {state!r} (states: {RUN_STATES})")
        changed = self.states[run] != state
        self.states[run] = state
        return changed

    def count(self, state: str) -> int:
        """How many runs are in ``state``."""
        return sum(1 for value in self.states.values() if value == state)

    def estimate_left(self, elapsed: float) -> float | None:
        """Seconds until every run ends at the pace of the runs done so far (``None`` before the first)."""
        done = self.count("done")
        if not done:
            return None
        return elapsed * (self.count("running") + self.count("pending")) / done

    def line(self, elapsed: float) -> str:
        """The progress line after ``elapsed`` seconds."""
        left = self.estimate_left(elapsed)
        estimate = "no estimate before the first run is done" if left is None else f"about {_clock(left)} left"
        return (f"study: {self.count('done')}/{len(self.states)} done, {self.count('running')} running, "
                f"{self.count('failed')} failed, {self.count('pending')} pending; {_clock(elapsed)} elapsed, {estimate}")
