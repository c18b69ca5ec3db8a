"""The cosine learning-rate schedule: decayed over each experience's iterations, restarted after."""
from __future__ import annotations

import math

import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
from avalanche_exmask.config import RunConfig
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.storage.budget import budget_from_samples_per_class
from avalanche_exmask.storage.buffer import ByteBudgetBuffer
from avalanche_exmask.storage.codecs import RawCodec
from avalanche_exmask.training.lr_schedule import CosineLRPlugin, cosine_factor
from avalanche_exmask.training.plugin import ByteBudgetReplayPlugin


def test_cosine_factor_runs_from_one_to_the_final_fraction():
    assert cosine_factor(0, 10) == 1.0
    assert cosine_factor(5, 10) == pytest.approx(0.5)
    assert cosine_factor(10, 10) == pytest.approx(0.0)
    assert cosine_factor(25, 10) == pytest.approx(0.0)  # held after the horizon
    assert cosine_factor(10, 10, final_fraction=0.1) == pytest.approx(0.1)
    assert cosine_factor(3, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))
    with pytest.raises(ValueError, match="final_fraction"):
        CosineLRPlugin(final_fraction=1.5)


class _RecordRates(SupervisedPlugin):
    """The rate each iteration trained with, per experience, and the loader's length."""

    def __init__(self):
        super().__init__()
        self.rates: list[list[float]] = []
        self.loader_lengths: list[int] = []

    def before_training_exp(self, strategy, **kwargs):
        self.rates.append([])

    def before_backward(self, strategy, **kwargs):
        if not self.rates[-1]:
            self.loader_lengths.append(len(strategy.dataloader))
        self.rates[-1].append(strategy.optimizer.param_groups[0]["lr"])


def test_cosine_schedule_spans_each_experience_of_a_replayed_run_and_restarts():
    # The schedule plugin comes before the replay plugin, which rebuilds the loader (longer each
    # experience under class_share): the horizon must be read from the loader actually trained on.
    benchmark = synthetic_multimodal(n_classes=6, n_experiences=3, train_per_class=16, test_per_class=2, seed=0)
    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(pretrained=None)
    budget = budget_from_samples_per_class(2, 6, model.image_size, model.context_length)
    buffer = ByteBudgetBuffer(max_size=budget, codec=RawCodec(), mode="per_class", total_num_classes=6)
    replay = ByteBudgetReplayPlugin(mem_size=budget, storage_policy=buffer, memory_batch="class_share")
    schedule, recorder = CosineLRPlugin(), _RecordRates()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    optimizer.param_groups[0]["lr"] = 4e-3  # a method's own rate, set after the optimizer was built
    strategy = Naive(
        model=model, optimizer=optimizer, train_mb_size=8, train_epochs=2, plugins=[schedule, replay, recorder],
        evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
    )
    for experience in benchmark.train_stream:
        strategy.train(experience)
    assert len(set(recorder.loader_lengths)) > 1  # the replayed loaders differ in length
    for rates, length in zip(recorder.rates, recorder.loader_lengths, strict=True):
        assert len(rates) == 2 * length
        expected = [4e-3 * cosine_factor(step, 2 * length) for step in range(2 * length)]
        assert rates == pytest.approx(expected, rel=1e-6)  # starts at the base rate, every experience
    assert optimizer.param_groups[0]["lr"] == pytest.approx(4e-3)  # reset after the last experience


def test_lr_schedule_is_a_checked_train_field():
    assert RunConfig.from_dict({"train": {"lr_schedule": "cosine"}}).train.lr_schedule == "cosine"
    assert RunConfig.from_dict({}).train.lr_schedule == "constant"
    with pytest.raises(ValueError, match="lr_schedule"):
        RunConfig.from_dict({"train": {"lr_schedule": "step"}})
