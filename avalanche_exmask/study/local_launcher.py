"""The ``local`` launcher: the study's jobs in a pool of worker processes on this machine.

``workers`` jobs run at a time, each in a spawned process with ``threads`` torch threads
(``workers x threads`` should not exceed the cores). Inside a job, processes (DataLoader workers)
start with the platform's default method, as in a run started from the command line. A job that
raises fails alone; a worker that dies (killed) breaks the pool, and every job not finished is then
reported failed: launching the study again resumes them.
"""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from avalanche_exmask.study.launcher import Launcher, LauncherOptions, Submission
from avalanche_exmask.study.runs import StudyRun, execute_runs

__all__ = ["LocalLauncher"]


class _PoolJob(Submission):
    """A job in the pool: a future of :func:`~avalanche_exmask.study.runs.execute_runs`."""

    def __init__(self, runs: Sequence[StudyRun], future: Future) -> None:
        super().__init__(runs)
        self.future = future

    def finished(self) -> bool:
        return self.future.done()

    def failure(self) -> str | None:
        error = self.future.exception()
        return None if error is None else f"{type(error).__name__}: {error}"


def _platform_start_method() -> None:
    """Pool initializer: the job process starts its own processes with the platform's default
    method (``fork`` on Linux), not the ``spawn`` it inherited from the pool. Loader workers then
    start as they do in a run launched from the command line; a spawned worker re-imports torch and
    the package, once per loader (the buffer update starts one per class)."""
    multiprocessing.set_start_method(None, force=True)


class LocalLauncher(Launcher):
    """Runs jobs in ``options.workers`` spawned processes (``OMP_NUM_THREADS`` defaults to ``options.threads``)."""

    def __init__(self, options: LauncherOptions, out: Path) -> None:
        super().__init__(options, out)
        os.environ.setdefault("OMP_NUM_THREADS", str(options.threads))
        self.pool = ProcessPoolExecutor(options.workers, mp_context=get_context("spawn"), initializer=_platform_start_method)

    def submit(self, jobs: Sequence[Sequence[StudyRun]]) -> list[Submission]:
        return [_PoolJob(job, self.pool.submit(execute_runs, list(job))) for job in jobs]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
