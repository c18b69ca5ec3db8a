"""A new codec, method and benchmark are one file and one registration each: a toy of each, defined
here and nowhere else, goes through config validation, the runner, a checkpoint round trip (its own
record and layout types) and reporting."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import pytest
import torch

from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
from avalanche_exmask.config import ConfigError, load_runs
from avalanche_exmask.data.sample import make_sample
from avalanche_exmask.experiment import run_experiment
from avalanche_exmask.methods.base import MethodSpec
from avalanche_exmask.methods.buffered import buffer_report, buffered_replay
from avalanche_exmask.registry import BENCHMARKS, CODECS, METHODS, BenchmarkSpec, CodecSpec
from avalanche_exmask.reporting import aggregate, markdown_table
from avalanche_exmask.storage.codecs.base import Record


class StrideLayout(NamedTuple):
    """Shape of a record of the toy codec: channels, height, width (pixels) and its stride."""

    channels: int
    height: int
    width: int
    stride: int


class StrideRecord(Record):
    """A record of the toy codec (a record type of its own, which a checkpoint must rebuild)."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class StrideCodec:
    """Toy codec: every ``stride``-th pixel per side (nearest upsampling back), the text dropped."""

    name: ClassVar[str] = "stride"
    stride: int | None = None

    def encode(self, sample: Any, scores: Any, label: int) -> StrideRecord:
        channels, height, width = sample.image.shape
        assert self.stride is not None  # completed by the spec
        small = sample.image[:, :: self.stride, :: self.stride].contiguous()
        return StrideRecord(label=label, data=small.numpy().tobytes(), layout=StrideLayout(channels, height, width, self.stride))

    def decode(self, record: Record) -> Any:
        channels, height, width, stride = record.layout
        small = torch.frombuffer(bytearray(record.data), dtype=torch.uint8).reshape(channels, height // stride, width // stride)
        image = small.repeat_interleave(stride, 1).repeat_interleave(stride, 2)
        return make_sample(image, torch.tensor([49406, 49407] + [0] * 30))


def _complete(options: dict[str, Any]) -> dict[str, Any]:
    return {**options, "stride": 2 if options["stride"] is None else options["stride"]}


def _check_run(config: Any, options: Any) -> None:
    if config.model.skip_empty_patches == "drop":
        raise ValueError("storage.options.stride: the toy codec stores no empty patches to drop")


def tiny_stream(*, n_experiences: int, n_classes: int = 4, seed: int = 0, model_name: str = "exmask-tiny") -> Any:
    """Toy benchmark: ``n_classes`` synthetic classes, 6 training and 2 test samples each."""
    return synthetic_multimodal(
        n_classes=n_classes, n_experiences=n_experiences, train_per_class=6, test_per_class=2, seed=seed, model_name=model_name
    )


@pytest.fixture
def toy_extensions():
    CODECS.register("stride")(
        CodecSpec(codec=StrideCodec, record_types=(StrideRecord,), layout_types=(StrideLayout,),
                  complete_options=_complete, check_run=_check_run)
    )
    METHODS.register("stride")(MethodSpec(build=buffered_replay("stride"), codec="stride", report=buffer_report, description="toy"))
    BENCHMARKS.register("tiny_stream")(BenchmarkSpec.of(tiny_stream))
    yield
    CODECS.unregister("stride")
    METHODS.unregister("stride")
    BENCHMARKS.unregister("tiny_stream")


CONFIG = (
    "methods: [stride]\nbenchmark: {name: tiny_stream, n_experiences: 2, args: {n_classes: 4}}\n"
    "model: {pretrained: null}\ntrain: {epochs: 1, batch_size: 8}\nlogging: {progress: false}\n"
    "storage: {budget: {samples_per_class: 1}}\n"
)


def test_toy_codec_method_and_benchmark_run_checkpoint_and_report(toy_extensions, tmp_path, monkeypatch):
    path = tmp_path / "toy.yaml"
    path.write_text(CONFIG)
    [config] = load_runs(path)
    whole = run_experiment(config)
    assert whole["config"]["storage"]["options"] == {"stride": {"stride": 2}}  # completed by the spec
    assert whole["buffer"]["codec"] == "stride" and whole["n_classes"] == 4
    assert whole["exemplars_per_class"] >= 3  # a quarter of the pixels: ~4 per plain exemplar's bytes

    checkpoint = tmp_path / "run.ckpt.safetensors"
    from avalanche.training.templates import SupervisedTemplate

    real_train = SupervisedTemplate.train
    calls = {"n": 0}

    def stop_at_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("stopped")
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(SupervisedTemplate, "train", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, checkpoint=checkpoint)
    monkeypatch.setattr(SupervisedTemplate, "train", real_train)
    resumed = run_experiment(config, checkpoint=checkpoint)  # rebuilds StrideRecord / StrideLayout from the file
    assert resumed["buffer_sha256"] == whole["buffer_sha256"]
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]

    [row] = aggregate([whole, resumed])
    assert row["name"].startswith("stride")
    assert "| stride" in markdown_table([row])


def test_toy_codec_check_refuses_a_config_naming_the_file(toy_extensions, tmp_path):
    path = tmp_path / "drop.yaml"
    path.write_text(CONFIG.replace("model: {pretrained: null}", "model: {pretrained: null, skip_empty_patches: drop}"))
    with pytest.raises(ConfigError, match=rf"{path}.*the toy codec stores no empty patches"):
        load_runs(path)


def test_an_unregistered_benchmark_is_refused_naming_the_registered_ones(tmp_path):
    path = tmp_path / "unknown.yaml"
    path.write_text("method: raw\nbenchmark: {name: tiny_stream}\n")
    with pytest.raises(ConfigError, match=r"benchmark: name must be one of \(.*'synthetic'.*\); got 'tiny_stream'"):
        load_runs(path)


def test_checkpoint_refuses_a_record_type_no_codec_registered(tmp_path):
    from avalanche_exmask.storage.buffer_state import record_types

    assert {"Record", "MaskedRecord", "JpegRecord"} <= set(record_types())
    assert "StrideRecord" not in record_types()


def _code_words(module: str) -> set[str]:
    """Names, attributes and string constants of a module's code (docstrings left out)."""
    import ast
    import importlib.util

    tree = ast.parse(open(importlib.util.find_spec(module).origin).read())
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
        and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.add(node.value)
        elif isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
    return words


@pytest.mark.parametrize("module", [
    "avalanche_exmask.config", "avalanche_exmask.config_schema", "avalanche_exmask.config_files", "avalanche_exmask.config_runs",
    "avalanche_exmask.checkpoint", "avalanche_exmask.checkpoint_file", "avalanche_exmask.checkpoint_rng",
    "avalanche_exmask.checkpoint_sections", "avalanche_exmask.storage.codec_options",
])
def test_the_schema_checkpoint_and_option_resolver_name_no_particular_codec(module):
    words = " ".join(_code_words(module))
    for name in ("masked", "Masked", "text_rule", "background_downsample", "Jpeg", "Cim"):
        assert name not in words, f"{module} names {name!r}: ask the codec's registry entry instead"


def test_config_values_is_a_leaf_module():
    import ast
    import importlib.util

    tree = ast.parse(open(importlib.util.find_spec("avalanche_exmask.config_values").origin).read())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name and name.startswith("avalanche_exmask")]
