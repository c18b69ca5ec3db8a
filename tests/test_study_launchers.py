"""benchmarks/run_study.py's launchers: local processes, submitit (its local executor) and Ray (a
local instance with 2 CPUs) give the same results files for the same runs; a run preempted or
killed mid-way resumes from its checkpoint; failures are reported with their logs."""
from __future__ import annotations

import contextlib
import importlib.util
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

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "run_study.py"
VOLATILE = ("wall_seconds", "train_seconds", "timings")
"""Fields of a results file that are measured, not computed: the rest must be equal between launchers."""
STUDY = {
    "base": {"benchmark": {"n_experiences": 3, "args": {"n_classes": 6, "train_per_class": 6, "test_per_class": 2}},
             "model": {"pretrained": None}, "train": {"epochs": 1, "batch_size": 8}, "logging": {"progress": False}},
    "groups": [{"name": "g", "methods": ["masking", "raw"], "seeds": [0]},
               {"name": "bad", "methods": ["raw"], "seeds": [0], "set": {"model": {"pretrained": "/nonexistent/w.safetensors"}}}],
    "launcher": {"poll_seconds": 0.2},
}
"""Two runs of 3 experiences (about 3 s each once imported), one that fails when it starts; the
launcher polls its jobs often (the study file's launcher options)."""


@pytest.fixture(scope="module")
def run_study():
    spec = importlib.util.spec_from_file_location("run_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("study") / "study.yaml"
    path.write_text(json.dumps(STUDY))
    return path


def _launch(run_study, study: Path, out: Path, capsys, *flags: str) -> tuple[int, list[str]]:
    """``run_study.py STUDY --out OUT FLAGS``: its exit status and printed lines."""
    status = run_study.main([str(study), "--out", str(out), *flags])
    return status, capsys.readouterr().out.splitlines()


def _computed(path: Path) -> dict:
    return {key: value for key, value in json.loads(path.read_text()).items() if key not in VOLATILE}


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
    assert "--- attempt: pid" in log and "FileNotFoundError: weights file not found: /nonexistent/w.safetensors" in log
    assert f"failed: {out / 'bad' / 'raw_seed0.json'}: log {out / 'bad' / 'raw_seed0.log'}: FileNotFoundError" in "\n".join(lines)
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
