"""Execute the notebooks in place, so that they are committed with their outputs (figures visible
where the repository is browsed). They read the results under ``results/`` (see each notebook).

Usage::

    python benchmarks/execute_notebooks.py                 # every notebook in notebooks/
    python benchmarks/execute_notebooks.py notebooks/masks.ipynb
"""
from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="notebooks (default: notebooks/*.ipynb)")
    args = parser.parse_args()
    paths = [Path(p) for p in args.paths] or sorted(Path(__file__).parent.parent.joinpath("notebooks").glob("*.ipynb"))
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
        nbformat.write(notebook, path)
        print(f"executed {path}")


if __name__ == "__main__":
    main()
