"""One process against ``torchrun --nproc_per_node N`` on the same config: wall time and accuracy.

Each seed of the config runs twice through the command line, once as ``python -m avalanche_exmask
run`` with ``--single-threads`` threads (default ``N``: the same cores) and once as ``torchrun
--standalone --nproc_per_node N -m avalanche_exmask run`` with one thread per process, at the same
global batch. The table gives
both wall times (the whole command, start-up included, and the run itself as the results file
records it), final accuracies and their paired difference, and whether every rank held the same
buffer. Results files go to ``OUT/one`` and ``OUT/ranksN``.

Usage::

    python benchmarks/distributed_scaling.py benchmarks/configs/distributed_tiny.yaml --seeds 0 1 2 3 4 --out results/distributed
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from avalanche_exmask.reporting import t_interval


def _launch(command: list[str], threads: int) -> float:
    """Run ``command`` with ``threads`` threads per process; its wall time in seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--single-threads", type=int, default=None, help="threads of the one-process run (default: --nproc)")
    parser.add_argument("--out", default="results/distributed")
    args = parser.parse_args()
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    rows, one, many = [], [], []
    for seed in args.seeds:
        common = ["-m", "avalanche_exmask", "run", args.config, "--set", f"seed={seed}", "--overwrite", "--no-checkpoint"]
        single_dir, ranks_dir = Path(args.out) / "one", Path(args.out) / f"ranks{args.nproc}"
        single_s = _launch([sys.executable, *common, "--out", str(single_dir)], threads=args.single_threads or args.nproc)
        ranks_s = _launch([torchrun, "--standalone", "--nproc_per_node", str(args.nproc), *common, "--out", str(ranks_dir)], threads=1)
        name = f"{Path(args.config).stem}_*_seed{seed}.json"
        single, ranks = (json.loads(next(folder.glob(name)).read_text()) for folder in (single_dir, ranks_dir))
        one.append(single)
        many.append(ranks)
        shas = ranks.get("buffer_sha256_per_rank", [])
        rows.append(
            f"{seed:>4} {single_s:>9.1f} {single['wall_seconds']:>8.1f} {ranks_s:>9.1f} {ranks['wall_seconds']:>8.1f} "
            f"{single['final_accuracy']:>9.1f} {ranks['final_accuracy']:>9.1f} {str(len(set(shas)) == 1 and len(shas) == args.nproc):>9}"
        )
    print(f"{args.config}: 1 process x {args.single_threads or args.nproc} threads against {args.nproc} processes x 1 thread (seconds, %)")
    print(f"{'seed':>4} {'1p cmd s':>9} {'1p run s':>8} {'Np cmd s':>9} {'Np run s':>8} {'1p acc':>9} {'Np acc':>9} {'same buf':>9}")
    print("\n".join(rows))
    if len(args.seeds) > 1:
        mean, low, high = t_interval([b["final_accuracy"] - a["final_accuracy"] for a, b in zip(one, many, strict=True)])
        print(f"final accuracy, {args.nproc} processes - 1 (paired by seed): {mean:+.1f} [{low:+.1f}, {high:+.1f}] (95%)")


if __name__ == "__main__":
    main()
