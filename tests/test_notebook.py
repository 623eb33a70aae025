"""The quick-start notebook executes, top to bottom, on the embedded data with a tiny model."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

pytestmark = pytest.mark.slow  # minutes: `pytest -m "not slow"` leaves it out


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
  path = os.path.join(REPO, "notebooks", "quickstart.ipynb")
  notebook = nbformat.read(path, as_version=4)
  monkeypatch.setenv("STARSSE_NOTEBOOK_SMOKE", "1")
  run_dir = tmp_path / "notebooks"
  run_dir.mkdir()
  os.symlink(os.path.join(REPO, "starsse_jax"), tmp_path / "starsse_jax")  # '..' is the package
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(run_dir)}}).execute()
  text = "\n".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []))
  assert text.count("| ensemble of 3 (starsse) |") == 2  # a ResNet, then a module of one's own
  assert "user:MyNet" in text
  assert "uniform" in text and "greedy" in text
  images = [out for cell in notebook.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
  assert len(images) == 2
  assert (run_dir / "notebook_run" / "results.json").is_file()
