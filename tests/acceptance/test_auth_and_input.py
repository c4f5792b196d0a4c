"""Promises 5 and 6: closed by default, and bad input changes nothing."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest

pytestmark = pytest.mark.ray

SAMPLE_ID = "j_00000000000000000000"


async def _routes(s, api, headers):
    async with s.get(f"{api}/openapi.json", headers=headers) as r:
        assert r.status == 200
        spec = await r.json()
    for path, methods in spec["paths"].items():
        for method in methods:
            yield method.upper(), re.sub(r"\{[^}]+\}", lambda m: {"{job_id}": SAMPLE_ID, "{lease_id}":
                                                                  f"{SAMPLE_ID}:1"}.get(m.group(0), "default"), path)


@pytest.mark.parametrize("token", [None, "wrong-token", "Basic abc"])
async def test_every_endpoint_refuses_a_missing_or_wrong_token(api, headers, token):
    auth = {} if token is None else {"Authorization": token if " " in token else f"Bearer {token}"}
    async with aiohttp.ClientSession() as s:
        checked = 0
        async for method, path in _routes(s, api, headers):
            async with s.request(method, api + path, headers=auth, data="{}") as r:
                body = await r.json()
                if path == "/healthz":
                    assert r.status == 200
                    continue
                assert r.status == 401, (method, path, r.status, body)
                assert body["error"] == "Unauthorized" and body["message"]
                checked += 1
        assert checked >= 14
        for path in ("/openapi.json", "/docs"):
            async with s.get(api + path, headers=auth) as r:
                assert r.status == 401
        for path in (f"/v1/jobs/{SAMPLE_ID}/events", "/v1/queues/default/events", "/v1/channels/x"):
            async with s.ws_connect(api + path, headers=auth) as ws:
                msg = await ws.receive(timeout=10)
                assert json.loads(msg.data)["error"] == "Unauthorized"
                await ws.receive(timeout=10)
                assert ws.close_code == 4401


async def test_job_scoped_token_reads_only_its_job(api, headers, settings):
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{api}/v1/jobs", json=[{"type": "echo", "payload": 1}, {"type": "echo", "payload": 2}],
                          headers=headers) as r:
            a, b = await r.json()
        scoped = {"Authorization": f"Bearer {a['read_token']}"}
        async with s.get(f"{api}/v1/jobs/{a['id']}", headers=scoped) as r:
            assert r.status == 200
        # In the URL only where a browser cannot send a header: an event stream (EventSource), a WebSocket.
        async with s.get(f"{api}/v1/jobs/{a['id']}/events?token={a['read_token']}",
                         headers={"Accept": "text/event-stream"}) as r:
            assert r.status == 200
        async with s.get(f"{api}/v1/jobs/{b['id']}", headers=scoped) as r:
            assert r.status == 403 and "cannot read job" in (await r.json())["message"]
        async with s.post(f"{api}/v1/jobs/{a['id']}/cancel", headers=scoped) as r:
            assert r.status == 403
        async with s.get(f"{api}/v1/jobs", headers=scoped) as r:
            assert r.status == 403
        async with s.ws_connect(f"{api}/v1/jobs/{b['id']}/events?token={a['read_token']}") as ws:
            assert json.loads((await ws.receive(timeout=10)).data)["error"] == "Forbidden"
        async with s.ws_connect(f"{api}/v1/jobs/{a['id']}/events?token={a['read_token']}") as ws:
            assert json.loads((await ws.receive(timeout=10)).data)["seq"] == 1
        worker = {"Authorization": f"Bearer {settings.worker_token}"}
        async with s.post(f"{api}/v1/jobs", json={"type": "echo"}, headers=worker) as r:
            assert r.status == 403
        tampered = a["read_token"][:-2] + ("AA" if not a["read_token"].endswith("AA") else "BB")
        async with s.get(f"{api}/v1/jobs/{a['id']}", headers={"Authorization": f"Bearer {tampered}"}) as r:
            assert r.status == 401


async def _quiet(s, api, headers) -> dict:
    """The queue's stats once nothing is in flight (earlier tests' jobs may still be finishing)."""
    previous = None
    for _ in range(200):
        async with s.get(f"{api}/v1/queues/default", headers=headers) as r:
            stats = await r.json()
        busy = sum(stats["counts"][k] for k in ("queued", "running", "retrying"))
        if not busy and previous and previous["last_gseq"] == stats["last_gseq"]:
            return stats
        previous = stats
        await asyncio.sleep(0.1)
    raise AssertionError(f"queue never went quiet: {stats}")


BAD = [
    ("POST", "/v1/jobs", b"{not json", 400, "not valid JSON"),
    ("POST", "/v1/jobs", b"", 400, "empty"),
    ("POST", "/v1/jobs", json.dumps({"type": "echo", "payload": "x" * 300_000}).encode(), 413, "over the limit"),
    ("POST", "/v1/jobs", json.dumps({"type": "nope"}).encode(), 422, "known types"),
    ("POST", "/v1/jobs", json.dumps({"type": "echo", "delay": -5}).encode(), 422, "delay must be >= 0"),
    ("POST", "/v1/jobs", json.dumps([{"type": "echo"}, {"type": "echo", "priority": "x"}]).encode(), 422, "job 1"),
    ("POST", "/v1/jobs", json.dumps([]).encode(), 422, "non-empty"),
    ("POST", "/v1/jobs", json.dumps({"type": "sleep", "payload": {"seconds": "a"}}).encode(), 422, "seconds"),
    ("GET", "/v1/jobs/not-an-id", None, 422, "malformed job id"),
    ("GET", f"/v1/jobs/{SAMPLE_ID}", None, 404, "no job"),
    ("POST", f"/v1/jobs/{SAMPLE_ID}/cancel", None, 404, "no job"),
    ("POST", "/v1/jobs/..%2Fetc/retry", None, 404, "no route"),
    ("POST", "/v1/jobs/j_zz%20bad/retry", None, 422, "malformed job id"),
    ("GET", "/v1/jobs?status=bogus", None, 422, "unknown status"),
    ("GET", "/v1/jobs?limit=100000", None, 422, "limit"),
    ("GET", "/v1/jobs?queue=Bad%20Queue", None, 422, "queue name"),
    ("POST", "/v1/channels/bad%20name!/messages", b'{"a": 1}', 422, "channel names"),
    ("POST", "/v1/tokens", b'{"scope": "root", "name": "x"}', 422, "scope"),
]


@pytest.mark.parametrize("method, path, body, status, message", BAD, ids=[f"{b[0]} {b[1][:30]} {b[4]}" for b in BAD])
async def test_bad_input_is_a_4xx_that_changes_nothing(api, headers, method, path, body, status, message):
    async with aiohttp.ClientSession() as s:
        before = await _quiet(s, api, headers)
        async with s.request(method, api + path, data=body, headers={**headers, "Content-Type": "application/json"}) as r:
            answer = await r.json()
            assert r.status == status, answer
        assert message in answer["message"], answer
        assert answer["error"]
        async with s.get(f"{api}/v1/queues/default", headers=headers) as r:
            after = await r.json()
        assert after["last_gseq"] == before["last_gseq"]
        unchanged = ("queued", "scheduled", "retrying", "failed", "cancelled")
        assert {k: after["counts"][k] for k in unchanged} == {k: before["counts"][k] for k in unchanged}
