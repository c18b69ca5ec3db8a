"""Run a study: groups of runs (method x seed x config overrides), on this machine or a cluster,
resumable (a run whose results file exists is skipped).

A study file (YAML) holds a ``base`` config (a nested :class:`~avalanche_exmask.config.RunConfig`
mapping), ``groups``, each with a ``name`` (its results folder), ``methods``, ``seeds`` and
optional ``set`` (a nested mapping merged over the base), and optionally ``launcher`` (the fields
of :class:`~avalanche_exmask.study.launcher.LauncherOptions`; the command line's launcher flags
override them). Every run of every group is validated before the first one is submitted. Runs are
ordered seed-major within each group and groups in file order, so an interrupted study leaves
complete seeds of the first groups.

Launchers (``--launcher``, :mod:`avalanche_exmask.study`): ``local`` (default) runs ``--workers``
runs at a time in processes of this machine with ``--threads`` intra-op threads each
(``--workers x --threads`` should not exceed the cores); ``submitit`` submits a SLURM job array
(``--partition``, ``--account``, ``--gpus-per-run``, ``--time-limit``; no sbatch file); ``ray``
submits Ray tasks to a cluster (``--ray-address``). Every launcher writes the same files at the
same paths (``OUT/<group>/<method>_seed<seed>.json``; a failed run's log beside it as ``.log``),
prints each finished run and a study progress line (done / running / failed / pending, elapsed,
estimate), reports failed runs with their logs and ends with a JSON summary counting the missing
runs (exit status 1 when any is missing). Cluster launchers need ``pip install 'avalanche-exmask[cluster]'``
and a file system shared with the nodes (docs/cluster.md).

``--set a.b=value`` overrides a field of the base (as the runner's ``--set``; e.g. a data set's
root); ``--checkpoint`` writes a checkpoint after every experience of every run, beside its results
file, and resumes an interrupted run from it (a run preempted on SLURM is requeued, a Ray task
whose node died is retried, a killed local study is launched again: each continues after its last
experience); ``--keep-checkpoints`` also keeps each run's final checkpoint (its trained model and
exemplar buffer, e.g. for ``benchmarks/mask_quality.py --run``). ``--methods`` and ``--seeds`` keep
only those runs of the chosen groups.

Usage::

    python benchmarks/run_study.py benchmarks/configs/synthetic_study.yaml --out results/synthetic
    python benchmarks/run_study.py benchmarks/configs/synthetic_study.yaml --out results/synthetic --only main
    python benchmarks/run_study.py benchmarks/configs/synthetic_study.yaml --out runs --only main \
        --methods masking --seeds 0 --keep-checkpoints
    python benchmarks/run_study.py benchmarks/configs/table1_mm_imagenet_r.yaml --out results/mm_imagenet_r \
        --workers 1 --threads 8 --checkpoint --set benchmark.args.root=DATA device=cuda
    python benchmarks/run_study.py benchmarks/configs/table1_mm_imagenet_r.yaml --out /shared/results/mm_imagenet_r \
        --launcher submitit --partition gpu --gpus-per-run 1 --threads 8 --time-limit 720 --checkpoint \
        --set benchmark.args.root=/shared/data/imagenet-r device=cuda
    python benchmarks/run_study.py benchmarks/configs/table1_mm_imagenet_r.yaml --out /shared/results/mm_imagenet_r \
        --launcher ray --ray-address auto --gpus-per-run 1 --threads 8 --checkpoint \
        --set benchmark.args.root=/shared/data/imagenet-r device=cuda
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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
                on_this_machine=False,  # a launcher may run it elsewhere; run_experiment checks device and weights there
            )
            jobs.extend((run.to_dict(), out / group["name"] / f"{run.method}_seed{seed}.json") for run in runs)
    check_distinct([str(path) for _, path in jobs], "the study's runs (results files)", source)
    return jobs


def study_runs(planned: Sequence[tuple[dict[str, Any], Path]], options: Any, checkpoint: bool, keep: bool) -> list[Any]:
    """The planned runs as :class:`~avalanche_exmask.study.runs.StudyRun` (no progress bars; the
    launcher options' threads and GPUs; checkpointed with ``checkpoint`` or ``keep``, the final
    checkpoint kept with ``keep``)."""
    from avalanche_exmask.study.runs import StudyRun

    return [
        StudyRun(merge(values, {"logging": {"progress": False}}), path, threads=options.threads, gpus=options.gpus_per_run,
                 checkpoint=checkpoint, keep_checkpoint=keep)
        for values, path in planned
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study of the command line ``argv``; 1 when runs are missing at the end, else 0."""
    from avalanche_exmask.study.launcher import add_launcher_arguments, launch_study, launcher_options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="study YAML")
    parser.add_argument("--out", required=True, help="results root folder")
    parser.add_argument("--only", nargs="*", default=[], help="run only these groups")
    parser.add_argument("--set", nargs="*", default=[], metavar="A.B=VALUE", help="override fields of the base config")
    parser.add_argument("--checkpoint", action="store_true", help="checkpoint every experience; resume interrupted runs")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="as --checkpoint, and keep each run's final checkpoint beside its results")
    parser.add_argument("--methods", nargs="*", default=[], help="run only these methods of the chosen groups")
    parser.add_argument("--seeds", nargs="*", type=int, default=[], help="run only these seeds of the chosen groups")
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    study = read_study(args.study, args.set)
    options = launcher_options(study, args, args.study)
    planned = plan(study, Path(args.out).resolve(), args.only, args.study, args.methods, args.seeds)
    if not planned:
        raise SystemExit(f"error: {args.study}: no run matches --only {args.only} --methods {args.methods} --seeds {args.seeds}")
    runs = study_runs(planned, options, args.checkpoint, args.keep_checkpoints)
    report = launch_study(runs, options, Path(args.out).resolve(), say=lambda line: print(line, flush=True))
    for results, where in report.failed.items():
        print(f"failed: {results}: {where}", flush=True)
    print(report.summary(), flush=True)
    return 1 if report.missing else 0


if __name__ == "__main__":
    sys.exit(main())
