"""Coalesced submission over real HTTP: concurrent single-job POSTs share one actor call and one commit.

A job's ``created_at`` is the clock of the actor call that enqueued it, so jobs that share a call
share it: that is how these tests see coalescing from outside.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from actors.facade import queue_actor
from serve.client import AsyncClient, Client

pytestmark = pytest.mark.ray

N = 40


async def _post(s, url, body, headers):
    async with s.post(url, json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def _jobs_of(s, api, headers, queue) -> dict[int, dict]:
    """The jobs of a queue by their payload's ``n``."""
    async with s.get(f"{api}/v1/jobs", params={"queue": queue, "limit": "500"}, headers=headers) as r:
        assert r.status == 200, await r.text()
        return {job["payload"]["n"]: job for job in (await r.json())["jobs"]}


async def _concurrently(s, api, headers, specs):
    # One connection per request, all sent at once: the replica sees them in the same moment.
    return await asyncio.gather(*(_post(s, f"{api}/v1/jobs", spec, headers) for spec in specs))


async def test_concurrent_single_posts_share_a_call_and_each_gets_its_own_job(api, headers):
    queue = "coalesce-own"
    specs = [{"type": "noop", "queue": queue, "delay": 3600, "payload": {"n": i}} for i in range(N)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=N)) as s:
        await _post(s, f"{api}/v1/jobs", {**specs[0], "payload": {"n": -1}}, headers)  # the queue exists
        answers = await _concurrently(s, api, headers, specs)
        assert [status for status, _ in answers] == [201] * N, answers
        jobs = [job for _, job in answers]
        assert [job["payload"] for job in jobs] == [{"n": i} for i in range(N)]
        assert len({job["id"] for job in jobs}) == N
        assert all(job["read_token"] and job["created"] for job in jobs)
        stored = await _jobs_of(s, api, headers, queue)
        assert all(stored[i]["id"] == jobs[i]["id"] for i in range(N))
    calls = len({job["created_at"] for job in jobs})
    assert calls < N, "every request made its own actor call: nothing was coalesced"


async def test_a_bad_spec_fails_only_its_own_request(api, headers):
    queue = "coalesce-bad"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=N)) as s:
        lone_status, lone = await _post(s, f"{api}/v1/jobs", {"type": "noop", "queue": queue, "priority": "high"},
                                        headers)
        assert lone_status == 422
        specs = [{"type": "noop", "queue": queue, "delay": 3600, "payload": {"n": i}} for i in range(N)]
        specs[7] = {**specs[7], "priority": "high"}
        specs[23] = {**specs[23], "type": "no-such-type"}
        answers = await _concurrently(s, api, headers, specs)
        for i, (status, body) in enumerate(answers):
            if i in (7, 23):
                assert status == 422, body
                assert "index" not in body and not body["message"].startswith("job ")
            else:
                assert status == 201 and body["payload"] == {"n": i}, body
        assert answers[7][1] == lone  # the error a lone request gets
        assert "no-such-type" in answers[23][1]["message"]
        stored = await _jobs_of(s, api, headers, queue)
        assert sorted(stored) == [i for i in range(N) if i not in (7, 23)]
    assert len({body["created_at"] for status, body in answers if status == 201}) < N - 2


async def test_the_short_way_answers_as_the_route_does(api, headers, settings):
    """One job per POST with the API token skips FastAPI's routing (serve/submit.py); a query string sends
    the same request through the route. Both answer alike, refusals included, and every other token, body
    or list still reaches the route."""
    queue = "short-way"
    spec = {"type": "noop", "queue": queue, "delay": 3600, "payload": {"n": 1}, "unique_key": "short-1"}
    async with aiohttp.ClientSession() as s:
        short = [await _post(s, f"{api}/v1/jobs", spec, headers) for _ in range(2)]
        routed = [await _post(s, f"{api}/v1/jobs?via=route", {**spec, "unique_key": "short-2"}, headers)
                  for _ in range(2)]
        assert [status for status, _ in short] == [status for status, _ in routed] == [201, 200], (short, routed)
        assert short[0][1]["id"] == short[1][1]["id"] and routed[0][1]["id"] == routed[1][1]["id"]
        for (_, one), (_, other) in zip(short, routed):
            assert set(one) == set(other) and one["payload"] == other["payload"] and one["read_token"]
        refusals = [({"type": "noop", "queue": queue, "priority": "high"}, headers),  # the queue refuses it
                    ({"type": "no-such-type", "queue": queue}, headers),
                    ({"type": "noop", "queue": "no/such"}, headers),  # a bad queue name: the route's check
                    ({"type": "noop", "queue": queue}, {"Authorization": "Bearer nope"}),
                    ({"type": "noop", "queue": queue}, {"Authorization": f"Bearer {settings.worker_token}"})]
        for body, sent in refusals:
            answers = [await _post(s, f"{api}/v1/jobs{q}", body, sent) for q in ("", "?via=route")]
            assert answers[0] == answers[1] and answers[0][0] in (401, 403, 422), answers
        async with s.post(f"{api}/v1/jobs", data=b'{"type": ', headers=headers) as r:
            assert r.status == 400 and "not valid JSON" in (await r.json())["message"]
        status, jobs = await _post(s, f"{api}/v1/jobs", [{"type": "noop", "queue": queue, "delay": 3600}] * 2,
                                   headers)
        assert status == 201 and len(jobs) == 2


async def test_killed_between_coalesce_and_commit_503_and_absent_or_201_and_present(api, headers, settings,
                                                                                   ray_cluster):
    """SIGSTOP the queue actor, let coalesced requests reach it, SIGKILL it: never 201 and missing."""
    queue = "coalesce-kill"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=N)) as s:
        status, _ = await _post(s, f"{api}/v1/jobs", {"type": "noop", "queue": queue, "delay": 3600,
                                                      "payload": {"n": -1}}, headers)
        assert status == 201
        pid = (await queue_actor(queue, settings).ping.remote())["pid"]
        specs = [{"type": "noop", "queue": queue, "delay": 3600, "payload": {"n": i}} for i in range(N)]
        os.kill(pid, signal.SIGSTOP)  # the actor takes the call but cannot run it
        try:
            sent = asyncio.ensure_future(_concurrently(s, api, headers, specs))
            await asyncio.sleep(2.0)
            assert not sent.done(), "answered while the actor was stopped: not after its commit"
        finally:
            os.kill(pid, signal.SIGKILL)
        answers = await asyncio.wait_for(sent, 120)
        statuses = [status for status, _ in answers]
        assert set(statuses) <= {201, 503}, answers
        assert 503 in statuses, "the kill did not land between coalesce and commit"
        for status, body in answers:
            if status == 503:
                assert body["error"] == "QueueUnavailable" and "retry" in body["message"]
        for _ in range(100):  # the restarted actor answers again
            status, _ = await _post(s, f"{api}/v1/jobs", {"type": "noop", "queue": queue, "delay": 3600,
                                                          "payload": {"n": N}}, headers)
            if status == 201:
                break
            await asyncio.sleep(0.2)
        stored = await _jobs_of(s, api, headers, queue)
    for i, (status, body) in enumerate(answers):
        if status == 201:
            assert stored.get(i, {}).get("id") == body["id"], f"request {i}: 201 and missing"
        else:
            assert i not in stored, f"request {i}: 503 but its job exists"


async def test_async_client_batches_concurrent_submits_and_submit_many(api, settings):
    queue = "client-async"
    async with AsyncClient(api, settings.api_token) as client:
        jobs = await asyncio.gather(*(client.submit("noop", {"n": i}, queue=queue, delay=3600) for i in range(N)),
                                    client.submit("noop", {"n": -1}, queue=queue, priority="high"),
                                    return_exceptions=True)
        *good, bad = jobs
        assert [job["payload"] for job in good] == [{"n": i} for i in range(N)]
        assert bad.status == 422 and "priority" in str(bad)
        assert client._batcher.items > client._batcher.calls  # several jobs per request
        many = await client.submit_many([{"type": "noop", "queue": q, "delay": 3600, "payload": {"n": i}}
                                         for i, q in enumerate([queue, "client-async-2"] * 3)])
        assert [(job["queue"], job["payload"]["n"]) for job in many] == \
            [(q, i) for i, q in enumerate([queue, "client-async-2"] * 3)]


def test_sync_client_submit_many_and_threads(api, settings):
    from concurrent.futures import ThreadPoolExecutor

    client = Client(api, settings.api_token)
    specs = [{"type": "noop", "queue": "client-sync", "delay": 3600, "payload": {"n": i}} for i in range(2500)]
    jobs = client.submit_many(specs)
    assert [job["payload"]["n"] for job in jobs] == list(range(2500)) and len({j["id"] for j in jobs}) == 2500
    with ThreadPoolExecutor(16) as pool:
        jobs = list(pool.map(lambda i: client.submit("noop", {"n": i}, queue="client-sync", delay=3600), range(64)))
    assert [job["payload"] for job in jobs] == [{"n": i} for i in range(64)]
    assert client._batcher.calls < 64


def test_cli_submit_many_and_count(api, settings, tmp_path):
    """`dojo submit-many FILE` and `dojo submit TYPE --count N` send lists, one line per job back."""
    env = {**os.environ, "DOJO_URL": api, "DOJO_API_TOKEN": settings.api_token}

    def dojo(*args):
        return subprocess.run([sys.executable, "-m", "serve.cli", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    specs = tmp_path / "specs.jsonl"
    specs.write_text("\n".join(json.dumps({"type": "noop", "delay": 3600, "payload": {"n": i}}) for i in range(5)))
    done = dojo("submit-many", str(specs), "--queue", "cli-many")
    assert done.returncode == 0, done.stderr
    jobs = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(j["queue"], j["type"], j["created"]) for j in jobs] == [("cli-many", "noop", True)] * 5
    assert len({j["id"] for j in jobs}) == 5
    done = dojo("submit", "noop", "--count", "3", "--delay", "3600", "--queue", "cli-many")
    assert done.returncode == 0, done.stderr
    assert len({json.loads(line)["id"] for line in done.stdout.splitlines()}) == 3
    done = dojo("submit-many", str(tmp_path / "missing.jsonl"))
    assert done.returncode != 0 and "does not exist" in done.stderr
    (tmp_path / "bad.json").write_text('[{"type": "noop", "priority": "high"}]')
    done = dojo("submit-many", str(tmp_path / "bad.json"))
    assert done.returncode != 0 and "priority" in done.stderr
