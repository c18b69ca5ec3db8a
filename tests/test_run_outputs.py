"""A run's outputs (issue 26, items 2, 6 and 7): one writer per run, results never overwritten or
lost, the output folder checked before training, stale temporary files removed, and one error line
per failure on the command line."""
from __future__ import annotations

import errno
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest

from avalanche_exmask import __main__ as cli
from avalanche_exmask.config import ConfigError
from avalanche_exmask.experiment import save_results
from avalanche_exmask.output_folder import OutputFolderError, check_output_folder
from avalanche_exmask.run_lock import RunLock, RunLockedError, lock_path

TINY = (
    "method: raw\nbenchmark: {n_experiences: 2, args: {n_classes: 4, train_per_class: 4, test_per_class: 2}}\n"
    "model: {pretrained: null}\ntrain: {epochs: 1, batch_size: 8}\nlogging: {progress: false}\n"
)


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _hold_lock(results: Path) -> subprocess.Popen:
    """Another process holding ``results``' run lock until killed."""
    code = (
        "import sys, time\nfrom avalanche_exmask.run_lock import RunLock\n"
        f"RunLock([{str(results)!r}]).acquire()\nprint('held', flush=True)\ntime.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_into_the_same_place_is_refused_naming_the_holder_and_nothing_is_lost(tiny, tmp_path, capsys):
    """Two runs into one ``--out`` both exited 0 and one's results were gone. Now the run lock
    refuses the second at start (naming the holder's pid); a holder killed with SIGKILL leaves no
    stale lock; and a finished run's results are never replaced without ``--overwrite``."""
    out = tmp_path / "out"
    results = out / "tiny_raw_seed0.json"
    holder = _hold_lock(results)
    try:
        assert cli.main(["run", str(tiny), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {lock_path(results)}: another process (pid {holder.pid}) is writing this run")
        assert err.count("\n") == 1 and "Traceback" not in err
        assert not results.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    (out / ".tiny_raw_seed0.ckpt.safetensors.k1ll3d.tmp").write_bytes(b"\0" * 1024)  # a killed run's leftovers
    (out / "tiny_raw_seed0.json.tmp").write_text('{"trunc')
    assert cli.main(["run", str(tiny), "--out", str(out)]) == 0
    assert "removed" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["tiny_raw_seed0.json"]  # no lock, no temporaries left
    first = results.read_bytes()
    with pytest.raises(SystemExit, match="results exist"):
        cli.main(["run", str(tiny), "--out", str(out)])
    assert results.read_bytes() == first


def test_run_lock_is_exclusive_between_open_files_and_released_whole(tmp_path):
    results = [tmp_path / "a.json", tmp_path / "b.json"]
    with RunLock(results):
        assert lock_path(results[0]).read_text().strip() == str(os.getpid())
        with pytest.raises(RunLockedError, match=rf"b\.json\.lock: another process \(pid {os.getpid()}\)"):
            RunLock([tmp_path / "c.json", results[1]]).acquire()
        assert not lock_path(tmp_path / "c.json").exists()  # all or none: c's lock was given back
    assert not any(p.suffix == ".lock" for p in tmp_path.iterdir())


def test_results_are_never_replaced_without_overwrite(tmp_path):
    path = tmp_path / "r.json"
    save_results({"a": 1}, path)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        save_results({"a": 2}, path)
    assert json.loads(path.read_text()) == {"a": 1}
    save_results({"a": 3}, path, overwrite=True)
    assert json.loads(path.read_text()) == {"a": 3}


def _full_disk(monkeypatch) -> None:
    """Results writes fail as on a full disk, after writing part of the file."""

    class FullDisk:
        def __init__(self, path, *args, **kwargs):
            Path(path).write_text('{"partial')
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("avalanche_exmask.experiment_results.open", FullDisk, raising=False)


def test_a_failed_results_write_names_the_path_and_the_checkpoint_recovers_the_results(tiny, tmp_path, monkeypatch, capsys):
    from safetensors import safe_open

    out = tmp_path / "out"
    results, checkpoint = out / "tiny_raw_seed0.json", out / "tiny_raw_seed0.ckpt.safetensors"
    _full_disk(monkeypatch)
    with pytest.raises(SystemExit) as exit_:  # the message is the one line Python prints, with status 1
        cli.main(["run", str(tiny), "--out", str(out)])
    err = str(exit_.value)
    assert err.startswith(f"error: could not write results {results} (No space left on device)")
    assert f"kept in its checkpoint {checkpoint}" in err and "--resume" in err
    assert sorted(p.name for p in out.iterdir()) == [checkpoint.name]  # no truncated .tmp, no results
    with safe_open(checkpoint, "pt") as file:
        saved = json.loads(file.metadata()["skeleton"])["extra"]["dict"]
    monkeypatch.undo()
    assert cli.main(["run", str(tiny), "--out", str(out), "--resume"]) == 0
    assert json.loads(results.read_text())["accuracy_matrix"] == saved["accuracy_matrix"]
    assert not checkpoint.exists()
    _full_disk(monkeypatch)
    with pytest.raises(SystemExit, match="the run's results are printed above"):
        cli.main(["run", str(tiny), "--out", str(tmp_path / "bare"), "--no-checkpoint"])
    assert '"accuracy_matrix"' in capsys.readouterr().err


def test_an_unwritable_output_folder_is_refused_before_anything_trains(tiny, tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr("avalanche_exmask.experiment.run_experiment", never)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["run", str(tiny), "--out", str(blocker / "out")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {blocker / 'out'}: output folder is not writable")
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr("avalanche_exmask.output_folder.shutil.disk_usage", lambda folder: Usage(10**9, 10**9 - 1000, 1000))
    assert cli.main(["run", str(tiny), "--out", str(tmp_path / "full")]) == 1
    assert "output folder has 1000 bytes free; the run needs" in capsys.readouterr().err


def test_no_room_for_a_checkpoint_is_found_before_the_first_experience(tmp_path, monkeypatch):
    from avalanche_exmask.config import RunConfig
    from avalanche_exmask.experiment import run_experiment

    def never(self, *args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr("avalanche.training.templates.SupervisedTemplate.train", never)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr("avalanche_exmask.output_folder.shutil.disk_usage", lambda folder: Usage(10**9, 0, 5 * 2**20))
    config = RunConfig.from_dict(__import__("yaml").safe_load(TINY))
    with pytest.raises(OutputFolderError, match=rf"{tmp_path}: output folder has 5242880 bytes free; the run needs \d+"):
        run_experiment(config, checkpoint=tmp_path / "run.ckpt.safetensors")


def test_check_output_folder_creates_and_probes(tmp_path):
    folder = check_output_folder(tmp_path / "a" / "b", need_nbytes=1)
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_a_fifo_checkpoint_ends_resume_with_one_error_line(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    fifo = out / "tiny_raw_seed0.ckpt.safetensors"
    os.mkfifo(fifo)
    start = time.monotonic()
    assert cli.main(["run", str(tiny), "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {fifo}: is a FIFO, not a regular file; refused without reading it (traceback: --debug or EXMASK_DEBUG=1)\n"
    assert time.monotonic() - start < 120


def test_errors_print_one_line_and_a_traceback_only_when_asked(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: raw\ntrain: {lr: .inf}\n")
    assert cli.main(["run", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {bad}: train.lr must be a finite number")
    with pytest.raises(ConfigError, match="train.lr"):
        cli.main(["run", str(bad), "--debug"])
    with pytest.raises(ConfigError, match="train.lr"):
        cli.main(["--debug", "run", str(bad)])
    monkeypatch.setenv("EXMASK_DEBUG", "1")
    with pytest.raises(ConfigError, match="train.lr"):
        cli.main(["run", str(bad)])
    monkeypatch.delenv("EXMASK_DEBUG")
    missing = tmp_path / "no-such-data"
    data = tmp_path / "data.yaml"
    data.write_text(
        f"method: raw\nbenchmark: {{name: image_text_folder, args: {{root: {missing}, captions: {missing}.jsonl}}}}\n"
        "model: {pretrained: null}\n"
    )
    assert cli.main(["run", str(data), "--out", str(tmp_path / "out")]) == 1  # a data-set error, raised by the generator
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(missing) in err and "Traceback" not in err


def test_a_study_with_a_run_listed_twice_is_refused_when_validated(tmp_path):
    spec = importlib.util.spec_from_file_location("run_study", Path(__file__).parents[1] / "benchmarks" / "run_study.py")
    run_study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_study)
    for groups in ([{"name": "g", "methods": ["raw"], "seeds": [0, 0]}],
                   [{"name": "g", "methods": ["raw"], "seeds": [0]}, {"name": "g", "methods": ["raw"], "seeds": [0]}]):
        path = tmp_path / "study.yaml"
        path.write_text(json.dumps({"groups": groups}))
        with pytest.raises(ConfigError, match=r"the study's runs \(results files\) lists .*raw_seed0.json more than once"):
            run_study.plan(run_study.read_study(path, []), tmp_path / "out", [], str(path))


def test_a_built_benchmark_is_freed_whole_once_unreachable():
    """Issue 26, item 7: memory grew with every benchmark built in one process. Nothing keeps a
    benchmark's data (no cache, no registry): only Avalanche's own reference cycles (streams and
    experiences refer to each other), which the cyclic GC frees; the runners collect after each run."""
    import gc
    import weakref

    from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal

    gc.collect()
    benchmark = synthetic_multimodal(n_classes=4, n_experiences=2, train_per_class=4, test_per_class=2)
    datasets = [weakref.ref(benchmark.train_dataset), weakref.ref(benchmark.test_dataset)]
    stream = weakref.ref(benchmark.train_stream)
    del benchmark
    gc.collect()
    assert all(ref() is None for ref in datasets) and stream() is None
