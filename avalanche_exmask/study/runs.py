"""One run of a study and how a worker executes it, whatever launched the worker.

A :class:`StudyRun` is a validated nested config, the path of its results file and how it is run
(torch threads, GPUs, checkpointing). :func:`execute_runs` is what every launcher's worker calls
with a job (one or more runs, in order):

* a run holds its lock (:class:`~avalanche_exmask.run_lock.RunLock`, ``<results>.lock``) while it
  runs: a second worker or study writing the same run is refused, naming the holder's pid; the
  temporary files a killed attempt left are removed;
* a run whose results file exists is skipped (a job requeued or retried after some of its runs
  finished does not run them again);
* a run writes everything it prints, and the traceback that ends it, to its log
  (``<results>.log``, appended to by every attempt, each starting with a header line naming the
  process, the host and whether it resumes a checkpoint); the log is removed when the run succeeds,
  so a log beside a missing results file is the record of a failed (or still running) run;
* with ``checkpoint``, a checkpoint (``<results>.ckpt.safetensors``) is written after every
  experience and an existing one is resumed (a preempted, killed or retried run continues after
  its last experience and gives the results of an uninterrupted run); it is removed at the end
  unless ``keep_checkpoint``;
* a run with ``gpus > 1`` runs under ``torchrun --standalone --nproc_per_node gpus`` on the
  worker's machine (:mod:`~avalanche_exmask.study.torchrun_entry`), one process per GPU.

Results, checkpoints and logs therefore lie at the same paths under every launcher.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import json
import os
import socket
import subprocess
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["StudyRun", "RunOutcome", "execute_runs", "execute_run", "run_in_this_process", "validate_run"]


@dataclasses.dataclass(frozen=True)
class StudyRun:
    """One run of a study.

    :param values: the run's validated nested config (a :class:`~avalanche_exmask.config.RunConfig` mapping).
    :param results: its results file.
    :param threads: torch intra-op threads of each of its processes.
    :param gpus: GPUs it trains on: 0 or 1 in the worker's own process, more under ``torchrun``
        (one process per GPU, ``device`` must then be ``cuda``).
    :param checkpoint: checkpoint after every experience and resume an existing checkpoint.
    :param keep_checkpoint: keep the final checkpoint (its trained model and buffer) beside the results.
    """

    values: dict[str, Any]
    results: Path
    threads: int = 1
    gpus: int = 0
    checkpoint: bool = False
    keep_checkpoint: bool = False

    @property
    def checkpointed(self) -> bool:
        """Whether the run checkpoints and resumes (``checkpoint`` or ``keep_checkpoint``)."""
        return self.checkpoint or self.keep_checkpoint

    @property
    def log(self) -> Path:
        """The run's log: ``<results>.log``."""
        return self.results.with_suffix(".log")

    @property
    def checkpoint_file(self) -> Path:
        """The run's checkpoint: ``<results>.ckpt.safetensors``."""
        return self.results.with_suffix(".ckpt.safetensors")


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What a worker reports of one run: its results file, final accuracy (%) and wall time (s)
    as the results file records them, and whether the file existed before (the run was skipped)."""

    results: str
    final_accuracy: float
    wall_seconds: float
    skipped: bool


def execute_runs(runs: Sequence[StudyRun]) -> list[RunOutcome]:
    """Run ``runs`` one after the other in this worker (see the module docstring).

    :raises Exception: the first run's failure (the runs after it are not started).
    """
    return [execute_run(run) for run in runs]


def execute_run(run: StudyRun) -> RunOutcome:
    """Run ``run`` unless its results file exists; its output goes to its log (see the module docstring).

    :raises subprocess.CalledProcessError: for a ``torchrun`` launch that failed (its processes'
        output is in the log).
    :raises Exception: whatever the run raised, after writing its traceback to the log.
    """
    from avalanche_exmask.output_folder import remove_stale_temporaries
    from avalanche_exmask.run_lock import RunLock

    with RunLock([run.results]):  # another worker or study writing this run is refused, naming its pid
        if run.results.exists():
            return _outcome(run, skipped=True)
        remove_stale_temporaries(run.results, run.checkpoint_file)
        _execute_locked(run)
    return _outcome(run, skipped=False)


def _execute_locked(run: StudyRun) -> None:
    """:func:`execute_run` once the run's lock is held and its results are known to be missing."""
    run.log.parent.mkdir(parents=True, exist_ok=True)
    resuming = run.checkpointed and run.checkpoint_file.exists()
    with open(run.log, "a", encoding="utf-8") as log, _output_to(log):
        print(f"--- attempt: pid {os.getpid()} on {socket.gethostname()} at "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC; "
              + (f"resuming from {run.checkpoint_file}" if resuming else "starting"), flush=True)
        try:
            if run.gpus > 1:
                _torchrun(run)
            else:
                run_in_this_process(run)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            raise
    run.log.unlink()


def run_in_this_process(run: StudyRun) -> None:
    """Train and evaluate ``run`` in this process (every rank of a ``torchrun`` launch calls this
    with the same run: rank 0 writes the results and removes the checkpoint)."""
    import torch

    from avalanche_exmask import distributed
    from avalanche_exmask.checkpoint import key_from_environment
    from avalanche_exmask.experiment import run_experiment
    from avalanche_exmask.experiment_results import save_results

    torch.set_num_threads(run.threads)
    checkpoint = run.checkpoint_file if run.checkpointed else None
    results = run_experiment(run.values, checkpoint=checkpoint, checkpoint_key=key_from_environment())
    if distributed.is_main_process():
        save_results(results, run.results)
        if checkpoint is not None and not run.keep_checkpoint:
            checkpoint.unlink(missing_ok=True)
    distributed.barrier()
    gc.collect()  # Avalanche's streams and experiences refer to each other: free this run's data before the next


def _torchrun(run: StudyRun) -> None:
    """``run`` under ``torchrun`` on this machine, one process per GPU, output to this process's."""
    description = json.dumps({**dataclasses.asdict(run), "results": str(run.results)})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(run.gpus),
               "-m", "avalanche_exmask.study.torchrun_entry", description]
    sys.stdout.flush()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(run.threads)})


def _outcome(run: StudyRun, *, skipped: bool) -> RunOutcome:
    results = json.loads(run.results.read_text())
    return RunOutcome(str(run.results), results["final_accuracy"], results["wall_seconds"], skipped)


@contextlib.contextmanager
def _output_to(log: Any) -> Iterator[None]:
    """This process's standard output and error (file descriptors 1 and 2, so that child processes
    and C extensions write there too) sent to ``log`` for the duration; restored afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in saved:
            os.close(descriptor)


def validate_run(run: StudyRun) -> None:
    """Check what a launcher cannot check once ``run`` is submitted.

    :raises ConfigError: naming the results file, for negative GPUs or fewer than one thread, a run
        on GPUs without ``device: cuda``, or (several GPUs) a global batch size that is not a
        multiple of the GPUs.
    """
    from avalanche_exmask.config_values import ConfigError

    if run.gpus < 0 or run.threads < 1:
        raise ConfigError(f"{run.results}: GPUs per run must be >= 0 and threads >= 1; got {run.gpus} and {run.threads}")
    device = str(run.values.get("device", "cpu"))
    if run.gpus >= 1 and not device.startswith("cuda"):
        raise ConfigError(f"{run.results}: a run on {run.gpus} GPU(s) needs device cuda (--set device=cuda); got {device!r}")
    if run.gpus > 1:
        for section in ("train", "eval"):
            size = run.values.get(section, {}).get("batch_size")
            if size is not None and size % run.gpus:
                raise ConfigError(f"{run.results}: {section}.batch_size={size} is the global batch and must be a "
                                  f"multiple of the {run.gpus} GPUs per run")
