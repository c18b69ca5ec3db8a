"""Run a study: groups of runs (method x seed x config overrides) in parallel worker processes,
resumable (a run whose results file exists is skipped).

A study file (YAML) holds a ``base`` config (a nested :class:`~avalanche_exmask.config.RunConfig`
mapping) and ``groups``, each with a ``name`` (its results folder), ``methods``, ``seeds`` and
optional ``set`` (a nested mapping merged over the base). Every run of every group is validated
before the first one starts. Runs are
ordered seed-major within each group and groups in file order, so an interrupted study leaves
complete seeds of the first groups. Every worker runs one experiment at a time with
``--threads`` intra-op threads; ``--workers x --threads`` should not exceed the cores.

Usage::

    python benchmarks/run_study.py benchmarks/configs/synthetic_study.yaml --out results/synthetic
    python benchmarks/run_study.py benchmarks/configs/synthetic_study.yaml --out results/synthetic --only main
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, section by section (nested mappings merged, the rest replaced)."""
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def plan(study: dict[str, Any], out: Path, only: list[str], source: str) -> list[tuple[dict[str, Any], Path]]:
    """``(validated nested config, results path)`` of every run of the study, in execution order."""
    from avalanche_exmask.config import expand_runs

    every_method = sorted({method for group in study["groups"] for method in group["methods"]})
    jobs = []
    for group in study["groups"]:
        if only and group["name"] not in only:
            continue
        values = merge(study.get("base", {}), group.get("set", {}))
        for seed in group["seeds"]:
            runs = expand_runs(
                {**values, "methods": group["methods"], "seed": seed},
                source=f"{source}, group {group['name']}",
                applicable_to=every_method,
            )
            jobs.extend((run.to_dict(), out / group["name"] / f"{run.method}_seed{seed}.json") for run in runs)
    return jobs


def _run_one(values: dict[str, Any], path: str, threads: int) -> tuple[str, float, float]:
    import torch

    torch.set_num_threads(threads)
    from avalanche_exmask.experiment import run_experiment, save_results

    results = run_experiment(values)
    save_results(results, path)
    return path, results["final_accuracy"], results["wall_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="study YAML")
    parser.add_argument("--out", required=True, help="results root folder")
    parser.add_argument("--only", nargs="*", default=[], help="run only these groups")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    args = parser.parse_args()
    study = yaml.safe_load(Path(args.study).read_text())
    jobs = [(values, path) for values, path in plan(study, Path(args.out), args.only, args.study) if not path.exists()]
    print(f"{len(jobs)} runs to do", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(_run_one, merge(values, {"logging": {"progress": False}}), str(path), args.threads) for values, path in jobs
        ]
        for future in as_completed(futures):
            path, final, seconds = future.result()
            print(f"{time.perf_counter() - start:7.0f} s  {path}: final {final:.1f}% ({seconds:.0f} s)", flush=True)
    print(json.dumps({"runs": len(jobs), "wall_seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
