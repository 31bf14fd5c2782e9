"""The demo notebook runs top to bottom on a trained run, so it cannot rot."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "demo.ipynb"


def test_demo_notebook_executes(trained_run, synthetic_root, monkeypatch):
    monkeypatch.setenv("CROSSVIS_RUN", str(trained_run))
    monkeypatch.setenv("CROSSVIS_DATA", str(synthetic_root))
    # The kernel must be this interpreter (the project's venv), whatever is first on PATH.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs)
    assert "tracks:" in text and "loss:" in text
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == 2  # the frames with tracks, the training curves
