"""``ray job submit -- python -m pipelines.batch``: through Ray's real job server, the way Ray users run it.

Each test submits with ``JobSubmissionClient`` to a head of this module's own
(``conftest.RayHead``: dashboard and job server on, token auth, dojo's API
deployed), with a working directory holding a manifest and generated decks.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ENTRYPOINT = "python -m pipelines.batch manifest.csv"  # the README's command


def deck(title: str, slides: int = 1, words: int = 1) -> str:
    note = "これはテストの文章です。" * words
    return "\n---\n".join(f"# {title} {i}\nNote: {note}" for i in range(1, slides + 1)) + "\n"


def workdir(path: Path, decks: dict[str, str], manifest: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in decks.items():
        (path / name).write_text(text, encoding="utf-8")
    (path / "manifest.csv").write_text(manifest, encoding="utf-8")
    return path


def submit(head, directory: Path, entrypoint: str = ENTRYPOINT, env: dict | None = None) -> str:
    return head.jobs.submit_job(entrypoint=entrypoint,
                                runtime_env={"working_dir": str(directory), "env_vars": env or {}})


def wait_final(head, submission: str, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = str(head.jobs.get_job_status(submission).value)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        assert time.monotonic() < deadline, head.jobs.get_job_logs(submission)[-3000:]
        time.sleep(1)


def results_of(logs: str) -> list[dict]:
    """The results table the URL on the logs' last line points to (fetched over HTTP)."""
    last = logs.strip().splitlines()[-1]
    assert last.startswith("results: http"), logs[-3000:]
    with urllib.request.urlopen(last.split(" ", 1)[1], timeout=30) as response:
        assert response.status == 200
        return pq.read_table(io.BytesIO(response.read())).to_pylist()


def batch_id(logs: str) -> str | None:
    for line in logs.splitlines():
        if line.startswith("batch j_"):
            return line.split()[1].rstrip(":")
    return None


@pytest.fixture(scope="module")
def two_decks(tmp_path_factory) -> Path:
    return workdir(tmp_path_factory.mktemp("two") / "wd", {"a.md": deck("A", 2), "b.md": deck("B")},
                   "deck,resolution\na.md,320x180\nb.md,320x180\n")


def test_a_manifest_renders_as_one_batch_job_whose_logs_end_with_the_results_url(head, two_decks):
    submission = submit(head, two_decks)
    assert wait_final(head, submission) == "SUCCEEDED", head.jobs.get_job_logs(submission)[-3000:]
    logs = head.jobs.get_job_logs(submission)
    assert "\r" not in logs
    rows = results_of(logs)
    assert [(r["row"], r["deck"], r["status"], r["reused"]) for r in rows] == [
        (1, "a.md", "succeeded", False), (2, "b.md", "succeeded", False)]
    assert all(r["duration_s"] > 0.5 and r["output_url"].startswith(head.api) for r in rows)
    with urllib.request.urlopen(rows[0]["output_url"], timeout=30) as response:
        assert response.read(12)[4:8] == b"ftyp"
    # One dojo job, tagged with the Ray submission, whose output is the table; the renders are its children.
    batch = head.call("GET", f"/v1/jobs/{batch_id(logs)}")
    assert batch["type"] == "render.batch" and batch["status"] == "succeeded"
    assert batch["payload"]["ray"]["submission_id"] == submission
    assert "results" in head.call("GET", f"/v1/jobs/{batch['id']}/outputs")["urls"]
    assert sorted(j["id"] for j in head.children(batch["id"])) == sorted(r["job_id"] for r in rows)
    # A line per status the driver saw change (it polls: a render that starts at once shows no "queued").
    row1 = [line for line in logs.splitlines() if line.startswith("row 1 (a.md): ")]
    assert row1[-1] == "row 1 (a.md): succeeded" and len(row1) >= 2, logs[-3000:]
    assert {line.rsplit(": ", 1)[1] for line in row1[:-1]} <= {"queued", "running"}, logs[-3000:]
    for line in ("row 2 (b.md): succeeded", "summary: 2/2 final"):
        assert line in logs, logs[-3000:]


def test_the_same_manifest_again_reuses_succeeded_rows(head, two_decks):
    before = head.call("GET", "/v1/jobs?type=render&limit=500")["jobs"]
    first = [j for j in before if j["status"] == "succeeded"]
    assert len(first) >= 2  # the previous test's renders
    submission = submit(head, two_decks)
    assert wait_final(head, submission) == "SUCCEEDED", head.jobs.get_job_logs(submission)[-3000:]
    rows = results_of(head.jobs.get_job_logs(submission))
    assert [(r["status"], r["reused"]) for r in rows] == [("succeeded", True)] * 2
    assert {r["job_id"] for r in rows} <= {j["id"] for j in first}
    after = head.call("GET", "/v1/jobs?type=render&limit=500")["jobs"]
    assert len(after) == len(before), "a re-run queued renders for rows that had succeeded"
    # --force renders every row again.
    forced = submit(head, two_decks, ENTRYPOINT + " --force")
    assert wait_final(head, forced) == "SUCCEEDED", head.jobs.get_job_logs(forced)[-3000:]
    rows = results_of(head.jobs.get_job_logs(forced))
    assert [r["reused"] for r in rows] == [False, False] and not {r["job_id"] for r in rows} & {j["id"] for j in before}


def test_ray_job_stop_cancels_every_unfinished_render(head, tmp_path):
    decks = {f"slow{i}.md": deck(f"S{i}", slides=6, words=12) for i in range(4)}
    manifest = "deck,resolution\n" + "".join(f"{name},320x180\n" for name in decks)
    submission = submit(head, workdir(tmp_path / "wd", decks, manifest))
    deadline = time.monotonic() + 300
    while True:  # stop while the first deck renders
        logs = head.jobs.get_job_logs(submission)
        if ": running" in logs:
            break
        assert time.monotonic() < deadline and "SUCCEEDED" != str(head.jobs.get_job_status(submission).value), logs
        time.sleep(0.2)
    batch = batch_id(logs)
    assert batch, logs
    head.jobs.stop_job(submission)
    deadline = time.monotonic() + 10
    while True:
        children = head.children(batch)
        unfinished = [c for c in children if c["status"] in ("queued", "running", "retrying", "scheduled")]
        if not unfinished:
            break
        assert time.monotonic() < deadline, f"still unfinished 10 s after ray job stop: {unfinished}"
        time.sleep(0.2)
    assert len(children) == 4 and any(c["status"] == "cancelled" for c in children), children
    assert head.call("GET", f"/v1/jobs/{batch}")["status"] == "cancelled"
    assert wait_final(head, submission, 60) in ("STOPPED", "FAILED")


def test_a_driver_killed_outright_leaves_a_batch_the_next_submission_follows(head, tmp_path):
    decks = {f"k{i}.md": deck(f"K{i}", slides=3, words=6) for i in range(2)}
    wd = workdir(tmp_path / "wd", decks, "deck,resolution\n" + "".join(f"{n},320x180\n" for n in decks))
    first = submit(head, wd)
    deadline = time.monotonic() + 300
    while ": running" not in (logs := head.jobs.get_job_logs(first)):
        assert time.monotonic() < deadline, logs
        time.sleep(0.2)
    batch = batch_id(logs)
    pid = int(logs.split("driver pid ", 1)[1].split(")", 1)[0])
    os.kill(pid, signal.SIGKILL)  # no SIGTERM first: the driver cannot cancel anything
    wait_final(head, first, 60)
    second = submit(head, wd)
    assert wait_final(head, second) == "SUCCEEDED", head.jobs.get_job_logs(second)[-3000:]
    logs = head.jobs.get_job_logs(second)
    rows = results_of(logs)
    assert [r["status"] for r in rows] == ["succeeded"] * 2
    # The batch runs on without its driver: the next submission follows it while it is unfinished, or,
    # if it finished first (a quick machine), reuses every row it rendered. Never a second batch.
    assert f"batch {batch} of this manifest is unfinished" in logs or all(r["reused"] for r in rows), logs[-3000:]
    assert sorted(c["id"] for c in head.children(batch)) == sorted(r["job_id"] for r in rows)
    assert len(head.call("GET", f"/v1/jobs?type=render.batch&q={submission_id_of(head, batch)}")["jobs"]) == 1


def submission_id_of(head, batch: str) -> str:
    return head.call("GET", f"/v1/jobs/{batch}")["payload"]["ray"]["submission_id"]


def test_a_row_may_name_an_s3_deck(head, s3_server, tmp_path):  # noqa: F811
    from actors.storage import S3Store

    store = S3Store("batch-decks", endpoint_url=s3_server["endpoint"], access_key=s3_server["access_key"],
                    secret_key=s3_server["secret_key"])
    store.client.create_bucket(Bucket="batch-decks")
    store.put_bytes("in/remote.md", deck("Remote").encode())
    wd = workdir(tmp_path / "wd", {}, "deck,resolution\ns3://batch-decks/in/remote.md,320x180\n")
    env = {"AWS_ACCESS_KEY_ID": s3_server["access_key"], "AWS_SECRET_ACCESS_KEY": s3_server["secret_key"],
           "AWS_ENDPOINT_URL": s3_server["endpoint"], "AWS_DEFAULT_REGION": "us-east-1"}
    submission = submit(head, wd, env=env)
    assert wait_final(head, submission) == "SUCCEEDED", head.jobs.get_job_logs(submission)[-3000:]
    [row] = results_of(head.jobs.get_job_logs(submission))
    assert row["deck"] == "s3://batch-decks/in/remote.md" and row["status"] == "succeeded", row
    shutil.rmtree(wd)
