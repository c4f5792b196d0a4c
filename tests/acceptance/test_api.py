"""The HTTP and WebSocket API with real aiohttp clients against Serve on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import time

import aiohttp
import pytest

pytestmark = pytest.mark.ray

FINAL = {"succeeded", "failed", "cancelled"}


async def post(session, url, body=None, headers=None, raw=None):
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    async with session.post(url, data=data, headers={**(headers or {}), "Content-Type": "application/json"}) as r:
        return r.status, await r.json()


async def get(session, url, headers=None):
    async with session.get(url, headers=headers) as r:
        return r.status, await r.json()


async def wait_status(session, api, headers, job_id, statuses, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        status, job = await get(session, f"{api}/v1/jobs/{job_id}", headers)
        assert status == 200, job
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job stuck in {job['status']}: {job}"
        await asyncio.sleep(0.05)


async def test_submit_watch_and_result(api, headers):
    async with aiohttp.ClientSession() as s:
        status, job = await post(s, f"{api}/v1/jobs", {"type": "countdown", "payload": {"steps": 4, "interval": 0.05}},
                                 headers)
        assert status == 201 and job["status"] == "queued" and job["id"].startswith("j_")
        events = []
        async with s.ws_connect(f"{api}/v1/jobs/{job['id']}/events?after=0", headers=headers) as ws:
            async for msg in ws:
                event = json.loads(msg.data)
                events.append(event)
                if event["kind"] == "status" and event["data"]["status"] == "succeeded":
                    break
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        kinds = [(e["kind"], e["data"].get("status") or e["data"].get("message")) for e in events]
        assert kinds[0] == ("status", "queued") and kinds[1] == ("status", "running")
        assert [k for k in kinds if k[0] == "progress"][-1] == ("progress", "4 steps")
        status, done = await get(s, f"{api}/v1/jobs/{job['id']}", headers)
        assert done["result"] == {"steps": 4} and done["history"][0]["outcome"] == "succeeded"
        assert done["history"][0]["node"]


async def test_batch_enqueue_list_and_cursor_pagination(api, headers):
    async with aiohttp.ClientSession() as s:
        status, jobs = await post(s, f"{api}/v1/jobs", [{"type": "echo", "payload": i} for i in range(7)], headers)
        assert status == 201 and len(jobs) == 7
        ids = {j["id"] for j in jobs}
        for job in jobs:
            await wait_status(s, api, headers, job["id"], {"succeeded"})
        seen, cursor = [], None
        while True:
            url = f"{api}/v1/jobs?type=echo&status=succeeded&limit=3" + (f"&cursor={cursor}" if cursor else "")
            status, page = await get(s, url, headers)
            assert status == 200
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert ids <= set(seen) and seen == sorted(seen, reverse=True) and len(seen) == len(set(seen))


async def test_sse_stream_resumes_after_last_event_id(api, headers):
    async with aiohttp.ClientSession() as s:
        _, job = await post(s, f"{api}/v1/jobs", {"type": "countdown", "payload": {"steps": 3, "interval": 0.01}},
                            headers)
        await wait_status(s, api, headers, job["id"], {"succeeded"})
        status, backlog = await get(s, f"{api}/v1/jobs/{job['id']}/events", headers)
        all_seqs = [e["seq"] for e in backlog["events"]]
        sse_headers = {**headers, "Accept": "text/event-stream", "Last-Event-ID": "2"}
        got = []
        async with s.get(f"{api}/v1/jobs/{job['id']}/events", headers=sse_headers) as r:
            assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
            async for line in r.content:
                line = line.decode().strip()
                if line.startswith("id: "):
                    got.append(int(line[4:]))
                if got and got[-1] == all_seqs[-1]:
                    break
        assert got == all_seqs[2:]


async def sse_until_final(session, url, headers, timeout=30) -> list[dict]:
    events = []
    async with session.get(url, headers={**headers, "Accept": "text/event-stream"},
                           timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        assert r.status == 200
        async for line in r.content:
            line = line.decode().strip()
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if events[-1]["kind"] == "status" and events[-1]["data"]["status"] in FINAL:
                    return events
    raise AssertionError(f"the stream ended before the job was final: {events}")


async def test_live_events_outlive_the_request_that_opened_the_queue_feed(api, headers):
    """The replica's one feed per queue is opened by whichever request comes first. When that client
    leaves, the proxy cancels its request; the feed must go on for everyone else and miss nothing,
    here the job's final event, which comes right after the opener left."""
    queue = f"feed{os.getpid()}"
    async with aiohttp.ClientSession() as s:
        _, job = await post(s, f"{api}/v1/jobs", {"type": "sleep", "payload": {"seconds": 0.3}, "queue": queue},
                            headers)
        url = f"{api}/v1/jobs/{job['id']}/events"

        async def open_then_leave():
            async with s.get(url, headers={**headers, "Accept": "text/event-stream"}) as r:
                async for line in r.content:
                    if line.startswith(b"data: ") and b'"running"' in line:
                        return

        leaving = asyncio.ensure_future(open_then_leave())
        await asyncio.sleep(0.1)  # the opener's request is the one that started the queue's feed
        events = await sse_until_final(s, url, headers, timeout=20)
        await leaving
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["data"]["status"] == "succeeded"


async def test_unique_key_priority_and_delay_through_the_api(api, headers):
    async with aiohttp.ClientSession() as s:
        spec = {"type": "sleep", "payload": {"seconds": 0.2}, "unique_key": f"k-{time.time()}"}
        status, first = await post(s, f"{api}/v1/jobs", spec, headers)
        status2, second = await post(s, f"{api}/v1/jobs", spec, headers)
        assert (status, status2) == (201, 200) and second["id"] == first["id"] and second["created"] is False
        t0 = time.time()
        _, delayed = await post(s, f"{api}/v1/jobs", {"type": "echo", "payload": 1, "delay": 1.0}, headers)
        assert delayed["status"] == "scheduled"
        done = await wait_status(s, api, headers, delayed["id"], {"succeeded"})
        assert done["history"][0]["started_at"] >= t0 + 1.0


async def test_retry_of_failed_job_keeps_history(api, headers):
    async with aiohttp.ClientSession() as s:
        _, job = await post(s, f"{api}/v1/jobs", {"type": "flaky", "payload": {"permanent": True}}, headers)
        failed = await wait_status(s, api, headers, job["id"], {"failed"})
        assert failed["error"]["type"] == "PermanentFailure" and "Traceback" in failed["error"]["traceback"]
        status, conflict = await post(s, f"{api}/v1/jobs/{job['id']}/cancel", None, headers)
        assert status == 409 and "already failed" in conflict["message"]
        _, job2 = await post(s, f"{api}/v1/jobs", {"type": "flaky", "payload": {"succeed_on": 3},
                                                   "max_attempts": 2}, headers)
        failed = await wait_status(s, api, headers, job2["id"], {"failed"})
        assert [h["outcome"] for h in failed["history"]] == ["failed", "failed"]
        status, retried = await post(s, f"{api}/v1/jobs/{job2['id']}/retry", None, headers)
        assert status == 200
        done = await wait_status(s, api, headers, job2["id"], {"succeeded"})
        assert [h["outcome"] for h in done["history"]] == ["failed", "failed", "succeeded"]
        async with s.delete(f"{api}/v1/jobs/{job2['id']}", headers=headers) as r:
            assert r.status == 200
        status, gone = await get(s, f"{api}/v1/jobs/{job2['id']}", headers)
        assert status == 404


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _child_pid(s, api, headers, job_id):
    for _ in range(200):
        _, events = await get(s, f"{api}/v1/jobs/{job_id}/events", headers)
        for event in events["events"]:
            if event["kind"] == "progress" and event["data"].get("stage") == "sleeping":
                return int(event["data"]["message"].split()[-1])
        await asyncio.sleep(0.05)
    raise AssertionError("the job never reported its child pid")


async def test_cancel_kills_the_running_subprocess(api, headers):
    async with aiohttp.ClientSession() as s:
        _, job = await post(s, f"{api}/v1/jobs", {"type": "sleep", "payload": {"seconds": 120, "subprocess": True}},
                            headers)
        pid = await _child_pid(s, api, headers, job["id"])
        assert _alive(pid)
        status, cancelled = await post(s, f"{api}/v1/jobs/{job['id']}/cancel", None, headers)
        assert status == 200 and cancelled["status"] == "cancelled"
        for _ in range(100):
            if not _alive(pid):
                break
            await asyncio.sleep(0.05)
        assert not _alive(pid), "cancel left the job's child process running"


async def test_timeout_kills_the_running_subprocess(api, headers):
    async with aiohttp.ClientSession() as s:
        _, job = await post(s, f"{api}/v1/jobs", {"type": "sleep", "payload": {"seconds": 120, "subprocess": True},
                                                  "timeout": 1.5}, headers)
        pid = await _child_pid(s, api, headers, job["id"])
        failed = await wait_status(s, api, headers, job["id"], {"failed"}, timeout=20)
        assert failed["history"][0]["outcome"] == "timed_out" and "timed out after 1.5s" in failed["error"]["message"]
        for _ in range(100):
            if not _alive(pid):
                break
            await asyncio.sleep(0.05)
        assert not _alive(pid), "the timeout left the job's child process running"


async def test_killed_worker_is_retried_and_its_late_report_refused(api, headers, settings):
    worker = {"Authorization": f"Bearer {settings.worker_token}"}
    async with aiohttp.ClientSession() as s:
        _, job = await post(s, f"{api}/v1/jobs", {"type": "sleep", "payload": {"seconds": 1.0}, "max_attempts": 2},
                            headers)
        pid = None
        for _ in range(200):
            _, events = await get(s, f"{api}/v1/jobs/{job['id']}/events", headers)
            started = [e for e in events["events"] if e["kind"] == "progress"]
            if started:
                pid = started[0]["data"]["pid"]
                break
            await asyncio.sleep(0.05)
        assert pid and pid != os.getpid()
        os.kill(pid, 9)
        done = await wait_status(s, api, headers, job["id"], {"succeeded"}, timeout=30)
        assert [h["outcome"] for h in done["history"]] == ["lost", "succeeded"]
        assert done["history"][1]["pid"] != pid
        dead_token = done["history"][0]["token"]
        status, refused = await post(s, f"{api}/v1/leases/{job['id']}:{dead_token}/complete", {"result": "late"},
                                     worker)
        assert status == 409 and refused["error"] == "StaleLease"
        _, after = await get(s, f"{api}/v1/jobs/{job['id']}", headers)
        assert after["result"] == done["result"]


async def test_channels_publish_and_resume(api, headers):
    channel = f"room-{time.time_ns()}"
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{api}/v1/channels/{channel}?after=0", headers=headers) as ws:
            for i in range(3):
                status, event = await post(s, f"{api}/v1/channels/{channel}/messages", {"n": i}, headers)
                assert status == 201 and event["seq"] == i + 1
            got = [json.loads((await ws.receive(timeout=10)).data) for _ in range(3)]
        assert [g["data"]["message"] for g in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
        async with s.ws_connect(f"{api}/v1/channels/{channel}?after=2", headers=headers) as ws:
            again = json.loads((await ws.receive(timeout=10)).data)
        assert again["seq"] == 3


async def test_pull_api_lease_heartbeat_progress_complete(api, headers, settings):
    worker = {"Authorization": f"Bearer {settings.worker_token}"}
    async with aiohttp.ClientSession() as s:
        # 'outside' is an external type (pipelines.sample): only pull workers run it.
        _, job = await post(s, f"{api}/v1/jobs", {"type": "outside", "payload": {"deck": "a"}}, headers)
        status, leased = await post(s, f"{api}/v1/queues/default/lease",
                                    {"worker": "box-1", "types": ["outside"], "n": 5, "visibility_timeout": 30},
                                    worker)
        assert status == 200
        [lease] = [lease for lease in leased["leases"] if lease["job_id"] == job["id"]]
        base = f"{api}/v1/leases/{lease['lease_id']}"
        assert (await post(s, f"{base}/heartbeat", {}, worker))[1] == {"status": "ok"}
        status, _ = await post(s, f"{base}/progress", {"fraction": 0.5, "stage": "encode"}, worker)
        assert status == 200
        status, body = await post(s, f"{base}/progress", {"fraction": 7}, worker)
        assert status == 422 and "within 0..1" in body["message"]
        status, done = await post(s, f"{base}/complete", {"result": {"url": "s3://x"}}, worker)
        assert status == 200 and done["status"] == "succeeded"
        status, stale = await post(s, f"{base}/progress", {"fraction": 1}, worker)
        assert status == 409
        status, denied = await post(s, f"{api}/v1/queues/default/lease", {"worker": "w"},
                                    {"Authorization": "Bearer nope"})
        assert status == 401
