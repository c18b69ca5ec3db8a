"""The ``ray`` launcher: one Ray task per job, on an existing Ray cluster or a local instance.

``ray.init(address=options.address)`` joins the cluster (``auto``: the one this machine belongs
to; ``ray://head:10001``: through Ray Client); a Ray instance already initialised in this process
is used as it is. Each job is a task of :func:`~avalanche_exmask.study.runs.execute_runs` asking
for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs, so Ray places as many at a time as the
cluster holds. The workers import this package and write to the results folder: install the
package on every node and give them a shared file system (or the same path on each).

A task whose worker dies (a preempted or lost node, a killed process) is retried up to
``max_retries`` times by Ray; with ``--checkpoint`` the retried run resumes after its last
experience. A task that raises is not retried (the failure is the run's, reported with its log).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ray

from avalanche_exmask.study.launcher import Launcher, LauncherOptions, Submission
from avalanche_exmask.study.runs import StudyRun, execute_runs

__all__ = ["RayLauncher"]


class _RayTask(Submission):
    """One task: the reference of its result."""

    def __init__(self, runs: Sequence[StudyRun], reference: ray.ObjectRef) -> None:
        super().__init__(runs)
        self.reference = reference

    def finished(self) -> bool:
        ready, _ = ray.wait([self.reference], timeout=0)
        return bool(ready)

    def failure(self) -> str | None:
        try:
            ray.get(self.reference)
        except Exception as error:  # the task's exception (RayTaskError), or Ray's (a worker lost beyond its retries)
            lines = [line for line in str(error).splitlines() if line.strip()]
            return f"ray: {type(error).__name__}: {lines[-1] if lines else ''}"
        return None


class RayLauncher(Launcher):
    """Submits each job as a Ray task (see the module docstring)."""

    def __init__(self, options: LauncherOptions, out: Path) -> None:
        super().__init__(options, out)
        if not ray.is_initialized():
            ray.init(address=options.address)
        self.task = ray.remote(execute_runs).options(
            num_cpus=options.cpus(), num_gpus=options.gpus_per_run, max_retries=options.max_retries,
            retry_exceptions=False, name="exmask-study-run",
        )

    def submit(self, jobs: Sequence[Sequence[StudyRun]]) -> list[Submission]:
        return [_RayTask(job, self.task.remote(list(job))) for job in jobs]
