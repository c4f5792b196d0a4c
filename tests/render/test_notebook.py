"""``examples/batch_render.ipynb`` executed top to bottom against the test dojo (nbclient + ipykernel)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
import requests

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "examples" / "batch_render.ipynb"


def _state(api: str, token: str) -> str:
    """What the cluster and the queue looked like: printed when the notebook fails, so a CI log explains it."""
    lines = [f"ray available: {ray.available_resources()}", f"ray total: {ray.cluster_resources()}"]
    headers = {"Authorization": f"Bearer {token}"}
    jobs = requests.get(f"{api}/v1/jobs", params={"type": "render", "limit": 20}, headers=headers, timeout=10).json()
    for job in jobs.get("jobs", []):
        events = requests.get(f"{api}/v1/jobs/{job['id']}/events", headers=headers, timeout=10).json()["events"]
        lines.append(f"{job['id']} {job['status']} attempts={job.get('attempts')} "
                     f"last events: {json.dumps(events[-3:])[:600]}")
    return "\n".join(lines)


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_batch_render_notebook_runs(api, settings, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="pip install nbformat nbclient ipykernel (test extras)")
    nbclient = pytest.importorskip("nbclient", reason="pip install nbformat nbclient ipykernel (test extras)")
    # The kernel inherits this environment: the client inside finds the test dojo through these two.
    monkeypatch.setenv("DOJO_URL", api)
    monkeypatch.setenv("DOJO_API_TOKEN", settings.api_token)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("DOJO_NOTEBOOK_WAIT_S", "200")  # wait() gives up (and says so) before the cell timeout
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    try:
        nbclient.NotebookClient(notebook, timeout=240, startup_timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(REPO)}}).execute()  # raises on any cell error
    except Exception as exc:
        raise AssertionError(f"the notebook failed: {type(exc).__name__}: {str(exc)[-2000:]}\n"
                             f"{_state(api, settings.api_token)}") from exc
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    html = "".join(output.get("data", {}).get("text/html", "") for output in outputs)
    assert html.count("<td>succeeded</td>") == 2, html
    assert html.count(">video</a>") == 2 and "sig=" in html
    progress = "".join(output.get("text", "") for output in outputs if output.get("name") == "stderr")
    assert "100%" in progress, progress  # the wait() bars ran to the end
