"""What switching a model between training and eval mode costs: ``Module.train`` against
:func:`~avalanche_exmask.models.train_mode.set_train_mode`, on the package's module trees.

The current data's scoring pass switches the model to eval and back in every training step
(``train.current_codec_scores: step``, the default), and the buffer update does so for every record
it encodes. Per model (random weights, the package's SSF adapter): the number of modules and the
milliseconds of one switch (eval then train, halved), both ways, alternating, on one thread::

    OMP_NUM_THREADS=1 python benchmarks/mode_switch.py --out results/overhead/mode-switch-cpu.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.models.train_mode import set_train_mode


def switch_ms(model: torch.nn.Module, cheap: bool, rounds: int) -> float:
    """Milliseconds of one switch (the mean over ``rounds`` eval-and-back round trips)."""
    start = time.perf_counter()
    for _ in range(rounds):
        if cheap:
            set_train_mode(model, False)
            set_train_mode(model, True)
        else:
            model.eval()
            model.train(True)
    return 1000 * (time.perf_counter() - start) / (2 * rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["exmask-tiny", "ViT-B-16"], help="open_clip model names")
    parser.add_argument("--rounds", type=int, default=50, help="round trips per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="alternating measurements per way")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out: dict = {"torch": torch.__version__, "models": {}}
    for name in args.models:
        model = MultimodalCLIPClassifier(name, None)
        times: dict[str, list[float]] = {"Module.train": [], "set_train_mode": []}
        for _ in range(args.repeats):
            times["Module.train"].append(switch_ms(model, cheap=False, rounds=args.rounds))
            times["set_train_mode"].append(switch_ms(model, cheap=True, rounds=args.rounds))
        medians = {way: statistics.median(values) for way, values in times.items()}
        out["models"][name] = {"modules": sum(1 for _ in model.modules()), "switch_ms": times, "median_switch_ms": medians,
                               "ratio": medians["set_train_mode"] / medians["Module.train"]}
        print(name, out["models"][name]["modules"], "modules:", {k: round(v, 3) for k, v in medians.items()}, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
