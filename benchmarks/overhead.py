"""Overheads of exemplar masking, measured in one run (ratios, so machine noise cancels).

1. step time of the ``ExemplarMasking`` strategy / a bare PyTorch loop doing the same work on the
   same model and the same batches (current data + replayed exemplars, same batch sizes);
2. wall time of masking + selection (the buffer update after an experience) / training time of
   that experience;
3. resident memory of the buffer's records / their accounted bytes.

Usage::

    python benchmarks/overhead.py --out results/overhead.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_exmask.benchmarks.synthetic import synthetic_multimodal
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.storage.budget import budget_from_samples_per_class
from avalanche_exmask.training.strategy import ExemplarMasking


def _bare_epoch(model, optimizer, current, memory, batch_size: int, generator: torch.Generator) -> tuple[float, int]:
    """One epoch of a hand-written loop: current batch + memory batch, CE, backward, step."""
    criterion = torch.nn.CrossEntropyLoss()
    current_loader = DataLoader(current, batch_size=batch_size, shuffle=True, generator=generator)
    memory_loader = DataLoader(memory, batch_size=batch_size, shuffle=True, generator=generator)
    model.train()
    start, steps = time.perf_counter(), 0
    for (x, y, _), (mx, my, _) in zip(current_loader, itertools.cycle(memory_loader)):
        x, y = torch.cat([x, mx]), torch.cat([y, my])
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        steps += 1
    return time.perf_counter() - start, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5, help="epochs per experience (the experiments' default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results/overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    benchmark = synthetic_multimodal(n_classes=args.classes, n_experiences=2, train_per_class=args.train_per_class, test_per_class=5)
    model = MultimodalCLIPClassifier()
    budget = budget_from_samples_per_class(5, args.classes, model.image_size, model.context_length)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    strategy = ExemplarMasking(
        model=model, optimizer=optimizer, mem_size=budget, total_num_classes=args.classes,
        train_mb_size=args.batch_size, train_epochs=args.epochs,
        evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
    )
    strategy.train(benchmark.train_stream[0])  # fills the buffer; the timing of its update is item 2
    experience = benchmark.train_stream[1]
    strategy_times, bare_times = [], []
    generator = torch.Generator().manual_seed(0)
    for _ in range(args.repeats):  # alternate, so both see the same machine load
        start = time.perf_counter()
        strategy.train(experience)
        steps = strategy.clock.train_exp_iterations
        strategy_times.append((time.perf_counter() - start - strategy.replay_plugin.timings[-1]["update_s"]) / steps)
        bare = [_bare_epoch(model, optimizer, experience.dataset.train(), strategy.buffer.buffer, args.batch_size, generator)
                for _ in range(args.epochs)]
        bare_times.append(sum(s for s, _ in bare) / sum(n for _, n in bare))
    timings = strategy.replay_plugin.timings
    update_ratio = [t["update_s"] / t["train_s"] for t in timings]
    stats = strategy.buffer.stats()
    results = {
        "args": vars(args),
        "strategy_step_s": strategy_times,
        "bare_step_s": bare_times,
        "step_time_ratio": statistics.median(strategy_times) / statistics.median(bare_times),
        "update_over_train": update_ratio,
        "update_over_train_first_experience": update_ratio[0],
        "resident_nbytes": stats.resident_nbytes,
        "accounted_nbytes": stats.accounted_nbytes,
        "resident_over_accounted": stats.resident_nbytes / stats.accounted_nbytes,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "args"}, indent=1))


if __name__ == "__main__":
    main()
