"""Avalanche's built-in strategies train and evaluate on our benchmark with our model."""
from __future__ import annotations

import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import AGEM, DER, ER_ACE, EWC, MIR, Cumulative, GDumb, LwF, Naive, Replay
from avalanche.training.plugins import EvaluationPlugin

from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier

STRATEGIES = {
    "Naive": (Naive, {}),
    "Replay": (Replay, {"mem_size": 8}),
    "Cumulative": (Cumulative, {}),
    "GDumb": (GDumb, {"mem_size": 8}),
    "LwF": (LwF, {"alpha": 1.0, "temperature": 2.0}),
    "EWC": (EWC, {"ewc_lambda": 1.0}),
    "ER_ACE": (ER_ACE, {"mem_size": 8, "batch_size_mem": 4}),
    "AGEM": (AGEM, {"patterns_per_exp": 4, "sample_size": 4}),
    "MIR": (MIR, {"mem_size": 8, "subsample": 4, "batch_size_mem": 4}),
    "DER": (DER, {"mem_size": 8, "batch_size_mem": 4}),
}


@pytest.fixture(scope="module")
def benchmark():
    return synthetic_multimodal(n_classes=4, n_experiences=2, train_per_class=4, test_per_class=2, seed=1)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_builtin_strategy_trains_and_evaluates(name, benchmark):
    torch.manual_seed(0)
    cls, kwargs = STRATEGIES[name]
    model = MultimodalCLIPClassifier(pretrained=None, initial_out_features=2)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    strategy = cls(
        model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(), train_mb_size=4, train_epochs=1, eval_mb_size=8,
        evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]), **kwargs,
    )
    adapter_before = [p.detach().clone() for p in model.adapter.trainable_parameters()]
    for experience in benchmark.train_stream:
        strategy.train(experience)
    metrics = strategy.eval(benchmark.test_stream)
    accuracy = next(v for k, v in metrics.items() if k.startswith("Top1_Acc_Stream/eval_phase/test_stream"))
    assert 0.0 <= accuracy <= 1.0
    assert model.classifier.classifier.out_features >= 4
    changed = any(not torch.equal(a, b) for a, b in zip(adapter_before, model.adapter.trainable_parameters(), strict=True))
    assert changed, f"{name} did not update the SSF parameters"
