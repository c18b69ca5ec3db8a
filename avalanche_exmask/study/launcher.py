"""Launchers: what every way of running a study's runs shares.

A launcher (:class:`Launcher`) only submits jobs and says when each has finished; everything a
study guarantees is done here, identically for every launcher, by :func:`launch_study`:

1. every run is validated (:func:`~avalanche_exmask.study.runs.validate_run`; the configs were
   validated when the study was planned) before any is submitted;
2. a run whose results file exists is skipped;
3. the remaining runs are packed into jobs (one per run, or one per group and seed with
   ``job_per: seed``: that job runs the seed's methods one after the other) and submitted;
4. :func:`follow` polls the jobs, prints a line per finished run and the study-level progress
   line (:class:`~avalanche_exmask.study.progress.StudyProgress`) whenever a count changes and at
   least every ``progress_seconds``; a run is *running* once its log was written to during this
   launch, *done* once its results file exists, *failed* when its job ended without it (reported
   with its log);
5. the report (:class:`StudyReport`) counts the planned runs whose results are missing.

Resuming is the worker's (:mod:`~avalanche_exmask.study.runs`): with ``--checkpoint`` every run
checkpoints each experience and resumes from it, so a run requeued by SLURM, retried by Ray or
submitted again by a later launch continues after its last experience.

Options (:class:`LauncherOptions`) come from the study file's ``launcher`` mapping, overridden by
the command line (:func:`add_launcher_arguments`, :func:`launcher_options`).
"""
from __future__ import annotations

import abc
import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from avalanche_exmask.study.progress import StudyProgress
from avalanche_exmask.study.runs import StudyRun, validate_run

__all__ = [
    "LauncherOptions",
    "Submission",
    "Launcher",
    "StudyReport",
    "add_launcher_arguments",
    "launcher_options",
    "make_launcher",
    "pack_jobs",
    "launch_study",
    "follow",
]

INSTALL_HINT = "pip install 'avalanche-exmask[cluster]'"
"""How to install the libraries of the cluster launchers (submitit, Ray)."""


@dataclasses.dataclass(frozen=True)
class LauncherOptions:
    """How a study's runs are launched (the study file's ``launcher`` mapping; command-line flags
    override it).

    :param name: ``local`` (a process pool on this machine), ``submitit`` (SLURM job arrays, or
        local processes where SLURM is absent or ``cluster: local``) or ``ray`` (Ray tasks).
    :param workers: ``local``: runs at a time.
    :param threads: torch threads of each run's process(es).
    :param gpus_per_run: GPUs of each run; a run on several GPUs runs under ``torchrun`` (one
        process per GPU) inside its job or task.
    :param cpus_per_run: CPUs requested per run (``submitit``: ``cpus_per_task``; ``ray``:
        ``num_cpus``); default ``threads`` x max(1, ``gpus_per_run``).
    :param job_per: ``run`` (one job per run) or ``seed`` (one job per group and seed).
    :param poll_seconds: how often jobs are polled.
    :param progress_seconds: the progress line is printed at least this often.
    :param cluster: ``submitit``: the executor of submitit's ``AutoExecutor`` (``None``: SLURM
        where ``sbatch`` exists, else local processes; ``slurm``, ``local``, ``debug``).
    :param folder: ``submitit``: its logs and pickles (default ``OUT/.submitit``).
    :param partition: ``submitit``: the SLURM partition.
    :param account: ``submitit``: the SLURM account.
    :param time_limit_min: ``submitit``: each job's time limit in minutes (a job still running
        then is checkpointed and requeued by submitit).
    :param array_parallelism: ``submitit``: jobs of the array running at a time (SLURM's ``%``).
    :param mem_gb: ``submitit``: memory per job.
    :param slurm: ``submitit``: more SLURM parameters of submitit, without the ``slurm_`` prefix
        (e.g. ``{qos: high, constraint: a100}``).
    :param address: ``ray``: the cluster to join (``auto``, ``ray://host:10001``; ``None``: a
        running instance of this process, else a new local one).
    :param max_retries: ``ray``: retries of a task whose worker died (a preempted node).
    """

    name: Literal["local", "submitit", "ray"] = "local"
    workers: int = 2
    threads: int = 1
    gpus_per_run: int = 0
    cpus_per_run: int | None = None
    job_per: Literal["run", "seed"] = "run"
    poll_seconds: float = 5.0
    progress_seconds: float = 300.0
    cluster: str | None = None
    folder: str | None = None
    partition: str | None = None
    account: str | None = None
    time_limit_min: int = 24 * 60
    array_parallelism: int | None = None
    mem_gb: float | None = None
    slurm: dict[str, Any] = dataclasses.field(default_factory=dict)
    address: str | None = None
    max_retries: int = 3

    def cpus(self) -> int:
        """CPUs requested per run."""
        return self.cpus_per_run or self.threads * max(1, self.gpus_per_run)


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line flags of :class:`LauncherOptions` (each overrides the study file's ``launcher`` mapping)."""
    group = parser.add_argument_group("launcher (override the study file's `launcher` mapping)")
    group.add_argument("--launcher", dest="name", choices=("local", "submitit", "ray"), default=None,
                       help="local process pool (default), SLURM through submitit, or Ray")
    group.add_argument("--workers", type=int, default=None, help="local: runs at a time (default 2)")
    group.add_argument("--threads", type=int, default=None, help="torch threads per run (default 1)")
    group.add_argument("--gpus-per-run", type=int, default=None, help="GPUs per run (torchrun inside the job when > 1)")
    group.add_argument("--job-per", choices=("run", "seed"), default=None, help="one job per run (default) or per group and seed")
    group.add_argument("--partition", default=None, help="submitit: SLURM partition")
    group.add_argument("--account", default=None, help="submitit: SLURM account")
    group.add_argument("--time-limit", dest="time_limit_min", type=int, default=None,
                       help="submitit: minutes per job (then checkpointed and requeued)")
    group.add_argument("--cluster", default=None, help="submitit: slurm, local or debug (default: slurm where available)")
    group.add_argument("--ray-address", dest="address", default=None, help="ray: the cluster's address (e.g. auto)")


def launcher_options(study: dict[str, Any], args: argparse.Namespace, source: str) -> LauncherOptions:
    """The study file's ``launcher`` mapping with the flags of :func:`add_launcher_arguments` that were given.

    :raises ConfigError: naming ``source`` and the field, for an unknown field or a wrong value.
    """
    from avalanche_exmask.config_values import build_dataclass

    values = dict(study.get("launcher") or {})
    flags = {field.name for field in dataclasses.fields(LauncherOptions)}
    values.update({name: value for name, value in vars(args).items() if name in flags and value is not None})
    return build_dataclass(LauncherOptions, values, where="launcher", source=source)


class Submission(abc.ABC):
    """A submitted job: its runs, in order, and whether it has finished."""

    def __init__(self, runs: Sequence[StudyRun]) -> None:
        self.runs = tuple(runs)

    @abc.abstractmethod
    def finished(self) -> bool:
        """Whether the job has ended (succeeded or not)."""

    @abc.abstractmethod
    def failure(self) -> str | None:
        """Once finished: why the job failed (``None`` when it succeeded)."""

    def launcher_log(self) -> str | None:
        """The launcher's own log of the job, where there is one (e.g. submitit's output files)."""
        return None


class Launcher(abc.ABC):
    """Submits jobs of runs; see the module docstring for what every launcher guarantees."""

    def __init__(self, options: LauncherOptions, out: Path) -> None:
        self.options = options
        self.out = out

    @abc.abstractmethod
    def submit(self, jobs: Sequence[Sequence[StudyRun]]) -> list[Submission]:
        """Submit every job (a job runs its runs in order with
        :func:`~avalanche_exmask.study.runs.execute_runs`)."""

    def close(self) -> None:  # noqa: B027 -- an optional hook: launchers that hold nothing keep this no-op
        """Release what the launcher holds (after every job finished)."""


def make_launcher(options: LauncherOptions, out: Path) -> Launcher:
    """The launcher ``options.name`` names.

    :raises SystemExit: saying how to install them, when submitit or Ray is missing.
    """
    chosen: type[Launcher]
    try:
        if options.name == "submitit":
            from avalanche_exmask.study.submitit_launcher import SubmititLauncher as chosen
        elif options.name == "ray":
            from avalanche_exmask.study.ray_launcher import RayLauncher as chosen
        else:
            from avalanche_exmask.study.local_launcher import LocalLauncher as chosen
    except ImportError as error:
        raise SystemExit(f"error: the {options.name} launcher needs {error.name}: {INSTALL_HINT}") from None
    return chosen(options, out)


def pack_jobs(runs: Sequence[StudyRun], job_per: str) -> list[list[StudyRun]]:
    """``runs`` cut into jobs, order kept: one run per job (``run``), or the consecutive runs of
    one results folder (group) and seed (``seed``)."""
    if job_per == "run":
        return [[run] for run in runs]
    jobs: list[list[StudyRun]] = []
    for run in runs:
        key = (run.results.parent, run.values.get("seed"))
        if jobs and (jobs[-1][0].results.parent, jobs[-1][0].values.get("seed")) == key:
            jobs[-1].append(run)
        else:
            jobs.append([run])
    return jobs


@dataclasses.dataclass
class StudyReport:
    """What a launch did: runs planned, skipped (results existed), done, failed (results path ->
    where to look), missing (planned runs without results at the end) and the wall time."""

    planned: int
    skipped: int
    done: int
    failed: dict[str, str]
    missing: int
    wall_seconds: float

    def summary(self) -> str:
        """The report as one JSON line."""
        return json.dumps({"runs": self.planned, "skipped": self.skipped, "done": self.done, "failed": len(self.failed),
                           "missing": self.missing, "wall_seconds": round(self.wall_seconds, 1)})


def launch_study(runs: Sequence[StudyRun], options: LauncherOptions, out: Path, *,
                 say: Callable[[str], None] = print) -> StudyReport:
    """Validate every run, skip those with results, submit the rest with the launcher of
    ``options`` (made only then) and follow them to the end (see the module docstring).

    :raises ConfigError: for a run that cannot be submitted, before any is.
    :raises SystemExit: when the launcher's library is missing (:func:`make_launcher`).
    """
    for run in runs:
        validate_run(run)
    todo = [run for run in runs if not run.results.exists()]
    say(f"{len(todo)} runs to do ({len(runs) - len(todo)} skipped: results exist); launcher {options.name}")
    start = time.monotonic()
    failed: dict[str, str] = {}
    if todo:
        launcher = make_launcher(options, out)
        try:
            failed = follow(launcher.submit(pack_jobs(todo, options.job_per)), options, say=say)
        finally:
            launcher.close()
    missing = sum(1 for run in runs if not run.results.exists())
    return StudyReport(len(runs), len(runs) - len(todo), len(todo) - missing, failed, missing, time.monotonic() - start)


def follow(submissions: Sequence[Submission], options: LauncherOptions, *, say: Callable[[str], None] = print) -> dict[str, str]:
    """Poll ``submissions`` until all have finished, printing finished runs, failures and the
    progress line; return the failed runs (results path -> log and reason)."""
    started_at = time.time()
    start = time.monotonic()
    runs = [run for submission in submissions for run in submission.runs]
    progress = StudyProgress.pending([str(run.results) for run in runs])
    failed: dict[str, str] = {}
    active = list(submissions)
    last_line = None
    last_said = start
    while True:
        changed = False
        for submission in list(active):
            ended = submission.finished()
            if ended:
                active.remove(submission)
                reason = submission.failure()
            for run in submission.runs:
                if run.results.exists():
                    if progress.set(str(run.results), "done"):
                        changed = True
                        _say_done(run, time.monotonic() - start, say)
                elif ended:
                    log = run.log if run.log.exists() else submission.launcher_log()
                    failed[str(run.results)] = f"log {log}: {reason or 'the job ended without results'}"
                    progress.set(str(run.results), "failed")
                    say(f"failed: {run.results}; log {log}; {reason or 'the job ended without results'}")
                    changed = True
                elif run.log.exists() and run.log.stat().st_mtime >= started_at - 1:
                    changed |= progress.set(str(run.results), "running")
        now = time.monotonic()
        line = progress.line(now - start)
        if not active or (changed and line != last_line) or now - last_said >= options.progress_seconds:
            say(line)
            last_line, last_said = line, now
        if not active:
            return failed
        time.sleep(options.poll_seconds)


def _say_done(run: StudyRun, elapsed: float, say: Callable[[str], None]) -> None:
    results = json.loads(run.results.read_text())
    say(f"{elapsed:7.0f} s  {run.results}: final {results['final_accuracy']:.1f}% ({results['wall_seconds']:.0f} s)")
