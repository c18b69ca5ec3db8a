"""Training step time, evaluation time and trainable parameters of methods, relative to SSF.

Every method is built by its registered builder (as the runner builds it) on the same benchmark,
model and batch size, and trains two experiences; a plugin times each training iteration
(forward, backward, step: Avalanche's ``before_training_iteration`` to ``after_training_iteration``).
The baseline is ``naive`` (SSF fine-tuning, no replay: the same number and size of batches as the
replay-free methods). Also timed: evaluating the test data of both experiences after the second
(EASE embeds every sample once per trained adapter set), and the work a method does after an
experience (EASE's prototypes). Ratios, so machine noise largely cancels; run with one thread.

Usage::

    python benchmarks/step_time.py --methods naive l2p dualprompt ease --out results/step_time.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from avalanche.training.plugins import SupervisedPlugin


class IterationTimer(SupervisedPlugin):
    """Wall seconds of every training iteration and of every ``after_training_exp`` of the strategy."""

    def __init__(self) -> None:
        super().__init__()
        self.iterations: list[float] = []
        self._start = 0.0

    def before_training_iteration(self, strategy, **kwargs) -> None:
        self._start = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self.iterations.append(time.perf_counter() - self._start)


def measure(method: str, args: argparse.Namespace) -> dict[str, Any]:
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_exmask.config import expand_runs
    from avalanche_exmask.experiment import build_benchmark
    from avalanche_exmask.methods.base import BuildContext
    from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
    from avalanche_exmask.registry import METHODS

    [config] = expand_runs(
        {
            "method": method, "seed": 0,
            "benchmark": {"n_experiences": 2, "args": {
                "n_classes": args.classes, "train_per_class": args.train_per_class, "test_per_class": args.test_per_class}},
            "train": {"epochs": 1, "batch_size": args.batch_size}, "logging": {"progress": False},
        },
        source="step_time",
    )
    benchmark = build_benchmark(config)
    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(config.model.name, config.model.pretrained, adapter=config.model.adapter)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.train.lr, weight_decay=0.0)
    timer = IterationTimer()
    context = BuildContext(
        config=config, model=model, optimizer=optimizer, benchmark=benchmark, n_classes=args.classes, budget_nbytes=0,
        template_kwargs=dict(
            model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(), train_mb_size=args.batch_size,
            train_epochs=1, eval_mb_size=args.batch_size, device="cpu", plugins=[timer],
            evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
        ),
    )
    strategy = METHODS.get(method).build(context)
    train_seconds = []
    for experience in benchmark.train_stream:
        start = time.perf_counter()
        strategy.train(experience)
        train_seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    strategy.eval(benchmark.test_stream)
    eval_seconds = time.perf_counter() - start
    n_test = sum(len(e.dataset) for e in benchmark.test_stream)
    trained = strategy.model
    report = trained.trainable_parameter_report() if hasattr(trained, "trainable_parameter_report") else {}
    steps = timer.iterations[1:]  # the first step pays one-off costs
    return {
        "method": method,
        "step_seconds_median": statistics.median(steps),
        "steps": len(steps),
        "train_seconds": train_seconds,
        "after_experience_seconds": sum(train_seconds) - sum(timer.iterations),
        "eval_seconds_per_sample": eval_seconds / n_test,
        "trainable_parameters": report.get("trainable", sum(p.numel() for p in trained.parameters() if p.requires_grad)),
        "parameter_report": report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["naive", "l2p", "dualprompt", "ease"])
    parser.add_argument("--baseline", default="naive", help="the method the ratios are relative to (naive: SSF fine-tuning)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=64)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON file for the measurements")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {method: measure(method, args) for method in dict.fromkeys([args.baseline, *args.methods])}
    base = rows[args.baseline]
    print(f"{'method':<11} {'trainable':>9} {'step ms':>8} {'x SSF':>6} {'eval ms/sample':>14} {'x SSF':>6}")
    for method, row in rows.items():
        row["step_time_vs_baseline"] = row["step_seconds_median"] / base["step_seconds_median"]
        row["eval_time_vs_baseline"] = row["eval_seconds_per_sample"] / base["eval_seconds_per_sample"]
        print(
            f"{method:<11} {row['trainable_parameters']:>9} {1000 * row['step_seconds_median']:>8.1f} {row['step_time_vs_baseline']:>6.2f}"
            f" {1000 * row['eval_seconds_per_sample']:>14.2f} {row['eval_time_vs_baseline']:>6.2f}"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "baseline": args.baseline, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
