"""Command line: ``python -m avalanche_exmask {demo,run,methods,caption}``.

* ``demo``: the main job on an embedded benchmark (synthetic renders, or real clip art with
  ``--benchmark clipart``): Avalanche's Naive and Replay against SSF + exemplar masking (and the
  other storage baselines with ``--all``) at equal memory, then a results table.
* ``run``: the runs of a YAML/JSON config (see :mod:`avalanche_exmask.config`), validated before
  the first one starts, results written as JSON (existing files are kept unless ``--overwrite``).
  Under ``torchrun --nproc_per_node N -m avalanche_exmask run ...`` the runs are trained on ``N``
  processes (``--backend``: gloo on the CPU, NCCL on GPUs); rank 0 writes results and checkpoints.
* ``methods``: the registered methods and codecs.
* ``caption``: caption a folder of images with an image-to-text model (resumable JSONL).

``run`` holds each run's lock while it runs, never overwrites results or checkpoints without
``--overwrite`` and resumes only checkpoints of the same training config (see
``docs/runs_and_resuming.md``). A failure prints one ``error: ...`` line naming the file or field
and exits with status 1; ``--debug`` or ``EXMASK_DEBUG=1`` gives the traceback instead.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEMO_METHODS = ("naive", "replay", "masking")
#: Set (to anything but ``0``) for tracebacks instead of one ``error:`` line.
DEBUG_VARIABLE = "EXMASK_DEBUG"
#: The shipped weights each embedded benchmark is run with by default.
DEMO_WEIGHTS = {"synthetic": "synthetic", "clipart": "real"}


def _clipart_classes(count: int) -> list[str]:
    """The first ``count`` categories of the embedded real-image benchmark."""
    from avalanche_exmask.benchmarks.clipart import HELD_OUT

    if not 1 <= count <= len(HELD_OUT):
        raise SystemExit(f"error: --classes must be in 1..{len(HELD_OUT)} for the clipart benchmark; got {count}")
    return [category.name for category in HELD_OUT[:count]]


def _demo(args: argparse.Namespace) -> int:
    import torch

    from avalanche_exmask.config_runs import expand_runs
    from avalanche_exmask.experiment import run_experiment
    from avalanche_exmask.experiment_build import build_benchmark
    from avalanche_exmask.experiment_results import format_table, save_results
    from avalanche_exmask.registry import METHODS

    torch.set_num_threads(args.threads)
    methods = [m for m in METHODS.names() if not METHODS.get(m).joint] if args.all else list(args.methods)
    if args.benchmark == "clipart":
        benchmark_args: dict[str, Any] = {} if args.classes is None else {"classes": _clipart_classes(args.classes)}
    else:
        benchmark_args = {
            "n_classes": args.classes or 10, "train_per_class": args.train_per_class, "test_per_class": args.test_per_class
        }
    pretrained = args.pretrained or DEMO_WEIGHTS[args.benchmark]
    runs = expand_runs(
        {
            "methods": methods,
            "seed": args.seed,
            "benchmark": {"name": args.benchmark, "n_experiences": args.experiences, "args": benchmark_args},
            "model": {"pretrained": pretrained},
            "storage": {"budget": {"samples_per_class": args.samples_per_class}},
            "train": {"epochs": args.epochs},
            "logging": {"progress": not args.quiet},
        },
        source="demo arguments",
    )
    benchmark = build_benchmark(runs[0])
    results = []
    for config in runs:
        print(f"\n=== {config.method} ===", flush=True)
        run = run_experiment(config, benchmark=benchmark)
        results.append(run)
        if args.out:
            save_results(run, Path(args.out) / f"demo_{config.method}_seed{args.seed}.json", overwrite=True)
    print()
    n_classes = len(benchmark.class_order)
    print(f"Embedded {args.benchmark} benchmark: {n_classes} classes in {args.experiences} experiences, "
          f"{args.samples_per_class:g} samples/class of memory (equal bytes), exmask-tiny ({pretrained!r} weights) + SSF, "
          f"seed {args.seed}")
    print(format_table(results))
    return 0


def _start_processes(args: argparse.Namespace, runs: list) -> bool:
    """Start the ``torchrun`` process group when launched with more than one process, after
    checking what every run needs of it.

    :return: whether a group was started here (not when launched alone, nor when the caller
        started one).

    :raises SystemExit: naming the field, for runs on different device types or global batch
        sizes that are not a multiple of the number of processes.
    """
    import os

    from avalanche_exmask import distributed

    if not distributed.launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return False
    n_processes = int(os.environ["WORLD_SIZE"])
    device_types = sorted({config.device.split(":")[0] for config in runs})
    if len(device_types) > 1:
        raise SystemExit(f"error: {args.config}: the runs of one torchrun launch share a device type; got {device_types}")
    for config in runs:
        for field, size in (("train.batch_size", config.train.batch_size), ("eval.batch_size", config.eval.batch_size)):
            if size % n_processes:
                raise SystemExit(
                    f"error: {args.config}: {field}={size} is the global batch and must be a multiple of the "
                    f"{n_processes} processes (run {config.method}, seed {config.seed})"
                )
    if distributed.is_distributed():
        return False
    distributed.init_distributed(runs[0].seed, device=runs[0].device, backend=args.backend)
    return True


def _run(args: argparse.Namespace) -> int:
    from avalanche_exmask.config import load_runs

    path = Path(args.config)
    if args.keep_checkpoint and args.no_checkpoint:
        raise SystemExit("error: --keep-checkpoint and --no-checkpoint exclude each other")
    runs = load_runs(path, args.set or [])
    started = _start_processes(args, runs)
    outputs = [Path(args.out) / f"{path.stem}_{config.method}_seed{config.seed}.json" for config in runs]

    from avalanche_exmask import distributed
    from avalanche_exmask.experiment_results import format_table
    from avalanche_exmask.run_lock import RunLock

    main = distributed.is_main_process()
    lock = RunLock(outputs if main else [])
    if main:
        from avalanche_exmask.output_folder import check_output_folder

        check_output_folder(args.out)
    with lock:
        _refuse_existing(args, outputs, main)
        results = _run_all(args, runs, outputs, main)
    if main:
        print(format_table(results))
    if started:
        distributed.close_distributed()
    return 0


def _refuse_existing(args: argparse.Namespace, outputs: list[Path], main: bool) -> None:
    """Refuse to start over results or checkpoints of earlier runs without ``--overwrite`` (or
    ``--resume``), and, on the main process (which holds the locks), remove the temporary files
    killed runs left."""
    from avalanche_exmask.output_folder import remove_stale_temporaries

    existing = [str(out) for out in outputs if out.exists()]
    if existing and not (args.overwrite or args.resume):
        raise SystemExit(f"error: results exist (pass --overwrite to replace them, --resume to keep them): {existing}")
    checkpoints = [out.with_suffix(".ckpt.safetensors") for out in outputs]
    interrupted = [str(checkpoint) for checkpoint in checkpoints if os.path.lexists(checkpoint)]
    if interrupted and not (args.overwrite or args.resume):
        raise SystemExit(
            f"error: checkpoints of interrupted runs exist (pass --resume to continue them, --overwrite to start over): {interrupted}"
        )
    for out in outputs if main else []:
        for stale in remove_stale_temporaries(out, out.with_suffix(".ckpt.safetensors")):
            print(f"removed {stale} (left by an interrupted run)", flush=True)


def _run_all(args: argparse.Namespace, runs: list, outputs: list[Path], main: bool) -> list[dict]:
    """Run (or, with ``--resume``, keep) every run and write its results; the results, in order.

    :raises SystemExit: naming the results file, if it cannot be written (the run's checkpoint is
        kept: ``--resume`` writes the results from it; without one the results go to stderr).
    """
    import json

    from avalanche_exmask import distributed
    from avalanche_exmask.checkpoint import key_from_environment
    from avalanche_exmask.experiment import run_experiment
    from avalanche_exmask.experiment_results import save_results

    key = key_from_environment()
    results = []
    for config, out in zip(runs, outputs, strict=True):
        if args.resume and out.exists():
            results.append(json.loads(out.read_text()))
            if main:
                print(f"kept {out}", flush=True)
            continue
        checkpoint = None if args.no_checkpoint else out.with_suffix(".ckpt.safetensors")
        if checkpoint is not None and os.path.lexists(checkpoint) and args.overwrite and not args.resume and main:
            checkpoint.unlink()  # an interrupted earlier attempt, started over
        distributed.barrier()  # every rank sees the same checkpoint (or none) before the run starts
        run = run_experiment(config, checkpoint=checkpoint, checkpoint_key=key)
        gc.collect()  # Avalanche's streams and experiences refer to each other: free this run's data now
        results.append(run)
        if main:
            try:
                print(f"wrote {save_results(run, out, overwrite=args.overwrite)}", flush=True)
            except OSError as error:
                if checkpoint is not None and checkpoint.exists():
                    raise SystemExit(
                        f"error: {error}; the run's results are kept in its checkpoint {checkpoint}: "
                        "free the space and rerun with --resume to write them"
                    ) from None
                print(json.dumps(run, default=str), file=sys.stderr)
                raise SystemExit(f"error: {error}; the run's results are printed above (no checkpoint with --no-checkpoint)") from None
            if checkpoint is not None and checkpoint.exists() and not args.keep_checkpoint:
                checkpoint.unlink()
        distributed.barrier()  # the results are written before any rank goes on
    return results


def _methods(args: argparse.Namespace) -> int:
    from avalanche_exmask.registry import CODECS, METHODS

    for name in METHODS.names():
        spec = METHODS.get(name)
        print(f"{name:<10} {spec.description}" + (f"  [codec: {spec.codec}]" if spec.codec else ""))
    print("codecs:", ", ".join(CODECS.names()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m avalanche_exmask", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help=f"tracebacks instead of one error line (or {DEBUG_VARIABLE}=1)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="compare Naive, Replay and exemplar masking on the embedded benchmark")
    demo.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), help="registered methods (see the 'methods' command)")
    demo.add_argument("--all", action="store_true", help="run every registered method but the joint ones")
    demo.add_argument("--benchmark", choices=tuple(DEMO_WEIGHTS), default="synthetic",
                      help="synthetic renders, or the embedded real clip art (10 held-out categories)")
    demo.add_argument("--pretrained", default=None,
                      help="weights: a shipped tag (synthetic, real) or a file; default: synthetic / real by benchmark")
    demo.add_argument("--classes", type=int, default=None, help="classes (default 10; all 10 for clipart)")
    demo.add_argument("--experiences", type=int, default=5)
    demo.add_argument("--train-per-class", type=int, default=60)
    demo.add_argument("--test-per-class", type=int, default=20)
    demo.add_argument("--samples-per-class", type=float, default=5.0)
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=2)
    demo.add_argument("--out", default=None, help="folder for results JSON files")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                      help=f"tracebacks instead of one error line (or {DEBUG_VARIABLE}=1)")
    demo.set_defaults(func=_demo)

    run = commands.add_parser("run", help="run an experiment config (YAML/JSON) and write results JSON")
    run.add_argument("config")
    run.add_argument("--out", default="results")
    run.add_argument("--set", nargs="*", help="override config fields by dotted path, e.g. --set train.epochs=1 seeds=[0,1] method=raw")
    run.add_argument("--overwrite", action="store_true", help="replace existing results files")
    run.add_argument("--resume", action="store_true",
                     help="keep finished runs and resume an interrupted one from its checkpoint")
    run.add_argument("--no-checkpoint", action="store_true",
                     help="do not write <results>.ckpt.safetensors after every experience (written by default, removed when the run ends)")
    run.add_argument("--keep-checkpoint", action="store_true",
                     help="keep <results>.ckpt.safetensors when a run ends: its final model, optimizer and exemplar buffer "
                          "(e.g. for benchmarks/mask_quality.py --run); joint methods write none")
    run.add_argument("--backend", choices=("gloo", "nccl"), default=None,
                     help="under torchrun: the process group's backend (default: nccl with device cuda, else gloo)")
    run.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                     help=f"tracebacks instead of one error line (or {DEBUG_VARIABLE}=1)")
    run.set_defaults(func=_run)

    commands.add_parser("methods", help="list the registered methods and codecs").set_defaults(func=_methods)

    from avalanche_exmask.captions.cli import add_caption_parser

    add_caption_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; a failure prints one ``error: ...`` line (naming the file or field) to stderr
    and returns 1. With ``--debug`` or :data:`DEBUG_VARIABLE` set (not ``0``), errors propagate
    with their traceback."""
    args = build_parser().parse_args(argv)
    if args.debug or os.environ.get(DEBUG_VARIABLE, "0") not in ("", "0"):
        return args.func(args)
    try:
        return args.func(args)
    except Exception as error:  # noqa: BLE001 - the one place errors become a line
        print(f"error: {_describe(error)}", file=sys.stderr, flush=True)
        return 1


def _describe(error: Exception) -> str:
    """One line for ``error``: the message of value and system errors (this package's config,
    checkpoint, data-set and output-folder errors are of these kinds and name their file or field),
    the exception type and message otherwise; with a hint to the traceback."""
    from avalanche_exmask.run_lock import RunLockedError

    if isinstance(error, (ValueError, OSError, RunLockedError)):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split()) + f" (traceback: --debug or {DEBUG_VARIABLE}=1)"


if __name__ == "__main__":
    sys.exit(main())
