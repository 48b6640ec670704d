"""notebooks/routing.ipynb executes top to bottom on small journals (so it never rots)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "routing.ipynb"


def test_routing_notebook_when_executed_then_every_cell_runs_and_compares_three_runs(
    tmp_path: Path,
) -> None:
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    nb = nbformat.read(work / NOTEBOOK.name, as_version=4)
    NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    ).execute()
    journals = work / "journals" / "notebook"
    assert (journals / "model.parquet").is_file()
    for run in ("nb-demo", "nb-demo-static", "nb-demo-model"):
        assert (journals / run / "manifest.json").is_file(), run
    assert (journals / "comparison.png").stat().st_size > 0
    comparison = [
        c for c in nb.cells if c.cell_type == "code" and "comparison = pl.DataFrame" in c.source
    ]
    [cell] = comparison
    html = "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)
    for name in ("as recorded", "static router", "model router"):
        assert name in html
