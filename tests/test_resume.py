"""Resuming a run (issue 26, items 1 and 4): a checkpoint records the run's config and resumes only
the run that wrote it; every scalar of its saved state is checked before anything is loaded."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from avalanche_exmask import checkpoint_file
from avalanche_exmask.checkpoint import CheckpointError
from avalanche_exmask.config import RunConfig
from avalanche_exmask.experiment import run_experiment
from avalanche_exmask.resume import RESUME_FREE_FIELDS, check_run_state, training_fingerprint

BASE = {
    "method": "masking", "model": {"pretrained": None}, "logging": {"progress": False},
    "benchmark": {"n_experiences": 2, "args": {"n_classes": 4, "train_per_class": 4, "test_per_class": 2}},
    "train": {"epochs": 1, "batch_size": 8, "lr": 0.003}, "storage": {"budget": {"samples_per_class": 2}},
}


def _config(**changes) -> RunConfig:
    values = json.loads(json.dumps(BASE))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return RunConfig.from_dict(values)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run's results and its final checkpoint (next_experience 2 of 2)."""
    path = tmp_path_factory.mktemp("resume") / "run.ckpt.safetensors"
    return run_experiment(_config(), checkpoint=path), path


def _copy(path: Path, tmp_path: Path) -> Path:
    target = tmp_path / path.name
    shutil.copyfile(path, target)
    return target


def _extra(path: Path) -> dict:
    with safe_open(path, "pt") as file:
        return json.loads(file.metadata()["skeleton"])["extra"]["dict"]


def _plain(value):
    """A skeleton value without its ``{"dict": ...}`` / ``{"tuple": ...}`` tags."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("dict", "tuple"):
        inner = next(iter(value.values()))
        return {k: _plain(v) for k, v in inner.items()} if isinstance(inner, dict) else [_plain(v) for v in inner]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _forge(path: Path, **changes) -> None:
    """Rewrite the checkpoint's extra state with ``changes``, re-signing its (unkeyed) digest."""
    with safe_open(path, "pt") as file:
        metadata = file.metadata()
        tensors = {name: file.get_tensor(name) for name in file.keys()}
    skeleton = json.loads(metadata["skeleton"])
    skeleton["extra"]["dict"].update(changes)
    text = json.dumps(skeleton)
    metadata.update(skeleton=text, sha256=checkpoint_file.file_digest(text, tensors))
    save_file(tensors, path, metadata=metadata)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"train__lr": 0.001}, r"train\.lr is 0\.003 in the checkpoint and 0\.001 now"),
        ({"train__epochs": 2}, r"train\.epochs is 1 in the checkpoint and 2 now"),
        ({"storage__options": {"masked": {"image_rule": {"kind": "ratio"}}}},
         r'storage\.options\.masked\.image_rule\.kind is "threshold" in the checkpoint and "ratio" now'),
        ({"model__pretrained": "synthetic"}, r'model\.pretrained is null in the checkpoint and "synthetic" now'),
        ({"benchmark__args": {"n_classes": 4, "train_per_class": 5, "test_per_class": 2}},
         r"benchmark\.args\.train_per_class is 4 in the checkpoint and 5 now"),
        ({"benchmark__n_experiences": 4, "benchmark__args": {"n_classes": 4, "train_per_class": 4, "test_per_class": 2}},
         r"benchmark\.n_experiences is 2 in the checkpoint and 4 now"),
    ],
)
def test_resume_with_a_training_change_is_refused_naming_the_field_and_both_values(finished, tmp_path, changes, message):
    path = _copy(finished[1], tmp_path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=message) as error:
        run_experiment(_config(**changes), checkpoint=path)
    assert str(path) in str(error.value) and "--overwrite" in str(error.value)
    assert path.read_bytes() == before


def test_resume_may_change_logging_and_data_loading(finished, tmp_path):
    results, saved = finished
    path = _copy(saved, tmp_path)
    changed = _config(logging={"progress": False, "csv": str(tmp_path / "logs")}, loader={"pin_memory": False})
    assert training_fingerprint(changed.to_dict()) == training_fingerprint(_config().to_dict())
    resumed = run_experiment(changed, checkpoint=path)
    assert resumed["accuracy_matrix"] == results["accuracy_matrix"]
    assert resumed["config"]["logging"]["csv"] == str(tmp_path / "logs")
    assert "logging" in RESUME_FREE_FIELDS and "loader.num_workers" in RESUME_FREE_FIELDS


def test_a_forged_next_experience_never_reaches_the_results(finished, tmp_path):
    """A file re-signed with a recomputed (unkeyed) digest used to write its forged matrix as results."""
    path = _copy(finished[1], tmp_path)
    _forge(path, next_experience=99)
    with pytest.raises(CheckpointError, match=r"next_experience must be an int in \[1, 2\]; the checkpoint holds 99"):
        run_experiment(_config(), checkpoint=path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"next_experience": 99}, r"next_experience must be an int in \[1, 2\]; the checkpoint holds 99"),
        ({"next_experience": "x"}, r"next_experience must be an int in \[1, 2\]; the checkpoint holds \"x\""),
        ({"next_experience": -2}, r"next_experience must be an int in \[1, 2\]; the checkpoint holds -2"),
        ({"next_experience": True}, r"next_experience must be an int"),
        ({"next_experience": 1}, r"accuracy_matrix must be a list of 1 entries \(next_experience 1\); the checkpoint's has 2"),
        ({"accuracy_matrix": [[50.0], [float("nan"), 10.0]]}, r"accuracy_matrix row 1 must hold 2 accuracies in \[0, 100\]"),
        ({"accuracy_matrix": [[50.0], [101.0, 10.0]]}, r"accuracy_matrix row 1 must hold 2 accuracies in \[0, 100\]"),
        ({"class_accuracy_matrix": [{"0": 1.0}, {"x": 1.0}]}, r"class_accuracy_matrix row 1 must map class ids"),
        ({"train_seconds": [1.0, -5.0]}, r"train_seconds must be finite numbers >= 0"),
        ({"config_sha256": "0" * 64}, r"the checkpoint's config does not match its recorded hash"),
        ({"config": None}, r"records no run config"),
    ],
)
def test_every_scalar_of_the_saved_state_is_checked(finished, changes, message):
    extra = {key: _plain(value) for key, value in _extra(finished[1]).items()}
    assert check_run_state(extra, _config(), 2) is None
    with pytest.raises(ValueError, match=message):
        check_run_state({**extra, **changes}, _config(), 2)
