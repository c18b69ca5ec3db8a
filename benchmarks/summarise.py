"""Print markdown tables of results files: mean ± std over seeds, and paired differences
(per seed, 95% Student-t intervals) against baselines.

Usage::

    python benchmarks/summarise.py results/synthetic/main                 # table only
    python benchmarks/summarise.py results/synthetic/main --versus raw mrdc cim
    # a baseline named by its results (a folder or files among the paths) rather than its label:
    python benchmarks/summarise.py results/synthetic/paper-mrdc results/synthetic/main --versus results/synthetic/main/mrdc_seed*.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

from avalanche_exmask.reporting import aggregate, load_results, markdown_table, paired_differences, paired_markdown, variant_names


def baseline_labels(runs: list[dict], versus: list[str]) -> list[str]:
    """The variant labels of the ``--versus`` arguments: a label as given, or, for an existing results
    folder or file, the label its runs carry among ``runs`` (one per distinct label, in order).

    :raises SystemExit: naming a path whose runs are not among ``runs``.
    """
    names = dict(zip((run["_file"] for run in runs), variant_names(runs), strict=True))
    labels: list[str] = []
    for item in versus:
        path = Path(item)
        if not path.exists():
            labels.append(item)
            continue
        files = [str(f) for f in (sorted(path.glob("*.json")) if path.is_dir() else [path])]
        found = [names[f] for f in files if f in names]
        if not found:
            raise SystemExit(f"error: --versus {item}: none of its results files is among the paths summarised")
        labels.extend(label for label in dict.fromkeys(found) if label not in labels)
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="results files or folders")
    parser.add_argument("--versus", nargs="*", default=[],
                        help="baselines for paired differences: variant labels, or results folders/files among the paths")
    parser.add_argument("--key", default="final_accuracy", help="figure compared (e.g. ncm_final_accuracy)")
    args = parser.parse_args()
    runs = load_results(args.paths)
    print(markdown_table(aggregate(runs)))
    for baseline in baseline_labels(runs, args.versus):
        print(f"\nPaired differences of {args.key} against {baseline}:\n")
        print(paired_markdown(paired_differences(runs, baseline, args.key), baseline, args.key))


if __name__ == "__main__":
    main()
