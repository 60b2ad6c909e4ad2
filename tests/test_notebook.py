"""notebooks/birdcat.ipynb executes top to bottom on offline quick settings, and is stored clean."""

import os
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "birdcat.ipynb"
# Injected after the `parameters` cell, as papermill does: synthetic data, a short run.
QUICK = """
DATA = "synthetic"
MAX_TRAIN = 600
MAX_TEST = 200
EPOCHS = 2
NUM_TEMPERATURES = 50
OUT = {out!r}
"""


def test_stored_without_outputs_and_with_a_parameters_cell():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and 'DATA = "tfds"' in tagged[0].source
    assert "colab.research.google.com/github/" in notebook.cells[0].source
    assert "pip install -q -e 'jaxcal[hub]'" in code[0].source


def test_executes_on_synthetic_quick_settings(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    index = next(
        i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
    )
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(QUICK.format(out=str(tmp_path))))
    root = str(NOTEBOOK.parents[1])
    env_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = root if not env_path else f"{root}{os.pathsep}{env_path}"
    try:
        client = nbclient.NotebookClient(
            notebook,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path)}},
        )
        client.execute()
    finally:
        if env_path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = env_path
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "JAX " in text and " sees " in text
    assert "synthetic" in text.lower()
    assert "test accuracy" in text and " at T = " in text
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) >= 2 + 4  # image grid, loss curves, then the study's four figures
    assert (tmp_path / "temperature_overlay.png").is_file()
