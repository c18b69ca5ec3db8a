"""The nested run config: complete validation before any run, overrides, refusals, the flat format."""
from __future__ import annotations

import json
import time

import pytest

from avalanche_exmask import __main__ as cli
from avalanche_exmask.config import ConfigError, RunConfig, expand_runs, from_flat, load_runs

TINY = {"n_classes": 4, "train_per_class": 6, "test_per_class": 2}


def _write(tmp_path, text, name="study.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_nested_file_expands_methods_and_seeds_and_resolves_codec_options(tmp_path):
    path = _write(tmp_path, "methods: [naive, raw, masking]\nseeds: [0, 1]\n"
                            "storage: {options: {masked: {text_rule: {mode: none}}}}\ntrain: {epochs: 1}\n")
    runs = load_runs(path)
    assert [(r.method, r.seed) for r in runs] == [("naive", 0), ("naive", 1), ("raw", 0), ("raw", 1), ("masking", 0), ("masking", 1)]
    masking = runs[-1]
    assert masking.storage.options["masked"]["text_rule"]["mode"] == "none"
    assert masking.storage.options["masked"]["background_downsample"] == "patch"  # default filled in
    assert masking.storage.options["masked"]["image_rule"] == {"kind": "threshold", "tau": 1.0, "ratio": 0.3}
    assert runs[2].storage.options == {"raw": {}}  # raw records only its own codec's options
    assert all(r.train.epochs == 1 for r in runs)


@pytest.mark.parametrize(
    "text, message",
    [
        ("methods: [naive, masking]\nstorage: {options: {masked: {text_rule: {mode: bogus}}}}\n",
         "storage.options.masked.text_rule.*mode"),
        ("train: {epochs: one}\n", "train.epochs must be int; got 'one'"),
        ("train: {epoch: 2}\n", r"unknown field\(s\) \['train.epoch'\]"),
        ("method: naive\nstorage: {budget: {samples_per_class: 3}}\n", "storage.budget applies to methods with an exemplar buffer"),
        ("methods: [raw]\nstorage: {options: {jpeg: {quality: 30}}}\n", "storage.options.jpeg applies to none of the methods"),
        ("methods: [icarl]\n", "method 'icarl' is not registered"),
        ("storage: {budget: {samples_per_class: 0}}\n", "samples_per_class must be > 0"),
        ("method: naive\ntrain: {memory_batch: fixed}\n", "train.memory_batch applies to methods with an exemplar buffer"),
        ("benchmark: {name: cifar}\n", "name must be one of"),
    ],
)
def test_bad_fields_are_errors_naming_field_and_file(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as error:
        load_runs(path)
    assert str(path) in str(error.value)


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    path = _write(tmp_path, "method: raw\ntrain: {epochs: 1\n")
    with pytest.raises(ConfigError, match=r"study.yaml: line \d+, column \d+: malformed YAML"):
        load_runs(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_runs(tmp_path / "missing.yaml")


def test_overrides_replace_lists_and_reach_nested_fields(tmp_path):
    path = _write(tmp_path, "methods: [naive, raw]\nseeds: [0, 1, 2]\n")
    runs = load_runs(path, ["seed=5", "method=raw", "train.epochs=3", "storage.budget.samples_per_class=2"])
    assert [(r.method, r.seed) for r in runs] == [("raw", 5)]
    assert runs[0].train.epochs == 3 and runs[0].storage.budget.samples_per_class == 2.0
    assert [r.seed for r in load_runs(path, ["seeds=[7, 8]"])] == [7, 8] * 2
    with pytest.raises(ConfigError, match="path=value"):
        load_runs(path, ["epochs"])


def test_flat_format_of_earlier_versions_is_converted():
    nested = from_flat({"methods": ["masking"], "samples_per_class": 3, "text_mode": "none", "epochs": 2, "jpeg_quality": 40})
    assert nested["storage"]["budget"]["samples_per_class"] == 3
    assert nested["storage"]["options"]["masked"]["text_rule"]["mode"] == "none"
    [run] = expand_runs({"method": "masking", "samples_per_class": 3, "text_mode": "none", "n_experiences": 2})
    assert run.storage.budget.samples_per_class == 3.0 and run.benchmark.n_experiences == 2
    with pytest.raises(ConfigError, match="unknown field 'epochz'"):
        from_flat({"epochz": 1})


def test_run_config_round_trips_through_its_dict():
    config = RunConfig.from_dict({"method": "raw", "train": {"epochs": 2}})
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_cli_validates_every_run_before_the_first_and_refuses_to_overwrite(tmp_path, capsys):
    bad = _write(tmp_path, "methods: [naive, masking]\nstorage: {options: {masked: {text_rule: {mode: bogus}}}}\n")
    assert cli.main(["run", str(bad), "--out", str(tmp_path / "out")]) == 1
    assert "text_rule" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # naive did not run first
    good = _write(
        tmp_path,
        "methods: [naive, raw]\nbenchmark: {n_experiences: 2, args: {n_classes: 4, train_per_class: 6, test_per_class: 2}}\n"
        "model: {pretrained: null}\ntrain: {epochs: 1, batch_size: 8}\nlogging: {progress: false}\n",
        "tiny.yaml",
    )
    assert cli.main(["run", str(good), "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tiny_naive_seed0.json", "tiny_raw_seed0.json"]
    assert "final acc" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="results exist"):
        cli.main(["run", str(good), "--out", str(tmp_path / "out")])


#: Item 5 of issue 26 (and item 3's batch size): configs that validation used to accept and
#: that then failed about 10 s in with a traceback naming no field (or hung, or trained to NaN).
HOSTILE = [
    ("train: {lr: .inf}\n", r"train\.lr must be a finite number; got inf"),
    ("storage: {budget: {samples_per_class: .inf}}\n", r"storage\.budget\.samples_per_class must be a finite number"),
    ("seed: -1\n", r"seed must be in \[0, 4294967295\]; got -1"),
    ("seed: 1e23\n", r"seed must be int; got '1e23'"),
    ("benchmark: {args: {n_classes: four}}\n", r"benchmark\.args\.n_classes must be an int; got 'four'"),
    ("benchmark: {args: {train_per_class: 0}}\n", r"benchmark\.args\.train_per_class must be a number >= 1; got 0"),
    ("benchmark: {args: {class_order: [[0, 1], [2, 3]]}}\n", r"benchmark\.args\.class_order must be a list of an int"),
    ("benchmark: {args: {n_clases: 4}}\n", r"benchmark\.args\.n_clases: synthetic takes no argument 'n_clases'"),
    ("device: quantum\n", r"device 'quantum' is not a device"),
    ("device: 'cuda:99'\n", r"device 'cuda:99': this machine has \d+ CUDA device"),
    ("benchmark: {args: {class_order: " + "[" * 5000 + "]" * 5000 + "}}\n", r"nested too deeply"),
    ("model: {pretrained: /etc/passwd}\n", r"model\.pretrained: weights /etc/passwd is neither a safetensors file nor a torch file"),
    ("train: {batch_size: 10000000000000}\n", r"train: batch_size must be >= 1 and <= 1048576"),
]


def test_hostile_configs_are_refused_at_load_in_under_a_second_naming_the_field(tmp_path):
    load_runs(_write(tmp_path, "method: masking\n", "warm.yaml"))  # imports done once, as in the CLI
    for k, (text, message) in enumerate(HOSTILE):
        path = _write(tmp_path, "method: masking\n" + text, f"hostile{k}.yaml")
        start = time.perf_counter()
        with pytest.raises(ConfigError, match=message) as error:
            load_runs(path)
        assert time.perf_counter() - start < 1.0, text[:40]
        assert str(path) in str(error.value)


def test_cuda_without_a_gpu_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"device 'cuda': this machine has 0 CUDA device"):
        load_runs(_write(tmp_path, "method: raw\ndevice: cuda\n"))


def test_numbers_typed_as_a_person_types_them_are_accepted(tmp_path):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; a float field takes it as the number."""
    [run] = load_runs(_write(tmp_path, "method: raw\ntrain: {lr: 1e-3}\nstorage: {budget: {samples_per_class: 2E+0}}\n"))
    assert run.train.lr == 0.001 and run.storage.budget.samples_per_class == 2.0
    with pytest.raises(ConfigError, match=r"train\.lr must be a finite number; got 'fast'"):
        load_runs(_write(tmp_path, "method: raw\ntrain: {lr: fast}\n"))


def test_weights_files_are_checked_from_their_header(tmp_path):
    import torch
    from safetensors.torch import save_file

    good = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2)}, good)
    assert load_runs(_write(tmp_path, f"method: raw\nmodel: {{pretrained: {good}}}\n"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(ConfigError, match=r"model\.pretrained: weights .*bad\.safetensors is not a readable safetensors"):
        load_runs(_write(tmp_path, f"method: raw\nmodel: {{pretrained: {bad}}}\n"))
    with pytest.raises(ConfigError, match=r"model\.pretrained: weights file not found"):
        load_runs(_write(tmp_path, f"method: raw\nmodel: {{pretrained: {tmp_path / 'missing.pt'}}}\n"))
    with pytest.raises(ConfigError, match=r"model\.pretrained: 'no-such-tag' is neither a weights file nor a tag"):
        load_runs(_write(tmp_path, "method: raw\nmodel: {pretrained: no-such-tag}\n"))


def test_a_run_listed_twice_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="seeds lists 0 more than once"):
        load_runs(_write(tmp_path, "method: raw\nseeds: [0, 0]\n"))
    with pytest.raises(ConfigError, match="methods lists raw more than once"):
        load_runs(_write(tmp_path, "methods: [raw, naive, raw]\n"))


def test_run_experiment_checks_the_machine_it_runs_on():
    """A study validated on one machine may run on another: its worker checks device and weights."""
    from avalanche_exmask.experiment import run_experiment

    with pytest.raises(ConfigError, match=r"device 'quantum' is not a device"):
        run_experiment(RunConfig.from_dict({"method": "raw", "device": "quantum"}))
    with pytest.raises(ConfigError, match=r"model\.pretrained: weights /etc/passwd is neither"):
        run_experiment(RunConfig.from_dict({"method": "raw", "model": {"pretrained": "/etc/passwd"}}))


def test_a_bad_section_value_or_seed_is_named_before_the_methods_are_loaded(monkeypatch):
    """Section fields and seeds are checked before the registry imports the methods (and Avalanche)."""
    from avalanche_exmask import registry
    from avalanche_exmask.config import ConfigError, expand_runs

    def no_methods_yet():
        raise AssertionError("the registry was loaded before the config was checked")

    monkeypatch.setattr(registry, "builtin_entries", no_methods_yet)
    for values, field in (({"train": {"lr": float("inf")}}, "train.lr"), ({"seeds": [0, -1]}, "seed"),
                          ({"storage": {"budget": {"samples_per_class": 0}}}, "samples_per_class")):
        with pytest.raises(ConfigError, match=field):
            expand_runs({"method": "raw", **values}, source="x.yaml")
