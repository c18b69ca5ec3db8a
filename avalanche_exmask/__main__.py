"""Command line: ``python -m avalanche_exmask {demo,run,caption}``.

* ``demo``: the main job on the embedded synthetic benchmark: Avalanche's Naive and Replay
  against SSF + exemplar masking (and the other storage baselines with ``--all``) at equal
  memory, then a results table.
* ``run``: one experiment from a YAML/JSON config (see :class:`~avalanche_exmask.experiment.ExperimentConfig`),
  results written as JSON.
* ``caption``: caption a folder of images with an image-to-text model (resumable JSONL).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

DEMO_METHODS = ("naive", "replay", "masking")
ALL_METHODS = ("naive", "replay", "raw", "mrdc", "cim", "masking")


def _demo(args: argparse.Namespace) -> int:
    import torch

    from avalanche_exmask.experiment import ExperimentConfig, build_benchmark, format_table, run_experiment, save_results

    torch.set_num_threads(args.threads)
    methods = ALL_METHODS if args.all else tuple(args.methods)
    base = ExperimentConfig(
        n_experiences=args.experiences, seed=args.seed, samples_per_class=args.samples_per_class,
        epochs=args.epochs, progress=not args.quiet,
        benchmark_args={"n_classes": args.classes, "train_per_class": args.train_per_class, "test_per_class": args.test_per_class},
    )
    benchmark = build_benchmark(base)
    results = []
    for method in methods:
        print(f"\n=== {method} ===", flush=True)
        config = ExperimentConfig.from_dict({**vars(base), "method": method})
        run = run_experiment(config, benchmark=benchmark)
        results.append(run)
        if args.out:
            save_results(run, Path(args.out) / f"demo_{method}_seed{args.seed}.json")
    print()
    print(f"Embedded synthetic benchmark: {args.classes} classes in {args.experiences} experiences, "
          f"{args.samples_per_class:g} samples/class of memory (equal bytes), exmask-tiny + SSF, seed {args.seed}")
    print(format_table(results))
    return 0


def _run(args: argparse.Namespace) -> int:
    import yaml

    from avalanche_exmask.experiment import ExperimentConfig, format_table, run_experiment, save_results

    path = Path(args.config)
    if not path.is_file():
        raise SystemExit(f"config file not found: {path}")
    values = yaml.safe_load(path.read_text()) or {}
    for override in args.set or []:
        key, _, value = override.partition("=")
        values[key] = yaml.safe_load(value)
    seeds = values.pop("seeds", None) or [values.get("seed", 0)]
    methods = values.pop("methods", None) or [values.get("method", "masking")]
    results = []
    for method in methods:
        for seed in seeds:
            config = ExperimentConfig.from_dict({**values, "method": method, "seed": seed})
            run = run_experiment(config)
            results.append(run)
            out = save_results(run, Path(args.out) / f"{path.stem}_{method}_seed{seed}.json")
            print(f"wrote {out}", flush=True)
    print(format_table(results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m avalanche_exmask", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="compare Naive, Replay and exemplar masking on the embedded benchmark")
    demo.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), help=f"any of {ALL_METHODS + ('joint',)}")
    demo.add_argument("--all", action="store_true", help=f"run {ALL_METHODS}")
    demo.add_argument("--classes", type=int, default=10)
    demo.add_argument("--experiences", type=int, default=5)
    demo.add_argument("--train-per-class", type=int, default=60)
    demo.add_argument("--test-per-class", type=int, default=20)
    demo.add_argument("--samples-per-class", type=float, default=5.0)
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=2)
    demo.add_argument("--out", default=None, help="folder for results JSON files")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)

    run = commands.add_parser("run", help="run an experiment config (YAML/JSON) and write results JSON")
    run.add_argument("config")
    run.add_argument("--out", default="results")
    run.add_argument("--set", nargs="*", help="override config fields, e.g. --set epochs=1 seeds=[0,1]")
    run.set_defaults(func=_run)

    from avalanche_exmask.captions.cli import add_caption_parser

    add_caption_parser(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
