"""Promise 1 and 4: kill -9 the queue actor with 1,000 jobs in flight."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter, defaultdict

import aiohttp
import pytest

from actors.facade import queue_actor

pytestmark = [pytest.mark.ray, pytest.mark.slow]

QUEUE = "crash"
N = 1000


async def _post(s, url, body, headers):
    for _ in range(100):
        async with s.post(url, json=body, headers=headers) as r:
            if r.status == 503:
                await asyncio.sleep(0.2)
                continue
            assert r.status in (200, 201), await r.text()
            return await r.json()
    raise AssertionError("queue never came back")


async def test_sigkill_actor_with_1000_jobs_in_flight(api, headers, settings, ray_cluster):
    actor = queue_actor(QUEUE, settings)
    first = await actor.ping.remote()
    events: list[dict] = []
    finals: Counter = Counter()
    stop = asyncio.Event()
    connected = asyncio.Event()

    async def subscriber(s):
        last = first["last_gseq"]
        while not stop.is_set():
            try:
                async with s.ws_connect(f"{api}/v1/queues/{QUEUE}/events?after={last}", headers=headers) as ws:
                    connected.set()
                    while not stop.is_set():
                        try:
                            msg = await ws.receive(timeout=1)
                        except asyncio.TimeoutError:
                            continue
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        event = json.loads(msg.data)
                        events.append(event)
                        last = event["gseq"]
                        if event["kind"] == "status" and event["data"]["status"] in ("succeeded", "failed",
                                                                                    "cancelled"):
                            finals[event["data"]["job_id"]] += 1
                        if reconnect.is_set():
                            reconnect.clear()
                            break  # drop the connection on purpose; resume with the last gseq
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)

    reconnect = asyncio.Event()
    async with aiohttp.ClientSession() as s:
        sub = asyncio.create_task(subscriber(s))
        await asyncio.wait_for(connected.wait(), 30)
        ids = []
        for start in range(0, N, 100):
            batch = [{"type": "sleep", "queue": QUEUE, "payload": {"seconds": 0.01}, "max_attempts": 3}
                     for _ in range(100)]
            ids += [j["id"] for j in await _post(s, f"{api}/v1/jobs", batch, headers)]
        assert len(set(ids)) == N
        # Kill the actor's process while jobs are running.
        while sum(finals.values()) < N // 4:
            await asyncio.sleep(0.02)
        os.kill(first["pid"], signal.SIGKILL)
        reconnect.set()
        deadline = time.monotonic() + 180
        while len(finals) < N and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let any duplicate show itself
        stop.set()
        await sub
        second = await actor.ping.remote()
        assert second["pid"] != first["pid"], "the actor was not restarted"
        # Every accepted job is final, exactly once.
        missing = set(ids) - set(finals)
        assert not missing, f"{len(missing)} jobs never finished, e.g. {sorted(missing)[:3]}"
        assert max(finals.values()) == 1, [j for j, c in finals.items() if c > 1][:5]
        for job_id in ids[:: N // 20]:
            async with s.get(f"{api}/v1/jobs/{job_id}", headers=headers) as r:
                job = await r.json()
            assert job["status"] == "succeeded", job
    # The resumed subscriber saw every event once, in order, with no gaps.
    gseqs = [e["gseq"] for e in events]
    assert gseqs == list(range(gseqs[0], gseqs[0] + len(gseqs)))
    per_job = defaultdict(list)
    for event in events:
        per_job[event["stream"]].append(event["seq"])
    for stream, seqs in per_job.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), stream
