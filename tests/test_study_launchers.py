"""benchmarks/run_study.py's launchers: local processes, submitit (its local executor) and Ray (a
local instance with 2 CPUs) give the same results files for the same runs; a run preempted or
killed mid-way resumes from its checkpoint; failures are reported with their logs."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

VOLATILE = ("wall_seconds", "train_seconds", "timings")
"""Fields of a results file that are measured, not computed: the rest must be equal between launchers."""
STUDY = {
    "base": {"benchmark": {"n_experiences": 3, "args": {"n_classes": 6, "train_per_class": 6, "test_per_class": 2}},
             "model": {"pretrained": None}, "train": {"epochs": 1, "batch_size": 8}, "logging": {"progress": False}},
    "groups": [{"name": "g", "methods": ["masking", "raw"], "seeds": [0]},
               {"name": "bad", "methods": ["raw"], "seeds": [0], "set": {"model": {"pretrained": "WEIGHTS"}}}],
    "launcher": {"poll_seconds": 0.2},
}
"""Two runs of 3 experiences (about 3 s each once imported), one that fails when it starts (its
weights, ``WEIGHTS``, a readable file that fits no model: validation reads only its header); the
launcher polls its jobs often (the study file's launcher options)."""


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("study")
    save_file({"unrelated": torch.zeros(1)}, folder / "w.safetensors")
    path = folder / "study.yaml"
    path.write_text(json.dumps(STUDY).replace('"WEIGHTS"', json.dumps(str(folder / "w.safetensors"))))
    return path


def _launch(run_study, study: Path, out: Path, capsys, *flags: str) -> tuple[int, list[str]]:
    """``run_study.py STUDY --out OUT FLAGS``: its exit status and printed lines."""
    status = run_study.main([str(study), "--out", str(out), *flags])
    return status, capsys.readouterr().out.splitlines()


def _computed(path: Path) -> dict:
    return {key: value for key, value in json.loads(path.read_text()).items() if key not in VOLATILE}


# ------------------------------------------------------------------ options, plans, progress (no process)
def _options(study: dict, *flags: str):
    from avalanche_exmask.study.launcher import add_launcher_arguments, launcher_options

    parser = argparse.ArgumentParser()
    add_launcher_arguments(parser)
    return launcher_options(study, parser.parse_args(list(flags)), "study.yaml")


def test_launcher_options_come_from_the_study_file_and_flags_override_them():
    from avalanche_exmask.config import ConfigError

    study = {"launcher": {"name": "submitit", "partition": "gpu", "gpus_per_run": 2, "threads": 4, "slurm": {"qos": "high"}}}
    options = _options(study, "--partition", "long", "--time-limit", "90")
    assert (options.name, options.partition, options.gpus_per_run, options.time_limit_min, options.slurm) == (
        "submitit", "long", 2, 90, {"qos": "high"})
    assert options.cpus() == 8  # threads x GPUs: one process per GPU
    assert _options({}, "--launcher", "ray", "--ray-address", "auto").address == "auto"
    assert _options({}).name == "local"
    with pytest.raises(ConfigError, match=r"study.yaml: unknown field\(s\) \['launcher.partitio'\]"):
        _options({"launcher": {"partitio": "gpu"}})
    with pytest.raises(ConfigError, match="launcher.name must be one of"):
        _options({"launcher": {"name": "slurm"}})


def test_slurm_jobs_get_the_options_as_sbatch_parameters(tmp_path, monkeypatch):
    """What submitit writes for SLURM (a stand-in ``srun`` on the PATH: no cluster here)."""
    from avalanche_exmask.study.launcher import LauncherOptions
    from avalanche_exmask.study.submitit_launcher import SubmititLauncher

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    options = LauncherOptions(name="submitit", cluster="slurm", partition="gpu", account="proj", gpus_per_run=4,
                              threads=8, time_limit_min=720, array_parallelism=3, slurm={"qos": "high"})
    executor = SubmititLauncher(options, tmp_path / "out").executor
    script = executor._executor._make_submission_file_text("python -c pass", "uid")
    for line in ("--partition=gpu", "--account=proj", "--gpus-per-node=4", "--cpus-per-task=32", "--time=720",
                 "--ntasks-per-node=1", "--qos=high", "--signal=USR2@"):
        assert f"#SBATCH {line}" in script, line
    assert executor.parameters["array_parallelism"] == 3
    assert str(tmp_path / "out" / ".submitit") in script


def test_jobs_hold_one_run_or_the_runs_of_one_group_and_seed_in_order(tmp_path):
    from avalanche_exmask.study.launcher import pack_jobs
    from avalanche_exmask.study.runs import StudyRun

    runs = [StudyRun({"seed": seed}, tmp_path / group / f"{method}_seed{seed}.json")
            for group in ("a", "b") for seed in (0, 1) for method in ("raw", "masking")]
    assert pack_jobs(runs, "run") == [[run] for run in runs]
    by_seed = pack_jobs(runs, "seed")
    assert [[run.results.relative_to(tmp_path).as_posix() for run in job] for job in by_seed] == [
        [f"{group}/{method}_seed{seed}.json" for method in ("raw", "masking")] for group in ("a", "b") for seed in (0, 1)]


def test_the_progress_line_counts_states_and_estimates_from_the_pace_of_finished_runs():
    from avalanche_exmask.study.progress import StudyProgress

    progress = StudyProgress.pending([f"r{k}" for k in range(6)])
    assert progress.line(30) == "study: 0/6 done, 0 running, 0 failed, 6 pending; 0:00:30 elapsed, no estimate before the first run is done"
    assert progress.set("r0", "done") and progress.set("r1", "done") and progress.set("r2", "failed") and progress.set("r3", "running")
    assert not progress.set("r3", "running")
    assert progress.line(600) == "study: 2/6 done, 1 running, 1 failed, 2 pending; 0:10:00 elapsed, about 0:15:00 left"
    with pytest.raises(ValueError):
        progress.set("r0", "lost")


def test_runs_a_launcher_cannot_take_are_refused_before_anything_is_submitted(run_study, study, tmp_path):
    from avalanche_exmask.config import ConfigError

    with pytest.raises(ConfigError, match="needs device cuda"):
        run_study.main([str(study), "--out", str(tmp_path / "out"), "--gpus-per-run", "1"])
    with pytest.raises(ConfigError, match=r"train.batch_size=8 is the global batch and must be a multiple of the 3 GPUs"):
        run_study.main([str(study), "--out", str(tmp_path / "out"), "--gpus-per-run", "3", "--set", "device=cuda"])
    assert not (tmp_path / "out").exists()


def test_a_run_on_several_processes_runs_under_torchrun_inside_its_job(tmp_path):
    """What a job does for ``gpus_per_run > 1`` (``torchrun --nproc_per_node 2``), here on the CPU
    (gloo; the launchers ask for CUDA devices): rank 0 writes the results; log and checkpoint go."""
    from avalanche_exmask.config import expand_runs
    from avalanche_exmask.study.runs import StudyRun, execute_run

    values = expand_runs({**STUDY["base"], "benchmark": {"n_experiences": 2, "args": {"n_classes": 4, "train_per_class": 6,
                                                                                        "test_per_class": 2}},
                          "methods": ["raw"], "seed": 0}, source="test")[0].to_dict()
    outcome = execute_run(StudyRun(values, tmp_path / "raw_seed0.json", gpus=2, checkpoint=True))
    results = json.loads((tmp_path / "raw_seed0.json").read_text())
    assert results["environment"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert outcome.final_accuracy == results["final_accuracy"] and not outcome.skipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw_seed0.json"]


@pytest.fixture(scope="module")
def local(run_study, study, tmp_path_factory):
    """The study through the local launcher (2 workers, 1 thread): exit status, printed lines, folder."""
    out = tmp_path_factory.mktemp("local")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = run_study.main([str(study), "--out", str(out), "--workers", "2", "--checkpoint"])
    return status, printed.getvalue().splitlines(), out


class _Interrupter(threading.Thread):
    """Waits for the first checkpoint of ``run`` (a results path), then sends ``sig`` to the process
    its log names, and keeps the log once a second attempt has written its header."""

    def __init__(self, results: Path, sig: int) -> None:
        super().__init__(daemon=True)
        self.results, self.sig, self.log_text = results, sig, ""

    def run(self) -> None:
        checkpoint, log = self.results.with_suffix(".ckpt.safetensors"), self.results.with_suffix(".log")
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        pid = int(re.search(r"--- attempt: pid (\d+)", log.read_text()).group(1))
        os.kill(pid, self.sig)
        while time.monotonic() < deadline:
            text = log.read_text() if log.exists() else ""
            if text.count("--- attempt") >= 2:
                self.log_text = text
                return
            time.sleep(0.01)


def test_local_launcher_writes_results_and_reports_the_failed_run_with_its_log(local):
    status, lines, out = local
    assert status == 1  # a run is missing
    assert lines[0] == "3 runs to do (0 skipped: results exist); launcher local"
    assert sorted(p.name for p in (out / "g").iterdir()) == ["masking_seed0.json", "raw_seed0.json"]  # no log, no checkpoint left
    assert json.loads((out / "g" / "masking_seed0.json").read_text())["buffer_sha256"]
    assert sorted(p.name for p in (out / "bad").iterdir()) == ["raw_seed0.log"]
    log = (out / "bad" / "raw_seed0.log").read_text()
    assert "--- attempt: pid" in log and re.search(r"ValueError: weights \S+w\.safetensors do not fit model config", log)
    assert f"failed: {out / 'bad' / 'raw_seed0.json'}: log {out / 'bad' / 'raw_seed0.log'}: ValueError" in "\n".join(lines)
    progress = [line for line in lines if line.startswith("study: ")]
    assert progress[-1].startswith("study: 2/3 done, 0 running, 1 failed, 0 pending; ")
    summary = json.loads(lines[-1])
    assert {key: summary[key] for key in ("runs", "skipped", "done", "failed", "missing")} == {
        "runs": 3, "skipped": 0, "done": 2, "failed": 1, "missing": 1}


def test_submitit_gives_the_local_results_and_a_preempted_run_is_requeued_and_resumed(run_study, study, local, tmp_path, capsys):
    """submitit's local executor; the masking run gets SLURM's preemption signal (USR2) after its
    first checkpoint: submitit requeues it and it resumes; raw's results exist and are skipped."""
    *_, reference = local
    out = tmp_path / "submitit"
    (out / "g").mkdir(parents=True)
    shutil.copy(reference / "g" / "raw_seed0.json", out / "g" / "raw_seed0.json")
    preempt = _Interrupter(out / "g" / "masking_seed0.json", signal.SIGUSR2)
    preempt.start()
    status, lines = _launch(run_study, study, out, capsys, "--only", "g", "--launcher", "submitit", "--cluster", "local",
                            "--checkpoint")
    preempt.join(timeout=60)
    assert status == 0, lines
    assert lines[0] == "1 runs to do (1 skipped: results exist); launcher submitit"
    assert re.search(r"--- attempt: pid \d+ .*; starting\n", preempt.log_text)
    assert f"; resuming from {out / 'g' / 'masking_seed0.ckpt.safetensors'}" in preempt.log_text
    for name in ("masking_seed0.json", "raw_seed0.json"):
        assert _computed(out / "g" / name) == _computed(reference / "g" / name), name
    assert sorted(p.name for p in (out / "g").iterdir()) == ["masking_seed0.json", "raw_seed0.json"]
    assert [line for line in lines if line.startswith("study: ")][-1].startswith("study: 1/1 done, 0 running, 0 failed, 0 pending")
    assert json.loads(lines[-1])["missing"] == 0


def test_ray_gives_the_local_results_and_a_killed_task_is_retried_and_resumed(run_study, study, local, tmp_path, capsys):
    """A local Ray instance with 2 CPUs; the masking task's worker is killed (SIGKILL) after its
    first checkpoint: Ray retries the task and the run resumes."""
    import ray

    *_, reference = local
    out = tmp_path / "ray"
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024**2, log_to_driver=False)
    try:
        kill = _Interrupter(out / "g" / "masking_seed0.json", signal.SIGKILL)
        kill.start()
        status, lines = _launch(run_study, study, out, capsys, "--only", "g", "--launcher", "ray", "--checkpoint")
        kill.join(timeout=60)
    finally:
        ray.shutdown()
    assert status == 0, lines
    assert lines[0] == "2 runs to do (0 skipped: results exist); launcher ray"
    assert f"; resuming from {out / 'g' / 'masking_seed0.ckpt.safetensors'}" in kill.log_text
    for name in ("masking_seed0.json", "raw_seed0.json"):
        assert _computed(out / "g" / name) == _computed(reference / "g" / name), name
    assert [line for line in lines if line.startswith("study: ")][-1].startswith("study: 2/2 done, 0 running, 0 failed, 0 pending")


_JOB_STATE = {"mark": "module default"}


class _MarkDataset:
    """Two items: the job process's mark, as the loader worker that reads them sees it."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> str:
        return _JOB_STATE["mark"]


def _loader_workers_see_the_job_state() -> list[str]:
    from torch.utils.data import DataLoader

    _JOB_STATE["mark"] = "set in the job"
    return list(DataLoader(_MarkDataset(), batch_size=None, num_workers=2))


def test_local_launcher_jobs_start_loader_workers_as_a_command_line_run_does(tmp_path):
    """A job's DataLoader workers start with the platform's default method (forked on Linux: they
    see the job's state), not the pool's ``spawn``: spawned loader workers each re-import torch and
    the package (a tiny run with loader workers took minutes)."""
    from avalanche_exmask.study.launcher import LauncherOptions
    from avalanche_exmask.study.local_launcher import LocalLauncher

    launcher = LocalLauncher(LauncherOptions(workers=1, threads=1), tmp_path)
    try:
        seen = launcher.pool.submit(_loader_workers_see_the_job_state).result(timeout=300)
    finally:
        launcher.close()
    assert seen == ["set in the job", "set in the job"]
