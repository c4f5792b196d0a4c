"""``examples/batch_render.ipynb`` executed top to bottom against the test dojo (nbclient + ipykernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "examples" / "batch_render.ipynb"


@pytest.mark.ray
def test_batch_render_notebook_runs(api, settings, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="pip install nbformat nbclient ipykernel (test extras)")
    nbclient = pytest.importorskip("nbclient", reason="pip install nbformat nbclient ipykernel (test extras)")
    # The kernel inherits this environment: the client inside finds the test dojo through these two.
    monkeypatch.setenv("DOJO_URL", api)
    monkeypatch.setenv("DOJO_API_TOKEN", settings.api_token)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()  # raises on any cell error
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    html = "".join(output.get("data", {}).get("text/html", "") for output in outputs)
    assert html.count("<td>succeeded</td>") == 2, html
    assert html.count(">video</a>") == 2 and "sig=" in html
    progress = "".join(output.get("text", "") for output in outputs if output.get("name") == "stderr")
    assert "100%" in progress, progress  # the wait() bars ran to the end
