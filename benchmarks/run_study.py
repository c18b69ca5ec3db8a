"""Run a study: groups of runs (method x seed x config overrides) in parallel worker processes,
resumable (a run whose results file exists is skipped).

A study file (YAML) holds a ``base`` config (a nested :class:`~avalanche_exmask.config.RunConfig`
mapping) and ``groups``, each with a ``name`` (its results folder), ``methods``, ``seeds`` and
optional ``set`` (a nested mapping merged over the base). Every run of every group is validated
before the first one starts. Runs are
ordered seed-major within each group and groups in file order, so an interrupted study leaves
complete seeds of the first groups. Every worker runs one experiment at a time with
``--threads`` intra-op threads; ``--workers x --threads`` should not exceed the cores.
``--set a.b=value`` overrides a field of the base (as the runner's ``--set``; e.g. a data set's
root); ``--checkpoint`` writes a checkpoint after every experience of every run, beside its results
file, and resumes an interrupted run from it (worth it for real data sets: a killed study loses at
most one experience per worker); ``--keep-checkpoints`` also keeps each run's final checkpoint (its
trained model and exemplar buffer, e.g. for ``benchmarks/mask_quality.py --run``). ``--methods`` and
``--seeds`` keep only those runs of the chosen groups.

Usage::

    python benchmarks/run_study.py benchmarks/configs/synthetic_study.yaml --out results/synthetic
    python benchmarks/run_study.py benchmarks/configs/synthetic_study.yaml --out results/synthetic --only main
    python benchmarks/run_study.py benchmarks/configs/synthetic_study.yaml --out runs --only main \
        --methods masking --seeds 0 --keep-checkpoints
    python benchmarks/run_study.py benchmarks/configs/table1_mm_imagenet_r.yaml --out results/mm_imagenet_r \
        --workers 1 --threads 8 --checkpoint --set benchmark.args.root=DATA device=cuda
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Sequence


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, section by section (nested mappings merged, the rest replaced)."""
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def read_study(path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """The study file's mapping, with ``overrides`` (``a.b=value``) applied to its base.

    :raises ConfigError: naming the file for a missing file, malformed YAML, or a study without
        ``groups`` (each with ``name``, ``methods`` and ``seeds``).
    """
    from avalanche_exmask.config import ConfigError, apply_override, read_config_file

    study = read_config_file(path)
    groups = study.get("groups")
    if not isinstance(groups, list) or not groups:
        raise ConfigError(f"{path}: a study needs a non-empty list `groups`")
    for k, group in enumerate(groups):
        missing = [key for key in ("name", "methods", "seeds") if not isinstance(group, dict) or key not in group]
        if missing:
            raise ConfigError(f"{path}: groups[{k}] lacks {', '.join(missing)}")
    study.setdefault("base", {})
    for override in overrides:
        apply_override(study["base"], override, source=f"{path}: --set")
    return study


def plan(
    study: dict[str, Any], out: Path, only: Sequence[str], source: str, methods: Sequence[str] = (), seeds: Sequence[int] = ()
) -> list[tuple[dict[str, Any], Path]]:
    """``(validated nested config, results path)`` of every run of the study, in execution order;
    only the groups ``only``, methods ``methods`` and seeds ``seeds`` where these are not empty."""
    from avalanche_exmask.config import check_distinct, expand_runs

    every_method = sorted({method for group in study["groups"] for method in group["methods"]})
    jobs = []
    for group in study["groups"]:
        if only and group["name"] not in only:
            continue
        values = merge(study.get("base", {}), group.get("set", {}))
        group_methods = [method for method in group["methods"] if not methods or method in methods]
        for seed in group["seeds"]:
            if not group_methods or (seeds and seed not in seeds):
                continue
            runs = expand_runs(
                {**values, "methods": group_methods, "seed": seed},
                source=f"{source}, group {group['name']}",
                applicable_to=every_method,
            )
            jobs.extend((run.to_dict(), out / group["name"] / f"{run.method}_seed{seed}.json") for run in runs)
    check_distinct([str(path) for _, path in jobs], "the study's runs (results files)", source)
    return jobs


def _run_one(values: dict[str, Any], path: str, threads: int, checkpoint: bool, keep: bool) -> tuple[str, float, float]:
    import torch

    torch.set_num_threads(threads)
    from avalanche_exmask.checkpoint import key_from_environment
    from avalanche_exmask.experiment import run_experiment, save_results
    from avalanche_exmask.output_folder import remove_stale_temporaries
    from avalanche_exmask.run_lock import RunLock

    checkpoint_path = Path(path).with_suffix(".ckpt.safetensors") if checkpoint else None
    with RunLock([path]):  # another study writing this run is refused, naming its pid
        remove_stale_temporaries(path, Path(path).with_suffix(".ckpt.safetensors"))
        results = run_experiment(values, checkpoint=checkpoint_path, checkpoint_key=key_from_environment())
        save_results(results, path)
    gc.collect()  # Avalanche's streams and experiences refer to each other: free this run's data before the next
    if checkpoint_path is not None and not keep:
        checkpoint_path.unlink(missing_ok=True)
    return path, results["final_accuracy"], results["wall_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="study YAML")
    parser.add_argument("--out", required=True, help="results root folder")
    parser.add_argument("--only", nargs="*", default=[], help="run only these groups")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--set", nargs="*", default=[], metavar="A.B=VALUE", help="override fields of the base config")
    parser.add_argument("--checkpoint", action="store_true", help="checkpoint every experience; resume interrupted runs")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="as --checkpoint, and keep each run's final checkpoint beside its results")
    parser.add_argument("--methods", nargs="*", default=[], help="run only these methods of the chosen groups")
    parser.add_argument("--seeds", nargs="*", type=int, default=[], help="run only these seeds of the chosen groups")
    args = parser.parse_args()
    study = read_study(args.study, args.set)
    planned = plan(study, Path(args.out), args.only, args.study, args.methods, args.seeds)
    if not planned:
        raise SystemExit(f"error: {args.study}: no run matches --only {args.only} --methods {args.methods} --seeds {args.seeds}")
    jobs = [(values, path) for values, path in planned if not path.exists()]
    print(f"{len(jobs)} runs to do", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(_run_one, merge(values, {"logging": {"progress": False}}), str(path), args.threads,
                        args.checkpoint or args.keep_checkpoints, args.keep_checkpoints)
            for values, path in jobs
        ]
        for future in as_completed(futures):
            path, final, seconds = future.result()
            print(f"{time.perf_counter() - start:7.0f} s  {path}: final {final:.1f}% ({seconds:.0f} s)", flush=True)
    print(json.dumps({"runs": len(jobs), "wall_seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
