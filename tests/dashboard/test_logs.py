"""Job logs: captured stdout/stderr of an attempt, GET /v1/jobs/{id}/logs (JSON and live) and `dojo logs`."""

from __future__ import annotations

import json
import sys

import aiohttp
import pytest

from actors import runner
from actors.heartbeat import Heartbeat
from actors.jobs import JobType

from .conftest import submit


class NoActor:
    """The attempt's lines go to the runner's outbox, not to the actor: no call may be made."""

    def __getattr__(self, name):
        raise AssertionError(f"the attempt called the actor's {name}")


def lines(items: list[tuple]) -> list[str]:
    return [line for token, job_id, kind, data in items if kind == "log" for line in data]


def run(perform, payload=None):
    """Run one attempt with a heartbeat that never sends: ``(report, the stream items it left waiting)``."""
    actor = NoActor()
    registry = {"printer": JobType(name="printer", perform=perform)}
    lease = {"token": 7, "job_id": "j_00000000000000000000", "type": "printer", "queue": "default", "attempt": 1,
             "max_attempts": 1, "payload": payload, "phase": "perform"}
    beat = Heartbeat(actor, "r1", "printer", interval=60.0, call=None)  # never started: holds the outbox only
    beat.pending.append(lease)
    report = runner.execute(actor, lease, registry, beat)
    assert beat.outbox == [report] and not beat.pending
    return report, beat.stream.take()


def test_stdout_and_stderr_become_log_lines_and_are_restored():
    before = sys.stdout, sys.stderr

    def perform(ctx, payload):
        print("hello")
        print("to stderr", file=sys.stderr)
        sys.stdout.write("no newline at the end")
        return 1

    report, items = run(perform)
    assert report["outcome"] == "succeeded"
    assert lines(items) == ["hello", "[stderr] to stderr", "no newline at the end"]
    assert all(item[0] == 7 for item in items)
    # The runner's streams route each thread's writes; with no attempt running they reach the originals.
    assert tuple(getattr(stream, "original", stream) for stream in (sys.stdout, sys.stderr)) == before
    assert getattr(getattr(sys.stdout, "local", None), "target", None) is None


def test_output_is_batched_and_capped(monkeypatch):
    monkeypatch.setattr(runner, "LOG_CAPTURE_BYTES", 1000)

    def perform(ctx, payload):
        for i in range(500):
            print(f"line {i:04d}")

    report, items = run(perform)
    logged = lines(items)
    assert len(items) < 500
    assert logged[0] == "line 0000" and "the rest is not captured" in logged[-1]
    assert sum(len(x) + 1 for x in logged[:-1]) <= 1000


def test_each_attempt_of_a_runner_process_logs_its_output_once():
    """The streams a later attempt finds are the runner's routing ones: its lines must not loop back."""
    for _ in range(3):
        report, items = run(lambda ctx, payload: print("once"))
        assert lines(items) == ["once"]


def test_output_of_a_failing_attempt_is_kept():
    def perform(ctx, payload):
        print("about to fail")
        raise RuntimeError("boom")

    report, items = run(perform)
    assert report["outcome"] == "failed" and lines(items) == ["about to fail"]


def test_progress_logs_and_output_keep_the_order_the_job_made_them():
    def perform(ctx, payload):
        ctx.progress(0.1, stage="a")
        ctx.log("one")
        print("two")
        ctx.progress(0.9, stage="b")
        print("three")

    report, items = run(perform)
    assert [(kind, data.get("stage") if kind == "progress" else data) for _, _, kind, data in items] == [
        ("progress", "a"), ("log", ["one", "two"]), ("progress", "b"), ("log", ["three"])]


@pytest.mark.ray
async def test_logs_route_json_and_follow(api, headers):
    async with aiohttp.ClientSession(base_url=api, headers=headers) as http:
        job = await submit(http, {"type": "sleep", "payload": {"seconds": 0.3, "subprocess": True}})
        # Follow: lines as they come, then one `end` event when the job is done.
        events = []
        async with http.get(f"/v1/jobs/{job['id']}/logs", params={"follow": "1"},
                            headers={"Accept": "text/event-stream"}) as response:
            assert response.status == 200
            kind = None
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
                    if kind == "end":
                        break
        assert events[-1] == ("end", {"status": "succeeded"})
        logged = [x for kind, data in events if kind == "log" for x in data["lines"]]
        assert any(x.startswith("child pid ") for x in logged)
        async with http.get(f"/v1/jobs/{job['id']}/logs") as response:
            body = await response.json()
        assert body["status"] == "succeeded" and [x["line"] for x in body["lines"]] == logged
        async with http.get(f"/v1/jobs/{job['id']}/logs", params={"after": body["next_after"]}) as response:
            assert (await response.json())["lines"] == []
        # A job's scoped read token may read its logs; nothing else may.
        async with http.get(f"/v1/jobs/{job['id']}/logs", headers={"Authorization": f"Bearer {job['read_token']}"}) as r:
            assert r.status == 200
        async with aiohttp.ClientSession(base_url=api) as anonymous:
            async with anonymous.get(f"/v1/jobs/{job['id']}/logs") as r:
                assert r.status == 401


@pytest.mark.ray
def test_dojo_logs_cli(api, settings, monkeypatch, capsys):
    import requests

    from serve.cli import main

    monkeypatch.setenv("DOJO_URL", api)
    monkeypatch.setenv("DOJO_API_TOKEN", settings.api_token)
    job = requests.post(f"{api}/v1/jobs", json={"type": "sleep", "payload": {"seconds": 0.2, "subprocess": True}},
                        headers={"Authorization": f"Bearer {settings.api_token}"}, timeout=30).json()
    main(["logs", job["id"], "--follow"])
    captured = capsys.readouterr()
    assert captured.out.startswith("child pid ") and "succeeded" in captured.err
    main(["logs", job["id"]])
    assert capsys.readouterr().out.startswith("child pid ")
