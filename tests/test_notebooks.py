"""Every notebook (notebooks/*.py, jupytext percent format) runs top to bottom at reduced
settings (FEATVIZ_FAST=1) in a fresh python3 kernel; a failing cell fails the test."""
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason="pip install -e '.[notebooks]'")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[notebooks]'")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


def test_there_are_six_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    import nbformat
    monkeypatch.setenv("FEATVIZ_FAST", "1")
    ipynb = tmp_path / f"{path.stem}.ipynb"
    jupytext.write(jupytext.read(path), ipynb)
    notebook = nbformat.read(ipynb, as_version=4)
    # jupyter_client starts the "python3" kernel with sys.executable; check it is this venv's.
    notebook.cells.append(nbformat.v4.new_code_cell(
        f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.prefix"))
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []  # execute() raises CellExecutionError first; this is a second check
