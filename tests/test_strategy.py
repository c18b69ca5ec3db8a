"""ExemplarMasking strategy, the plugin on another strategy, the experiment runner and the CLI."""
from __future__ import annotations

import json

import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import LwF
from avalanche.training.plugins import EvaluationPlugin

from avalanche_exmask import __main__ as cli
from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
from avalanche_exmask.config import RunConfig
from avalanche_exmask.experiment import run_experiment, summarise_accuracy
from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.storage.budget import budget_from_samples_per_class
from avalanche_exmask.storage.buffer import ByteBudgetBuffer
from avalanche_exmask.storage.codecs import MaskedCodec, RawCodec
from avalanche_exmask.training.augmentation import MultimodalAugmentation
from avalanche_exmask.training.plugin import ExemplarMaskingPlugin
from avalanche_exmask.training.strategy import ExemplarMasking

TINY = {"n_classes": 4, "train_per_class": 8, "test_per_class": 3}


@pytest.fixture(scope="module")
def benchmark():
    return synthetic_multimodal(n_experiences=2, seed=3, **TINY)


def _quiet():
    return EvaluationPlugin(accuracy_metrics(stream=True), loggers=[])


def test_exemplar_masking_strategy_stores_more_masked_than_raw_exemplars(benchmark):
    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(pretrained=None)
    budget = budget_from_samples_per_class(2, 4, model.image_size, model.context_length)
    strategy = ExemplarMasking(
        model=model,
        optimizer=torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3),
        mem_size=budget, total_num_classes=4, train_mb_size=8,
        augmentation=MultimodalAugmentation(p_fill=0.5, p_swap_text=0.5, seed=0), evaluator=_quiet(),
    )
    for experience in benchmark.train_stream:
        strategy.train(experience)
    stats = strategy.buffer.stats()
    assert set(stats.classes) == set(range(4))
    assert stats.accounted_nbytes <= budget
    assert all(c.n_exemplars > 2 for c in stats.classes.values())  # a raw exemplar would allow 2
    assert all(0 < c.kept_patch_fraction < 1 for c in stats.classes.values())
    timings = strategy.replay_plugin.timings
    assert [t["experience"] for t in timings] == [0, 1] and all(t["update_s"] > 0 for t in timings)
    # replayed items decode to samples the model accepts
    sample, label, task = strategy.buffer.buffer[0]
    assert sample.image.shape == (3, 64, 64) and sample.input_ids.shape == (32,)
    assert model(sample.unsqueeze(0)).shape == (1, 4)


def test_exemplar_masking_takes_a_codec_and_gives_it_the_model_patch_size():
    model = MultimodalCLIPClassifier(pretrained=None)
    optimizer = torch.optim.SGD(model.classifier.parameters(), lr=0.1)
    codec = MaskedCodec(image_rule=ImageMaskRule(kind="ratio", ratio=0.3), patch_jpeg_quality=60)
    stored = ExemplarMasking(model=model, optimizer=optimizer, mem_size=10**5, codec=codec, evaluator=_quiet()).buffer.codec
    assert stored.patch_size == model.patch_size
    assert (stored.image_rule, stored.patch_jpeg_quality) == (codec.image_rule, 60)
    with pytest.raises(ValueError, match=f"codec.patch_size is {2 * model.patch_size}"):
        ExemplarMasking(model=model, optimizer=optimizer, mem_size=10**5, codec=MaskedCodec(patch_size=2 * model.patch_size))


def test_plugin_gives_masked_replay_to_another_strategy(benchmark):
    model = MultimodalCLIPClassifier(pretrained=None)
    budget = budget_from_samples_per_class(1, 4, model.image_size, model.context_length)
    plugin = ExemplarMaskingPlugin(mem_size=budget)
    strategy = LwF(
        model=model, optimizer=torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01),
        criterion=torch.nn.CrossEntropyLoss(), alpha=1.0, temperature=2.0, train_mb_size=8,
        plugins=[plugin], evaluator=_quiet(),
    )
    strategy.train(benchmark.train_stream[0])
    assert len(plugin.storage_policy.buffer) > 0
    assert plugin.storage_policy.accounted_nbytes <= budget


def test_raw_buffer_at_equal_bytes_holds_the_paper_unit(benchmark):
    model = MultimodalCLIPClassifier(pretrained=None)
    budget = budget_from_samples_per_class(2, 4, model.image_size, model.context_length)
    buffer = ByteBudgetBuffer(max_size=budget, codec=RawCodec(), mode="per_class", total_num_classes=4)
    plugin = ExemplarMaskingPlugin(mem_size=budget, storage_policy=buffer)
    from avalanche.training import Naive

    strategy = Naive(model=model, optimizer=torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01),
                     criterion=torch.nn.CrossEntropyLoss(), train_mb_size=8, plugins=[plugin], evaluator=_quiet())
    strategy.train(benchmark.train_stream[0])
    assert set(buffer.exemplars_per_class().values()) == {2}


def test_summarise_accuracy():
    matrix = [[90.0], [50.0, 80.0], [40.0, 60.0, 70.0]]
    summary = summarise_accuracy(matrix, sizes=[10, 10, 20])
    assert summary["seen_accuracy"] == pytest.approx([90.0, 65.0, (400 + 600 + 1400) / 40])
    assert summary["final_accuracy"] == pytest.approx(60.0)
    assert summary["forgetting"] == pytest.approx(((90 - 40) + (80 - 60)) / 2)


def test_run_experiment_results_file_fields():
    config = RunConfig.from_dict({
        "method": "masking", "model": {"pretrained": None}, "benchmark": {"n_experiences": 2, "args": TINY},
        "train": {"epochs": 1, "batch_size": 8}, "logging": {"progress": False}, "storage": {"budget": {"samples_per_class": 2}},
    })
    results = run_experiment(config)
    assert results["config"]["method"] == "masking" and results["config"]["seed"] == 0
    assert len(results["accuracy_matrix"]) == 2 and len(results["accuracy_matrix"][1]) == 2
    assert results["buffer_nbytes"] <= results["budget_nbytes"]
    assert results["exemplars_per_class"] > 2
    assert 0 < results["kept_patch_fraction"] < 1 and 0 < results["kept_token_fraction"] <= 1
    assert {"exemplars_per_class", "ncm_final_accuracy", "kept_patch_fraction"} <= set(results["figures"])
    assert sorted(results["class_order"]) == [0, 1, 2, 3]
    # per-class accuracies: the classes seen at each step, averaging to each experience's accuracy
    # (the tiny benchmark has as many test images in every class)
    seen_after = [sorted(results["class_order"][: 2 * (t + 1)]) for t in range(2)]
    assert [sorted(map(int, step)) for step in results["class_accuracy_matrix"]] == seen_after
    final = results["class_accuracy_matrix"][1]
    for j, classes in enumerate([results["class_order"][:2], results["class_order"][2:]]):
        assert sum(final[str(c)] for c in classes) / 2 == pytest.approx(results["accuracy_matrix"][1][j])
    json.dumps(results)


def test_cli_run_writes_results(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "methods: [naive, raw]\nseeds: [0]\nn_experiences: 2\nepochs: 1\nbatch_size: 8\n"
        "pretrained: null\nprogress: false\nbenchmark_args: {n_classes: 4, train_per_class: 6, test_per_class: 2}\n"
    )
    assert cli.main(["run", str(config), "--out", str(tmp_path / "out")]) == 0
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["tiny_naive_seed0.json", "tiny_raw_seed0.json"]
    table = capsys.readouterr().out
    assert "naive" in table and "raw" in table and "final acc" in table


def test_the_replay_stack_is_one_ordered_list_for_every_buffered_method():
    """The buffered methods and ExemplarMasking share one builder: replay plugin (over the buffer),
    weight aligning, current-through-codec, then the caller's plugins, in that order."""
    from avalanche_exmask.storage.buffer import ByteBudgetBuffer
    from avalanche_exmask.storage.codecs import RawCodec
    from avalanche_exmask.training.codec_augmentation import CurrentThroughCodecPlugin
    from avalanche_exmask.training.plugin import ByteBudgetReplayPlugin
    from avalanche_exmask.training.replay_stack import byte_budget_replay_plugins
    from avalanche_exmask.training.weight_aligning import WeightAligningPlugin

    mine = object()
    stack = byte_budget_replay_plugins(codec=RawCodec(), mem_size=1000, total_num_classes=4, weight_aligning=True, plugins=[mine])
    assert [type(p) for p in stack[:3]] == [ByteBudgetReplayPlugin, WeightAligningPlugin, CurrentThroughCodecPlugin]
    assert stack[3] is mine
    buffer = stack[0].storage_policy
    assert type(buffer) is ByteBudgetBuffer and buffer.mode == "per_class" and buffer.max_size == 1000
    plain = byte_budget_replay_plugins(codec=RawCodec(), mem_size=1000, current_through_codec=0.0)
    assert len(plain) == 1 and plain[0].storage_policy.mode == "total"
