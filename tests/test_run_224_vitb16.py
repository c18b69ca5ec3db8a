"""The prepared 224 px / ViT-B/16 study (benchmarks/run_224_vitb16.sh): its config has ViT-B/16's
geometry, and the script runs end to end on a CPU on a tiny slice with a tiny model (no GPU, no download),
writing results, the paired table and the figure under its folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import open_clip
import yaml

from avalanche_exmask.data.model_inputs import model_geometry

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ("model.name=exmask-tiny model.pretrained=synthetic benchmark.n_experiences=2 benchmark.args.n_classes=2 "
         "benchmark.args.train_per_class=2 benchmark.args.test_per_class=1 train.epochs=1 train.batch_size=4")


def test_config_is_vit_b16_at_224_px_on_photographic_backgrounds():
    study = yaml.safe_load((ROOT / "benchmarks/configs/table1_224_vitb16.yaml").read_text())
    assert study["base"]["model"] == {"name": "ViT-B-16", "pretrained": None}
    assert study["base"]["benchmark"]["args"]["background"] == "photo"
    assert model_geometry("ViT-B-16")[0] == 224
    assert open_clip.get_model_config("ViT-B-16")["vision_cfg"]["patch_size"] == 16  # 14 x 14 = 196 patches


def test_script_runs_a_tiny_slice_on_cpu_and_writes_tables_and_figure(tmp_path):
    env = {**os.environ, "PY": sys.executable, "OUT": str(tmp_path / "out"), "DEVICE": "cpu", "SEEDS": "0",
           "THREADS": "1", "GROUPS_RUN": "paper-mrdc", "CALL_TIMEOUT": "300", "SET": SMOKE}
    done = subprocess.run(["bash", str(ROOT / "benchmarks/run_224_vitb16.sh")], env=env, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    result = tmp_path / "out" / "paper-mrdc" / "mrdc_seed0.json"
    assert result.is_file()
    assert "mrdc" in (tmp_path / "out" / "table1-224_paired.md").read_text()
    assert (tmp_path / "out" / "final_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
