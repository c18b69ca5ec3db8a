"""benchmarks/run_study.py: study files, overrides, the run plan and checkpointed runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avalanche_exmask.config import ConfigError
from avalanche_exmask.study.runs import StudyRun, execute_run

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "run_study.py"
TINY = {"n_classes": 4, "train_per_class": 6, "test_per_class": 2}


def _write(tmp_path: Path, study: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(json.dumps(study))  # JSON is YAML
    return path


def test_overrides_reach_every_group_and_plan_names_results_by_group(run_study, tmp_path):
    path = _write(tmp_path, {
        "base": {"benchmark": {"n_experiences": 2, "args": TINY}, "train": {"epochs": 1}},
        "groups": [{"name": "main", "methods": ["raw", "naive"], "seeds": [0, 1]},
                   {"name": "more", "methods": ["raw"], "seeds": [3], "set": {"train": {"epochs": 2}}}],
    })
    study = run_study.read_study(path, ["train.batch_size=8", "benchmark.args.test_per_class=3"])
    jobs = run_study.plan(study, tmp_path / "out", [], str(path))
    assert [p.relative_to(tmp_path / "out").as_posix() for _, p in jobs] == [
        "main/raw_seed0.json", "main/naive_seed0.json", "main/raw_seed1.json", "main/naive_seed1.json", "more/raw_seed3.json"]
    assert {values["train"]["batch_size"] for values, _ in jobs} == {8}
    assert {values["benchmark"]["args"]["test_per_class"] for values, _ in jobs} == {3}
    assert [values["train"]["epochs"] for values, _ in jobs] == [1, 1, 1, 1, 2]
    assert len(run_study.plan(study, tmp_path / "out", ["more"], str(path))) == 1


def test_bad_study_files_are_named(run_study, tmp_path):
    with pytest.raises(ConfigError, match="groups"):
        run_study.read_study(_write(tmp_path, {"base": {}}), [])
    with pytest.raises(ConfigError, match=r"groups\[0\] lacks seeds"):
        run_study.read_study(_write(tmp_path, {"groups": [{"name": "a", "methods": ["raw"]}]}), [])
    path = _write(tmp_path, {"groups": [{"name": "a", "methods": ["raw"], "seeds": [0]}]})
    with pytest.raises(ConfigError, match="train.epochs"):
        run_study.plan(run_study.read_study(path, ["train.epochs=one"]), tmp_path, [], str(path))


def test_a_checkpointed_run_writes_results_and_removes_its_checkpoint(run_study, tmp_path):
    path = _write(tmp_path, {
        "base": {"benchmark": {"n_experiences": 2, "args": TINY}, "model": {"pretrained": None},
                 "train": {"epochs": 1, "batch_size": 8}, "logging": {"progress": False}},
        "groups": [{"name": "g", "methods": ["raw"], "seeds": [0]}],
    })
    (values, results), = run_study.plan(run_study.read_study(path, []), tmp_path / "out", [], str(path))
    outcome = execute_run(StudyRun(values, results, checkpoint=True))
    assert outcome.results == str(results) and not outcome.skipped
    assert json.loads(results.read_text())["final_accuracy"] == pytest.approx(outcome.final_accuracy)
    assert sorted(p.name for p in (tmp_path / "out" / "g").iterdir()) == ["raw_seed0.json"]  # no checkpoint, no log
    assert execute_run(StudyRun(values, results, checkpoint=True)).skipped


def test_methods_and_seeds_filters_select_runs_within_the_chosen_groups(run_study, tmp_path):
    path = _write(tmp_path, {
        "base": {"benchmark": {"n_experiences": 2, "args": TINY}},
        "groups": [{"name": "main", "methods": ["raw", "naive", "masking"], "seeds": [0, 1, 2]},
                   {"name": "other", "methods": ["naive"], "seeds": [1]}],
    })
    study = run_study.read_study(path, [])
    jobs = run_study.plan(study, tmp_path, [], str(path), ["masking", "raw"], [1, 2])
    assert [p.relative_to(tmp_path).as_posix() for _, p in jobs] == [
        "main/raw_seed1.json", "main/masking_seed1.json", "main/raw_seed2.json", "main/masking_seed2.json"]
    assert [p.relative_to(tmp_path).as_posix() for _, p in run_study.plan(study, tmp_path, ["other"], str(path), [], [1])] == [
        "other/naive_seed1.json"]
    assert run_study.plan(study, tmp_path, ["other"], str(path), ["raw"], []) == []


def test_a_kept_checkpoint_gives_back_the_trained_model(run_study, tmp_path):
    """``--keep-checkpoints`` keeps the final checkpoint; ``load_trained_model`` rebuilds the run's
    model from it: every weight, the grown head included, is the checkpoint's."""
    from safetensors import safe_open

    from avalanche_exmask.experiment import load_trained_model
    path = _write(tmp_path, {
        "base": {"benchmark": {"n_experiences": 2, "args": TINY}, "model": {"pretrained": None},
                 "train": {"epochs": 1, "batch_size": 8}, "logging": {"progress": False}},
        "groups": [{"name": "g", "methods": ["masking"], "seeds": [0]}],
    })
    (values, results), = run_study.plan(run_study.read_study(path, []), tmp_path / "out", [], str(path))
    written = execute_run(StudyRun(values, results, checkpoint=True, keep_checkpoint=True)).results
    checkpoint = Path(written).with_suffix(".ckpt.safetensors")
    assert checkpoint.exists()
    model = load_trained_model(written)
    assert not model.training
    with safe_open(str(checkpoint), framework="pt") as saved:
        state = model.state_dict()
        assert state["classifier.classifier.weight"].shape[0] == TINY["n_classes"]
        for key, value in state.items():
            assert torch.equal(value, saved.get_tensor(f"model/{key}")), key
    checkpoint.unlink()
    with pytest.raises(ConfigError, match="keep-checkpoint"):
        load_trained_model(written)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    bad.with_suffix(".ckpt.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="bad.json is not a results file"):
        load_trained_model(bad)


@pytest.mark.parametrize("path", sorted((SCRIPT.parent / "configs").glob("*study*.yaml"))
                         + sorted((SCRIPT.parent / "configs").glob("table1_*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_study_files_validate(run_study, path, tmp_path):
    jobs = run_study.plan(run_study.read_study(path, []), tmp_path, [], str(path))
    assert jobs and len({p for _, p in jobs}) == len(jobs)
