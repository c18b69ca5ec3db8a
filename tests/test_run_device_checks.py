"""The prepared GPU call (benchmarks/run_device_checks.sh) rehearsed on a CPU on a tiny slice: every part
runs under its own timeout, a failing part leaves the others' results, and what comes back is the log,
the JSON files and the pilot's folder packed in one archive."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_call_rehearsed_on_a_cpu_writes_each_part_and_survives_a_failing_one(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PY": sys.executable, "OUT": str(out), "DEVICE": "cpu", "WHEELS": "none", "LIMIT": "400",
           "OMP_NUM_THREADS": "1",
           "OVERHEAD_ARGS": "--geometries 64 --decode-only",
           "SCALE_ARGS": "--no-such-flag",  # scale.py refuses it: the part fails, the pilot still runs
           "PILOT_GROUPS": "paper-mrdc",
           "PILOT_SET": "model.name=exmask-tiny model.pretrained=synthetic benchmark.args.n_classes=3 "
                        "benchmark.args.train_per_class=2 benchmark.args.test_per_class=1 train.batch_size=4"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks/run_device_checks.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (out / "device-log.txt").read_text()
    assert "=== overhead: status 0" in log and "=== pilot-224: status 0" in log
    assert "=== scale: status 2" in log  # argparse's exit status for an unknown flag
    rates = json.loads((out / "overhead-gpu-vitb16.json").read_text())["geometries"]["64px"]["decode_records_per_s"]
    assert rates["raw"] > 0 and rates["masked (JPEG q50 patches)"] > 0
    with tarfile.open(out / "study-224-pilot.tar.gz") as archive:
        result = json.load(archive.extractfile("study/paper-mrdc/mrdc_seed0.json"))
    assert result["config"]["benchmark"]["args"]["n_classes"] == 3 and len(result["accuracy_matrix"]) == 3
    assert not (out / "study").exists()
