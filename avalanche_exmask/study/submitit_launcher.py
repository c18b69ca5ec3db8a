"""The ``submitit`` launcher: the study's jobs as one SLURM job array, through submitit.

No ``sbatch`` file is written: submitit's ``AutoExecutor`` pickles each job (a
:class:`StudyJob` and its runs) into ``folder`` (default ``OUT/.submitit``) and submits them all
as one array (``executor.batch()``), with the options' partition, account, time limit, GPUs
(``gpus_per_node``), CPUs (``cpus_per_task``), memory, array parallelism and any other SLURM
parameter of submitit (``slurm:`` mapping). The array's jobs run on the cluster's nodes with the
Python of this launch, so the package and the results folder must be visible there (a shared file
system). A run on several GPUs runs under ``torchrun`` inside its job (one task per job, one
process per GPU).

Preemption and time limits: :class:`StudyJob` is a submitit ``Checkpointable``: when SLURM
signals a job (preemption, or the time limit near), submitit requeues it with the same runs; with
``--checkpoint`` each run then resumes after its last experience, and runs of the job already done
are skipped. Where SLURM is absent (or ``cluster: local``), submitit's local executor runs every
job at once as a process of this machine, with the same signals and requeueing.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit

from avalanche_exmask.study.launcher import Launcher, LauncherOptions, Submission
from avalanche_exmask.study.runs import RunOutcome, StudyRun, execute_runs

__all__ = ["SubmititLauncher", "StudyJob"]


class StudyJob(submitit.helpers.Checkpointable):
    """The callable a submitit job runs: :func:`~avalanche_exmask.study.runs.execute_runs`; when
    preempted or timed out, submitit requeues it with the same runs (the default ``checkpoint``
    of ``Checkpointable``), which resume from their checkpoints."""

    def __call__(self, runs: Sequence[StudyRun]) -> list[RunOutcome]:
        return execute_runs(runs)


class _ArrayJob(Submission):
    """One job of the array."""

    def __init__(self, runs: Sequence[StudyRun], job: submitit.Job) -> None:
        super().__init__(runs)
        self.job = job

    def finished(self) -> bool:
        return self.job.done()

    def failure(self) -> str | None:
        error = self.job.exception()
        if error is None:
            return None
        lines = [line for line in str(error).splitlines() if line.strip()]
        return f"submitit job {self.job.job_id}: {lines[-1] if lines else type(error).__name__}"

    def launcher_log(self) -> str | None:
        return str(self.job.paths.stderr)


class SubmititLauncher(Launcher):
    """Submits jobs as one array through ``submitit.AutoExecutor`` (see the module docstring)."""

    def __init__(self, options: LauncherOptions, out: Path) -> None:
        super().__init__(options, out)
        self.executor = submitit.AutoExecutor(folder=options.folder or out / ".submitit", cluster=options.cluster)
        self.executor.update_parameters(**self.parameters(options))

    @staticmethod
    def parameters(options: LauncherOptions) -> dict[str, Any]:
        """submitit's parameters for ``options``: the generic ones, and SLURM's prefixed with ``slurm_``."""
        parameters: dict[str, Any] = {
            "name": "exmask-study", "timeout_min": options.time_limit_min, "nodes": 1, "tasks_per_node": 1,
            "cpus_per_task": options.cpus(),
        }
        if options.gpus_per_run:
            parameters["gpus_per_node"] = options.gpus_per_run
        if options.mem_gb is not None:
            parameters["mem_gb"] = options.mem_gb
        slurm = {"partition": options.partition, "account": options.account, "array_parallelism": options.array_parallelism,
                 **options.slurm}
        parameters.update({f"slurm_{key}": value for key, value in slurm.items() if value is not None})
        return parameters

    def submit(self, jobs: Sequence[Sequence[StudyRun]]) -> list[Submission]:
        with self.executor.batch():
            submitted = [self.executor.submit(StudyJob(), list(job)) for job in jobs]
        return [_ArrayJob(job, handle) for job, handle in zip(jobs, submitted, strict=True)]
