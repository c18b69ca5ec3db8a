"""The notebooks run top to bottom on a tiny configuration."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

#: Text each notebook's outputs must contain (besides at least one figure).
EXPECTED_TEXT = {
    "reproduce_tables.ipynb": ("| masking", "| naive", "final_accuracy - raw"),
    "masks.ipynb": ("~~", "**", "patches / tokens"),
    "memory_ablation.ipynb": ("| raw |", "| masking |", "samples/class"),
}

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, monkeypatch):
    monkeypatch.setenv("EXMASK_NOTEBOOK_TINY", "1")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    for expected in EXPECTED_TEXT.get(path.name, ()):
        assert expected in text, f"{path.name} printed no {expected!r}"
    figure_cells = [cell for cell in notebook.cells if cell.cell_type == "code" and "display(fig)" in cell.source]
    assert figure_cells, f"{path.name} has no figure cell"
    for cell in figure_cells:
        assert any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])), f"a figure cell of {path.name} drew nothing"


def test_notebooks_exist():
    assert NOTEBOOKS, "no notebooks found"
