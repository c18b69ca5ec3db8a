"""Print a markdown table (mean ± std over seeds) of results files.

Usage::

    python benchmarks/summarise.py results/main
"""
from __future__ import annotations

import argparse

from avalanche_exmask.reporting import aggregate, load_results, markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="results files or folders")
    args = parser.parse_args()
    print(markdown_table(aggregate(load_results(args.paths))))


if __name__ == "__main__":
    main()
