"""Print markdown tables of results files: mean ± std over seeds, and paired differences
(per seed, 95% Student-t intervals) against baselines.

Usage::

    python benchmarks/summarise.py results/synthetic/main                 # table only
    python benchmarks/summarise.py results/synthetic/main --versus raw mrdc cim
"""
from __future__ import annotations

import argparse

from avalanche_exmask.reporting import aggregate, load_results, markdown_table, paired_differences, paired_markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="results files or folders")
    parser.add_argument("--versus", nargs="*", default=[], help="baseline group names for paired differences")
    parser.add_argument("--key", default="final_accuracy", help="figure compared (e.g. ncm_final_accuracy)")
    args = parser.parse_args()
    runs = load_results(args.paths)
    print(markdown_table(aggregate(runs)))
    for baseline in args.versus:
        print(f"\nPaired differences of {args.key} against {baseline}:\n")
        print(paired_markdown(paired_differences(runs, baseline, args.key), baseline, args.key))


if __name__ == "__main__":
    main()
