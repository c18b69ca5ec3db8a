"""A new codec and a new method are one module and one registration each: shown with toy ones."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch

from avalanche_exmask.config import load_runs
from avalanche_exmask.data.sample import make_sample
from avalanche_exmask.experiment import run_experiment
from avalanche_exmask.methods.base import MethodSpec
from avalanche_exmask.methods.buffered import buffer_report, buffered_replay
from avalanche_exmask.registry import CODECS, METHODS, Registry
from avalanche_exmask.storage.codecs.base import Record


@dataclasses.dataclass(frozen=True, kw_only=True)
class HalfResolutionCodec:
    """Toy codec: the image stored at half resolution (nearest), the text dropped."""

    name: ClassVar[str] = "half"
    keep_text: bool = False

    def encode(self, sample, scores, label):
        return Record(label=label, data=sample.image[:, ::2, ::2].contiguous().numpy().tobytes(), layout=tuple(sample.image.shape))

    def decode(self, record):
        channels, height, width = record.layout
        small = torch.frombuffer(bytearray(record.data), dtype=torch.uint8).reshape(channels, height // 2, width // 2)
        image = small.repeat_interleave(2, 1).repeat_interleave(2, 2)
        return make_sample(image, torch.tensor([49406, 49407] + [0] * 30))


@pytest.fixture
def toy_entries():
    CODECS.register("half")(HalfResolutionCodec)
    METHODS.register("half")(MethodSpec(build=buffered_replay("half"), codec="half", report=buffer_report, description="toy"))
    yield
    CODECS.unregister("half")
    METHODS.unregister("half")


def test_registered_toy_codec_and_method_run_through_config_and_runner(toy_entries, tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(
        "methods: [half]\nbenchmark: {n_experiences: 2, args: {n_classes: 4, train_per_class: 6, test_per_class: 2}}\n"
        "model: {pretrained: null}\ntrain: {epochs: 1, batch_size: 8}\nlogging: {progress: false}\n"
        "storage: {budget: {samples_per_class: 1}, options: {half: {keep_text: true}}}\n"
    )
    [config] = load_runs(path)
    assert config.storage.options == {"half": {"keep_text": True}}
    results = run_experiment(config)
    assert results["buffer"]["codec"] == "half"
    assert results["exemplars_per_class"] >= 3  # a quarter of the pixels: ~4 per plain exemplar's bytes
    assert "ncm_final_accuracy" in results["figures"]


def test_registry_refuses_duplicates_and_names_the_known_entries():
    registry = Registry("widget")
    registry.register("a")(1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a")(2)
    registry.register("a", replace=True)(2)
    assert registry.get("a") == 2
    with pytest.raises(KeyError, match=r"unknown widget 'b'; registered: \['a'\]"):
        registry.get("b")
    assert {"naive", "replay", "raw", "mrdc", "cim", "masking", "joint"} <= set(METHODS.names())
    assert {"masked", "raw", "jpeg", "cim"} <= set(CODECS.names())


def test_every_masked_codec_option_of_a_config_reaches_the_masking_strategy():
    """Every ``storage.options.masked`` field set in a config must arrive in the masking strategy's
    buffer codec, as the generic ``context.codec`` builds it (a codec option once got lost on the way)."""
    import dataclasses

    from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
    from avalanche_exmask.config import RunConfig
    from avalanche_exmask.methods.base import BuildContext
    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
    from avalanche_exmask.registry import METHODS

    options = {"image_rule": {"kind": "ratio", "ratio": 0.2}, "background_downsample": 4, "patch_jpeg_quality": 40,
               "text_rule": {"mode": "both", "class_source": "attention", "context_ratio": 0.3}}
    config = RunConfig.from_dict({"method": "masking", "model": {"pretrained": None}, "storage": {"options": {"masked": options}}})
    model = MultimodalCLIPClassifier(pretrained=None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    context = BuildContext(
        config=config, model=model, optimizer=optimizer,
        benchmark=synthetic_multimodal(n_classes=2, n_experiences=1, train_per_class=2, test_per_class=1), n_classes=2,
        budget_nbytes=100_000, template_kwargs={"model": model, "optimizer": optimizer},
    )
    built = METHODS.get("masking").build(context).buffer.codec
    expected = context.codec("masked")
    fields = [f.name for f in dataclasses.fields(expected) if f.name != "class_token_ids"]
    assert {name: getattr(built, name) for name in fields} == {name: getattr(expected, name) for name in fields}
    assert built.patch_jpeg_quality == 40 and built.background_downsample == 4 and built.image_rule.ratio == 0.2


def test_a_text_rule_on_class_names_is_refused_naming_the_field_when_the_benchmark_has_none():
    import types

    from avalanche_exmask.config import RunConfig
    from avalanche_exmask.methods.base import BuildContext
    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier

    def context(text_rule):
        options = {"masked": {"text_rule": text_rule}}
        config = RunConfig.from_dict({"method": "masking", "model": {"pretrained": None}, "storage": {"options": options}})
        model = MultimodalCLIPClassifier(pretrained=None)
        return BuildContext(config=config, model=model, optimizer=None, benchmark=types.SimpleNamespace(), n_classes=2,
                            budget_nbytes=100_000, template_kwargs={})

    with pytest.raises(ValueError, match=r"storage\.options\.masked\.text_rule\.class_source='names'"):
        context({"mode": "both", "class_source": "names"}).codec("masked")
    assert context({"mode": "both", "class_source": "attention"}).codec("masked").text_rule.class_source == "attention"
    assert context({"mode": "context", "class_source": "names"}).codec("masked").class_token_ids is None
