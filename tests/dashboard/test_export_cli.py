"""`dojo export` against the real API: every attempt of the jobs created in the window, as Parquet."""

from __future__ import annotations

import time

import pyarrow.parquet as pq
import pytest
import requests

pytestmark = pytest.mark.ray


def test_dojo_export(api, settings, monkeypatch, tmp_path, capsys):
    from serve.cli import main

    monkeypatch.setenv("DOJO_URL", api)
    monkeypatch.setenv("DOJO_API_TOKEN", settings.api_token)
    auth = {"Authorization": f"Bearer {settings.api_token}"}
    since = time.time()
    job = requests.post(f"{api}/v1/jobs", json={"type": "flaky", "payload": {"succeed_on": 2},
                                                "backoff": {"strategy": "fixed", "delay": 0}},
                        headers=auth, timeout=30).json()
    deadline = time.monotonic() + 60
    while requests.get(f"{api}/v1/jobs/{job['id']}", headers=auth, timeout=30).json()["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    out = tmp_path / "history.parquet"
    main(["export", "--since", str(since - 1), "--until", str(time.time() + 1), str(out)])
    assert "wrote" in capsys.readouterr().out
    rows = [r for r in pq.read_table(out).to_pylist() if r["job_id"] == job["id"]]
    assert [(r["attempt"], r["outcome"]) for r in rows] == [(1, "failed"), (2, "succeeded")]
    assert rows[0]["error_message"] == "attempt 1 fails on purpose"
    main(["export", "--since", "1h", "--until", "2000-01-01", str(tmp_path / "empty.parquet")])
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0
    with pytest.raises(SystemExit, match="cannot read time"):
        main(["export", "--since", "yesterday-ish", str(tmp_path / "x.parquet")])
