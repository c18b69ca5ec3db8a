"""Checkpoints without pickle: a round trip that loses nothing, atomic saves, refused bad files."""
from __future__ import annotations

import json
import os
import pickle
import random
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin
from safetensors import safe_open
from safetensors.torch import save_file
from storage_fakes import TinyMaskingModel, random_sample

from avalanche_exmask import checkpoint_file
from avalanche_exmask.benchmarks.common import build_class_incremental
from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
from avalanche_exmask.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_strategy_checkpoint,
    save_checkpoint,
    save_strategy_checkpoint,
)
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.storage.budget import budget_from_samples_per_class
from avalanche_exmask.storage.buffer import ByteBudgetBuffer
from avalanche_exmask.storage.codecs import CimCodec, JpegCodec, MaskedCodec, RawCodec
from avalanche_exmask.training.strategy import ExemplarMasking


@pytest.fixture(scope="module")
def benchmark():
    return synthetic_multimodal(n_classes=4, n_experiences=2, train_per_class=8, test_per_class=3, seed=3)


def _strategy(seed: int) -> ExemplarMasking:
    """A fresh ExemplarMasking on a randomly initialised tiny model (weights drawn from ``seed``)."""
    torch.manual_seed(seed)
    model = MultimodalCLIPClassifier(pretrained=None)
    budget = budget_from_samples_per_class(2, 4, model.image_size, model.context_length)
    return ExemplarMasking(
        model=model,
        optimizer=torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3),
        mem_size=budget,
        train_mb_size=8,
        train_epochs=1,
        evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
    )


def _records(buffer: ByteBudgetBuffer) -> list[tuple[int, str, bytes, tuple, dict]]:
    return [
        (label, type(r).__name__, r.data, tuple(r.layout), r.to_state())
        for label, group in buffer.records.items()
        for r in group
    ]


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def _assert_same_optimizer(a: torch.optim.Optimizer, b: torch.optim.Optimizer, model_a, model_b) -> None:
    names_a = {id(p): n for n, p in model_a.named_parameters()}
    names_b = {id(p): n for n, p in model_b.named_parameters()}
    assert [[names_a[id(p)] for p in g["params"]] for g in a.param_groups] == [
        [names_b[id(p)] for p in g["params"]] for g in b.param_groups
    ]
    assert [{k: v for k, v in g.items() if k != "params"} for g in a.param_groups] == [
        {k: v for k, v in g.items() if k != "params"} for g in b.param_groups
    ]
    state_a = {names_a[id(p)]: s for p, s in a.state.items()}
    state_b = {names_b[id(p)]: s for p, s in b.state.items()}
    assert state_a.keys() == state_b.keys() and state_a
    for name in state_a:
        _assert_same_tensors(state_a[name], state_b[name])


@pytest.fixture(scope="module")
def trained(benchmark, tmp_path_factory):
    """A strategy trained on experience 0 and its checkpoint (RNG states as at the save)."""
    strategy = _strategy(seed=0)
    strategy.train(benchmark.train_stream[0])
    path = tmp_path_factory.mktemp("ckpt") / "run.safetensors"
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    save_strategy_checkpoint(path, strategy, extra={"next_experience": 1, "accuracy_matrix": [[81.25]]})
    return strategy, path


def test_round_trip_restores_model_optimizer_buffer_and_training_continues_identically(benchmark, trained):
    strategy, path = trained
    fresh = _strategy(seed=1)  # other weights, an empty optimizer state and buffer, and a head of 2 units ...
    assert fresh.model.classifier.classifier.out_features == 2
    extra = load_strategy_checkpoint(path, fresh)
    assert fresh.model.classifier.classifier.out_features == 4  # ... grown to the 4 of classes {2, 3}
    assert extra == {"next_experience": 1, "accuracy_matrix": [[81.25]]}
    _assert_same_tensors(strategy.model.state_dict(), fresh.model.state_dict())
    _assert_same_optimizer(strategy.optimizer, fresh.optimizer, strategy.model, fresh.model)
    assert _records(fresh.buffer) == _records(strategy.buffer)
    assert len(fresh.buffer.buffer) == len(strategy.buffer.buffer)
    assert fresh.clock.train_exp_counter == strategy.clock.train_exp_counter == 1
    # experience 1, from the restored state and from the uninterrupted one, with the RNG of the save
    fresh.train(benchmark.train_stream[1])
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    strategy.train(benchmark.train_stream[1])
    _assert_same_tensors(strategy.model.state_dict(), fresh.model.state_dict())
    assert _records(fresh.buffer) == _records(strategy.buffer)


def test_plain_api_round_trip_of_the_strategy_parts(trained, tmp_path):
    strategy, _ = trained
    path = tmp_path / "parts.safetensors"
    save_checkpoint(path, model=strategy.model, optimizer=strategy.optimizer, buffer=strategy.buffer, extra={"k": 1})
    fresh = _strategy(seed=2)
    assert load_checkpoint(path, model=fresh.model, optimizer=fresh.optimizer, buffer=fresh.buffer) == {"k": 1}
    _assert_same_tensors(strategy.model.state_dict(), fresh.model.state_dict())
    _assert_same_optimizer(strategy.optimizer, fresh.optimizer, strategy.model, fresh.model)
    assert _records(fresh.buffer) == _records(strategy.buffer)
    other_budget = _strategy(seed=2)
    other_budget.buffer.max_size += 1
    with pytest.raises(CheckpointError, match=r"buffer budget is \d+ bytes"):
        load_checkpoint(path, model=other_budget.model, buffer=other_budget.buffer)


def test_load_restores_the_global_rng_states(trained):
    _, path = trained
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    load_checkpoint(path, model=_strategy(seed=1).model, restore_rng=True)
    after = (torch.rand(3), random.random(), np.random.rand())
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    assert torch.equal(after[0], torch.rand(3)) and after[1:] == (random.random(), np.random.rand())


class _Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def _filled_buffer(codec, seed: int = 5) -> ByteBudgetBuffer:
    """A buffer of ``codec`` records of two classes, selected at random (seeded)."""
    generator = torch.Generator().manual_seed(0)
    items = _Items([(random_sample(32, 12, 5, generator), label) for label in (0, 1) for _ in range(3)])
    targets = [label for _, label in items.items]
    bench = build_class_incremental(items, items, targets, targets, n_experiences=1)
    buffer = ByteBudgetBuffer(max_size=20_000, codec=codec, selection="random", seed=seed)
    buffer.update(SimpleNamespace(model=TinyMaskingModel(2, 8), device="cpu", experience=bench.train_stream[0]))
    return buffer


@pytest.mark.parametrize(
    "codec",
    [RawCodec(), JpegCodec(quality=40), CimCodec(patch_size=8), MaskedCodec(patch_size=8),
     MaskedCodec(patch_size=8, patch_jpeg_quality=50)],
    ids=["raw", "jpeg", "cim", "masked", "masked-jpeg-patches"],
)
def test_every_record_type_round_trips(tmp_path, codec):
    buffer = _filled_buffer(codec)
    assert len(buffer.buffer) > 2
    path = tmp_path / "b.safetensors"
    save_checkpoint(path, model=torch.nn.Linear(2, 2), optimizer=None, buffer=buffer)
    restored = ByteBudgetBuffer(max_size=buffer.max_size, codec=codec, selection="random", seed=0)
    load_checkpoint(path, model=torch.nn.Linear(2, 2), buffer=restored)
    assert _records(restored) == _records(buffer) and len(restored.buffer) == len(buffer.buffer)
    assert torch.equal(restored._generator.get_state(), buffer._generator.get_state())
    for (a, *_), (b, *_) in zip(restored.buffer, buffer.buffer, strict=True):
        assert torch.equal(a.image, b.image) and torch.equal(a.input_ids, b.input_ids)


def test_layouts_written_before_a_field_was_added_load_with_its_default(tmp_path):
    """A file whose masked layouts lack ``patch_jpeg_quality`` (written before it existed) loads,
    the records read as raw-pixel patches; a layout lacking a field *without* a default is refused."""
    codec = MaskedCodec(patch_size=8)
    buffer = _filled_buffer(codec)
    path = tmp_path / "old.safetensors"
    save_checkpoint(path, model=torch.nn.Linear(2, 2), optimizer=None, buffer=buffer)

    def without_new_field(skeleton):
        for layout in skeleton["buffer"]["layouts"]:
            del layout["fields"]["patch_jpeg_quality"]

    _rewrite(path, without_new_field)
    restored = ByteBudgetBuffer(max_size=buffer.max_size, codec=codec, selection="random", seed=0)
    load_checkpoint(path, model=torch.nn.Linear(2, 2), buffer=restored, restore_rng=False)
    assert _records(restored) == _records(buffer)

    def without_required_field(skeleton):
        for layout in skeleton["buffer"]["layouts"]:
            del layout["fields"]["context_length"]

    _rewrite(path, without_required_field)
    with pytest.raises(CheckpointError, match="malformed MaskedLayout fields"):
        load_checkpoint(path, model=torch.nn.Linear(2, 2), buffer=ByteBudgetBuffer(
            max_size=buffer.max_size, codec=codec, selection="random", seed=0), restore_rng=False)


def test_scheduler_and_extra_tensors_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    path = tmp_path / "s.safetensors"
    extra = {"matrix": torch.arange(6.0).reshape(2, 3), "pair": (1, "a"), "nested": {"x": [None, True, 2.5]}}
    save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, extra=extra)
    model2 = torch.nn.Linear(3, 2)
    optimizer2 = torch.optim.SGD(model2.parameters(), lr=1.0)
    scheduler2 = torch.optim.lr_scheduler.StepLR(optimizer2, step_size=9)
    loaded = load_checkpoint(path, model=model2, optimizer=optimizer2, scheduler=scheduler2, restore_rng=False)
    assert torch.equal(loaded["matrix"], extra["matrix"]) and loaded["pair"] == (1, "a")
    assert loaded["nested"] == extra["nested"]
    assert scheduler2.state_dict() == scheduler.state_dict()
    _assert_same_optimizer(optimizer, optimizer2, model, model2)
    with pytest.raises(TypeError, match="cannot store a set"):
        save_checkpoint(tmp_path / "bad.safetensors", model=model, optimizer=None, extra={"s": {1}})
    assert not (tmp_path / "bad.safetensors").exists()


def _rewrite(path: Path, edit) -> None:
    """Rewrite ``path`` with ``edit(skeleton dict)`` applied, re-signing the digest (a well-formed file)."""
    with safe_open(path, "pt") as file:
        metadata = file.metadata()
        tensors = {name: file.get_tensor(name) for name in file.keys()}
    skeleton = json.loads(metadata["skeleton"])
    edit(skeleton)
    text = json.dumps(skeleton)
    metadata.update(skeleton=text, sha256=checkpoint_file.file_digest(text, tensors))
    save_file(tensors, path, metadata=metadata)


def _copy(path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy.safetensors"
    target.write_bytes(path.read_bytes())
    return target


def _unchanged_after_refusal(path: Path, match: str) -> None:
    strategy = _strategy(seed=1)
    before = {k: v.clone() for k, v in strategy.model.state_dict().items()}
    rng = torch.get_rng_state()
    with pytest.raises(CheckpointError, match=match):
        load_strategy_checkpoint(path, strategy)
    _assert_same_tensors(before, strategy.model.state_dict())
    assert strategy.buffer.records == {} and torch.equal(rng, torch.get_rng_state())


def test_truncated_checkpoint_names_the_file(trained, tmp_path):
    path = _copy(trained[1], tmp_path)
    path.write_bytes(path.read_bytes()[:-7])
    _unchanged_after_refusal(path, f"{path}: not a readable checkpoint")


def test_tampered_skeleton_or_tensor_is_refused(trained, tmp_path):
    path = _copy(trained[1], tmp_path)
    data = bytearray(path.read_bytes())
    header = data[8 : 8 + struct.unpack("<Q", data[:8])[0]].decode()
    position = 8 + header.index('\\"next_experience\\":1') + len('\\"next_experience\\":')
    data[position : position + 1] = b"7"  # still valid JSON, same length
    path.write_bytes(bytes(data))
    _unchanged_after_refusal(path, f"{path}: digest mismatch")
    path = _copy(trained[1], tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # a flipped bit in the last tensor
    path.write_bytes(bytes(data))
    _unchanged_after_refusal(path, "digest mismatch")


def test_well_formed_but_inconsistent_skeleton_is_refused_before_any_change(trained, tmp_path):
    path = _copy(trained[1], tmp_path)

    def outside_allow_list(skeleton):
        skeleton["buffer"]["classes"][0]["records"][0]["type"] = "os.system"

    _rewrite(path, outside_allow_list)
    _unchanged_after_refusal(path, r"record type 'os.system' is not one of")

    path = _copy(trained[1], tmp_path)

    def shorter_record(skeleton):
        skeleton["buffer"]["classes"][-1]["records"][-1]["nbytes"] -= 1

    _rewrite(path, shorter_record)
    _unchanged_after_refusal(path, r"class \d+, record \d+ does not decode \(token section of")


def test_pickle_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name, write in (("raw.pkl", lambda p: p.write_bytes(pickle.dumps(Payload()))),
                        ("torch.pt", lambda p: torch.save({"state": Payload()}, p))):
        path = tmp_path / name
        write(path)
        with pytest.raises(CheckpointError, match=f"{path}: not a readable checkpoint"):
            load_checkpoint(path, model=torch.nn.Linear(2, 2))
    assert not marker.exists()


def test_interrupted_save_keeps_the_previous_checkpoint_and_leaves_no_temporary(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "run.safetensors"
    save_checkpoint(path, model=model, optimizer=None, extra={"next_experience": 1})
    previous = path.read_bytes()

    def failing_writer(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_file, "save_file", failing_writer)
    with torch.no_grad():
        model.weight.add_(1)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=model, optimizer=None, extra={"next_experience": 2})
    assert path.read_bytes() == previous and os.listdir(tmp_path) == ["run.safetensors"]
    assert load_checkpoint(path, model=torch.nn.Linear(2, 2), restore_rng=False) == {"next_experience": 1}


@pytest.mark.parametrize(
    "method, lr_schedule, codec_scores, probability",
    [("masking", "constant", "step", 1.0), ("mrdc", "cosine", "step", 1.0), ("masking", "cosine", "experience", 1.0),
     ("cim", "constant", "experience", 0.5)],
)
def test_runner_resumes_an_interrupted_run_with_the_uninterrupted_results(
    tmp_path, monkeypatch, method, lr_schedule, codec_scores, probability
):
    """The cosine schedule is built when training starts; a resumed run must still get its saved state.
    With current data scored once an experience, the resumed experience scores and encodes them again.
    With some of the current data through the codec, the resumed experience draws the same ones."""
    from avalanche_exmask.config import RunConfig
    from avalanche_exmask.experiment import run_experiment

    config = RunConfig.from_dict({
        "method": method, "model": {"pretrained": None}, "logging": {"progress": False},
        "benchmark": {"n_experiences": 3, "args": {"n_classes": 6, "train_per_class": 6, "test_per_class": 2}},
        "train": {"epochs": 1, "batch_size": 8, "lr_schedule": lr_schedule, "current_codec_scores": codec_scores,
                  "current_through_codec": probability},
        "storage": {"budget": {"samples_per_class": 2}},
    })
    whole = run_experiment(config)
    checkpoint = tmp_path / "run.ckpt.safetensors"
    real_train = __import__("avalanche.training.templates", fromlist=["SupervisedTemplate"]).SupervisedTemplate.train
    calls = {"n": 0}

    def crash_on_third(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr("avalanche.training.templates.SupervisedTemplate.train", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, checkpoint=checkpoint)
    monkeypatch.setattr("avalanche.training.templates.SupervisedTemplate.train", real_train)
    assert checkpoint.exists()
    resumed = run_experiment(config, checkpoint=checkpoint)
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    assert resumed["class_accuracy_matrix"] == whole["class_accuracy_matrix"]
    assert resumed["buffer"]["classes"] == whole["buffer"]["classes"]
    assert len(resumed["train_seconds"]) == 3


def test_exemplar_masking_refuses_pickle_and_names_the_safe_route():
    import pickle

    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
    from avalanche_exmask.training.strategy import ExemplarMasking

    model = MultimodalCLIPClassifier(pretrained=None)
    strategy = ExemplarMasking(model=model, optimizer=torch.optim.SGD(model.classifier.parameters(), lr=0.1), mem_size=100_000)
    with pytest.raises(TypeError, match="save_strategy_checkpoint"):
        pickle.dumps(strategy)


def test_run_killed_with_sigkill_resumes_to_the_uninterrupted_results(tmp_path):
    """A real kill: the CLI run in a subprocess gets SIGKILL once experience 2 of 5 is checkpointed;
    ``--resume`` then gives the accuracy matrix and the byte-identical buffer of an uninterrupted run."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "tiny.yaml"
    config.write_text(
        "method: masking\nbenchmark: {n_experiences: 5, args: {n_classes: 10, train_per_class: 8, test_per_class: 2}}\n"
        "model: {pretrained: null}\ntrain: {epochs: 1, batch_size: 8}\nlogging: {progress: false}\n"
        "storage: {budget: {samples_per_class: 2}}\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "avalanche_exmask", "run", str(config)]
    subprocess.run([*command, "--out", str(tmp_path / "whole")], env=env, check=True, capture_output=True, timeout=600)
    whole = json.loads((tmp_path / "whole" / "tiny_masking_seed0.json").read_text())

    checkpoint = tmp_path / "killed" / "tiny_masking_seed0.ckpt.safetensors"
    process = subprocess.Popen([*command, "--out", str(tmp_path / "killed")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen, deadline = set(), time.monotonic() + 300
    while len(seen) < 2 and time.monotonic() < deadline and process.poll() is None:
        if checkpoint.exists():
            seen.add(checkpoint.stat().st_ino)  # every save renames a new file into place
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(seen) >= 2 and not (tmp_path / "killed" / "tiny_masking_seed0.json").exists()
    refused = subprocess.run([*command, "--out", str(tmp_path / "killed")], env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "--resume" in refused.stderr
    subprocess.run([*command, "--out", str(tmp_path / "killed"), "--resume"], env=env, check=True, capture_output=True, timeout=600)
    resumed = json.loads((tmp_path / "killed" / "tiny_masking_seed0.json").read_text())
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    assert resumed["buffer_sha256"] == whole["buffer_sha256"]
    assert not checkpoint.exists()


def test_run_keeps_its_final_checkpoint_only_when_asked(tmp_path):
    """``run --keep-checkpoint`` leaves the last experience's checkpoint beside the results (its
    record says all experiences are done); without it the file is removed; with ``--no-checkpoint``
    the option is refused before any run starts."""
    from avalanche_exmask.__main__ import main

    config = tmp_path / "tiny.yaml"
    config.write_text(
        "method: raw\nbenchmark: {n_experiences: 2, args: {n_classes: 4, train_per_class: 4, test_per_class: 2}}\n"
        "model: {pretrained: null}\ntrain: {epochs: 1, batch_size: 8}\nlogging: {progress: false}\n"
    )
    assert main(["run", str(config), "--out", str(tmp_path / "kept"), "--keep-checkpoint"]) == 0
    kept = tmp_path / "kept" / "tiny_raw_seed0.ckpt.safetensors"
    model = MultimodalCLIPClassifier(pretrained=None)
    assert load_checkpoint(kept, model=model, restore_rng=False)["next_experience"] == 2
    assert model.classifier.classifier.weight.shape[0] == 4
    assert main(["run", str(config), "--out", str(tmp_path / "plain")]) == 0
    assert (tmp_path / "plain" / "tiny_raw_seed0.json").exists()
    assert not (tmp_path / "plain" / "tiny_raw_seed0.ckpt.safetensors").exists()
    with pytest.raises(SystemExit, match="exclude each other"):
        main(["run", str(config), "--out", str(tmp_path / "both"), "--keep-checkpoint", "--no-checkpoint"])
    assert not (tmp_path / "both").exists()


def test_a_fifo_at_the_checkpoint_path_is_refused_without_blocking(tmp_path):
    """Issue 26, item 3: a FIFO blocked ``--resume`` forever (the reader waited for a writer)."""
    import threading

    fifo = tmp_path / "run.ckpt.safetensors"
    os.mkfifo(fifo)
    outcome = {}

    def load():
        try:
            load_checkpoint(fifo, model=torch.nn.Linear(2, 2))
        except CheckpointError as error:
            outcome["error"] = str(error)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "load_checkpoint blocked on a FIFO"
    assert outcome["error"] == f"{fifo}: is a FIFO, not a regular file; refused without reading it"


def _sparse_copy(source: Path, target: Path, name: str, dtype: str, shape: list[int]) -> int:
    """``source`` rewritten with tensor ``name`` declared ``dtype`` ``shape`` (at the end of the
    data, the file extended sparsely to the declared size); the declared bytes of that tensor."""
    with safe_open(source, "pt") as file:
        metadata = file.metadata()
        tensors = {key: file.get_tensor(key) for key in file.keys() if key != name}
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for key, tensor in tensors.items():
        blob = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        dtype_name = checkpoint_file.safetensors_dtype(tensor.dtype)
        header[key] = {"dtype": dtype_name, "shape": list(tensor.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    nbytes = checkpoint_file.DTYPE_NBYTES[dtype] * int(np.prod(shape))
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(target, "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
        file.truncate(8 + len(text) + offset + nbytes)  # a hole: no disk, and no memory unless read
    return nbytes


class _CountingSafeOpen:
    """``safe_open`` that counts the tensors read through it."""

    reads = 0

    def __init__(self, *args, **kwargs):
        self._inner = safe_open(*args, **kwargs)

    def __enter__(self):
        self._file = self._inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)

    def get_tensor(self, name):
        _CountingSafeOpen.reads += 1
        return self._file.get_tensor(name)

    def __getattr__(self, name):
        return getattr(self._file, name)


def _peak_rss_reset() -> bool:
    """Reset this process's peak resident size (Linux ``clear_refs``); whether it could."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_kib(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


@pytest.mark.parametrize(
    "name, dtype, shape, message",
    [
        ("buffer/payload", "U8", [3 * 2**30], r"buffer payload is declared U8 \[3221225472\]; the buffer's budget is \d+ bytes"),
        ("extra/blob", "F32", [2**28], r"its tensors declare \d+ bytes; a checkpoint of this model holds at most \d+"),
        ("model/classifier.classifier.weight", "F32", [2**22, 256], r"optimizer state .* its parameter's is \[4194304, 256\]"),
    ],
)
def test_a_sparse_oversized_checkpoint_is_refused_from_its_header_alone(trained, tmp_path, monkeypatch, name, dtype, shape, message):
    """Issue 26, item 4: a 3 GiB sparse file with a valid header took 4.6 GB before it was refused."""
    path = tmp_path / "sparse.safetensors"
    declared = _sparse_copy(trained[1], path, name, dtype, shape)
    assert path.stat().st_size > declared
    strategy = _strategy(seed=1)
    model_nbytes = sum(t.numel() * t.element_size() for t in strategy.model.state_dict().values())
    monkeypatch.setattr(checkpoint_file, "safe_open", _CountingSafeOpen)
    _CountingSafeOpen.reads = 0
    measured = _peak_rss_reset()
    before = _rss_kib("VmRSS")
    with pytest.raises(CheckpointError, match=message) as error:
        load_strategy_checkpoint(path, strategy)
    growth = (_rss_kib("VmHWM") - before) * 1024
    assert str(path) in str(error.value) and "refused before reading its tensors" in str(error.value)
    assert _CountingSafeOpen.reads == 0
    if measured:
        assert growth < 0.2 * model_nbytes, (growth, model_nbytes)  # peak below 1.2x the model's
    assert strategy.buffer.records == {}


def test_keyed_checkpoints_load_only_with_their_key_and_cannot_be_re_signed(tmp_path):
    """Issue 26, item 4: an unkeyed digest can be recomputed by whoever edits the file; an HMAC
    under the user's key cannot."""
    path = tmp_path / "keyed.safetensors"
    save_checkpoint(path, model=torch.nn.Linear(2, 2), optimizer=None, extra={"next_experience": 1}, key=b"secret")
    assert load_checkpoint(path, model=torch.nn.Linear(2, 2), restore_rng=False, key=b"secret") == {"next_experience": 1}
    with pytest.raises(CheckpointError, match=f"{path}: signed with a key"):
        load_checkpoint(path, model=torch.nn.Linear(2, 2), restore_rng=False)
    with pytest.raises(CheckpointError, match=r"keyed digest \(HMAC\) mismatch"):
        load_checkpoint(path, model=torch.nn.Linear(2, 2), restore_rng=False, key=b"guess")
    with safe_open(path, "pt") as file:
        metadata, tensors = file.metadata(), {name: file.get_tensor(name) for name in file.keys()}
    forged = metadata["skeleton"].replace('"next_experience":1', '"next_experience":99')
    metadata.update(skeleton=forged, sha256=checkpoint_file.file_digest(forged, tensors))
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(CheckpointError, match=r"keyed digest \(HMAC\) mismatch"):
        load_checkpoint(path, model=torch.nn.Linear(2, 2), restore_rng=False, key=b"secret")
    del metadata["hmac_sha256"]
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(CheckpointError, match="not signed with a key"):
        load_checkpoint(path, model=torch.nn.Linear(2, 2), restore_rng=False, key=b"secret")


def test_buffer_and_augmentation_own_their_state_dicts():
    """The buffer's state_dict (records, selection and augmentation generators) restores into a
    fresh buffer; a state of another codec leaves the target buffer unchanged."""
    from avalanche_exmask.training.augmentation import MultimodalAugmentation

    codec = MaskedCodec(patch_size=8)
    buffer = _filled_buffer(codec)
    buffer.augmentation = MultimodalAugmentation(p_fill=0.5, seed=3)
    torch.rand(4, generator=buffer.augmentation.generator)  # advance it: the state must travel
    state, tensors = buffer.state_dict()
    assert set(tensors) == {"payload", "generator/selection", "generator/augmentation"}
    assert tensors["payload"].dtype == torch.uint8 and tensors["payload"].numel() == buffer.accounted_nbytes
    restored = ByteBudgetBuffer(max_size=buffer.max_size, codec=codec, selection="random", seed=0,
                                augmentation=MultimodalAugmentation(p_fill=0.5, seed=0))
    restored.load_state_dict(state, tensors)
    assert _records(restored) == _records(buffer)
    assert torch.equal(restored.augmentation.generator.get_state(), buffer.augmentation.generator.get_state())
    other = ByteBudgetBuffer(max_size=buffer.max_size, codec=RawCodec(), selection="random", seed=0,
                             augmentation=MultimodalAugmentation(p_fill=0.5, seed=0))
    with pytest.raises(ValueError, match="buffer codec is 'raw'"):
        other.load_state_dict(state, tensors)
    assert other.records == {}
    with pytest.raises(ValueError, match="augmentation state has"):
        MultimodalAugmentation(p_fill=0.5).load_state_dict(buffer.augmentation.state_dict())
