"""Figure of a study's results: final accuracy (%) against exemplars per class, one point per group and
method (mean over seeds, error bars one standard deviation), from the results files under a folder.

    python benchmarks/plot_study.py results/vitb16-224 --out results/vitb16-224/final_accuracy.png
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from avalanche_exmask.reporting import load_results


def points(root: Path) -> dict[str, tuple[float, float, float, int]]:
    """``{"<group>/<method>": (mean exemplars a class, mean final accuracy %, its std, seeds)}`` of every
    results file ``root/<group>/<method>_seed<k>.json``.

    :raises SystemExit: naming ``root`` if it holds no results file.
    """
    files = sorted(root.glob("*/*_seed*.json"))
    if not files:
        raise SystemExit(f"error: {root}: no results files <group>/<method>_seed<k>.json")
    runs: dict[str, list[tuple[float, float]]] = {}
    for run, path in zip(load_results(files), files, strict=True):
        label = f"{path.parent.name}/{path.stem.rsplit('_seed', 1)[0]}"
        per_class = run.get("exemplars_per_class")  # mean over seen classes
        count = float(per_class or 0.0)
        runs.setdefault(label, []).append((count, float(run["final_accuracy"])))
    out = {}
    for label, values in runs.items():
        counts, accuracies = np.array(values).T
        out[label] = (float(counts.mean()), float(accuracies.mean()), float(accuracies.std()), len(values))
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the study's results folder")
    parser.add_argument("--out", type=Path, default=None, help="figure file (default: <root>/final_accuracy.png)")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = points(args.root)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, (count, mean, std, seeds) in sorted(found.items()):
        axes.errorbar([count], [mean], yerr=[std], fmt="o", capsize=3, label=f"{label} ({seeds} seeds)")
    axes.set_xscale("log")
    axes.set_xlabel("exemplars per class (log)")
    axes.set_ylabel("final accuracy (%)")
    axes.set_title(args.root.name)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    out = args.out or args.root / "final_accuracy.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    print(out)
    return out


if __name__ == "__main__":
    main()
