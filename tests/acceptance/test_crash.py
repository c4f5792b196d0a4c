"""Promises 1 and 4: kill -9 a process that 1,000 jobs in flight depend on.

The queue actor (with and without cancels racing the kill) or the API's Serve
replica is SIGKILLed a quarter of the way through. A WebSocket subscriber
follows the queue's events throughout, reconnecting with ``after=<gseq>``.
Afterwards: every accepted job is final exactly once, a cancelled job stays
cancelled, and the subscriber saw every event once, in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter, defaultdict

import aiohttp
import pytest
import ray

from actors.facade import queue_actor

pytestmark = [pytest.mark.ray, pytest.mark.slow]

N = 1000
FINAL = ("succeeded", "failed", "cancelled")


async def _send(s, method: str, url: str, headers: dict, body=None, ok=(200, 201)) -> tuple[int, dict]:
    """One request, repeated while the API or the queue is coming back (503, a dropped connection)."""
    for _ in range(300):
        try:
            async with s.request(method, url, json=body, headers=headers) as r:
                if r.status in (502, 503, 504):
                    await asyncio.sleep(0.2)
                    continue
                assert r.status in ok, (r.status, await r.text())
                return r.status, await r.json()
        except aiohttp.ClientError:
            await asyncio.sleep(0.2)
    raise AssertionError(f"{method} {url} never answered")


def _replica_pids() -> list[int]:
    """The pids of the API's Serve replicas (named actors in Serve's namespace)."""
    names = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if a.get("namespace") == "serve" and a.get("name", "").startswith("SERVE_REPLICA::")]
    handles = [ray.get_actor(a["name"], namespace="serve") for a in names]
    return ray.get([h.__ray_call__.remote(lambda self: os.getpid()) for h in handles])


async def _scenario(api: str, headers: dict, settings, queue: str, kill: str, cancel_every: int = 0) -> None:
    actor = queue_actor(queue, settings)
    first = await actor.ping.remote()
    victims = [first["pid"]] if kill == "actor" else _replica_pids()
    assert victims
    events: list[dict] = []
    finals: Counter = Counter()
    final_status: dict[str, str] = {}
    stop = asyncio.Event()
    connected = asyncio.Event()
    reconnect = asyncio.Event()
    cancelled: set[str] = set()  # cancels the API acknowledged (200)
    ids: list[str] = []

    async def subscriber(s):
        last = first["last_gseq"]
        while not stop.is_set():
            try:
                async with s.ws_connect(f"{api}/v1/queues/{queue}/events?after={last}", headers=headers) as ws:
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
                        if event["kind"] == "status" and event["data"]["status"] in FINAL:
                            finals[event["data"]["job_id"]] += 1
                            final_status[event["data"]["job_id"]] = event["data"]["status"]
                        if reconnect.is_set():
                            reconnect.clear()
                            break  # drop the connection on purpose; resume with the last gseq
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)

    async def cancel(s, job_id: str) -> None:
        status, body = await _send(s, "POST", f"{api}/v1/jobs/{job_id}/cancel", headers, ok=(200, 409))
        if status == 200:
            assert body["status"] == "cancelled", body
            cancelled.add(job_id)

    async def canceller(s):
        """Cancel every ``cancel_every``-th job (the slow ones) as soon as it is accepted, ten at a time,
        racing the runners and the kill."""
        done = 0
        while not stop.is_set() and done < N // cancel_every:
            ready = min(N // cancel_every, (len(ids) + cancel_every - 1) // cancel_every, done + 10)
            if ready == done:
                await asyncio.sleep(0.01)
                continue
            await asyncio.gather(*(cancel(s, ids[i * cancel_every]) for i in range(done, ready)))
            done = ready

    async with aiohttp.ClientSession() as s:
        sub = asyncio.create_task(subscriber(s))
        await asyncio.wait_for(connected.wait(), 30)
        cancels = asyncio.create_task(canceller(s)) if cancel_every else None
        for start in range(0, N, 100):
            # With cancels, every cancel_every-th job is slow enough to be queued or running when cancelled.
            batch = [{"type": "sleep", "queue": queue, "max_attempts": 3,
                      "payload": {"seconds": 0.5 if cancel_every and i % cancel_every == 0 else 0.01}}
                     for i in range(start, start + 100)]
            _, jobs = await _send(s, "POST", f"{api}/v1/jobs", headers, batch)
            ids += [j["id"] for j in jobs]
        assert len(set(ids)) == N
        # Kill while jobs are running (and, with cancels, while cancels are being sent).
        while sum(finals.values()) < N // 4:
            await asyncio.sleep(0.02)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        reconnect.set()
        if cancels is not None:
            await asyncio.wait_for(cancels, 180)
        deadline = time.monotonic() + 180
        while len(finals) < N and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let any duplicate show itself
        stop.set()
        await sub
        if kill == "actor":
            second = await actor.ping.remote()
            assert second["pid"] != first["pid"], "the actor was not restarted"
        else:
            assert not set(_replica_pids()) & set(victims), "the replica was not restarted"
        # Every accepted job is final, exactly once; a cancelled one stays cancelled.
        missing = set(ids) - set(finals)
        assert not missing, f"{len(missing)} jobs never finished, e.g. {sorted(missing)[:3]}"
        assert max(finals.values()) == 1, [j for j, c in finals.items() if c > 1][:5]
        assert all(final_status[j] == "cancelled" for j in cancelled), \
            [(j, final_status[j]) for j in cancelled if final_status[j] != "cancelled"][:5]
        assert all(final_status[j] == "succeeded" for j in ids if j not in cancelled and
                   final_status[j] != "cancelled"), Counter(final_status.values())
        if cancel_every:
            assert cancelled, "no cancel landed on an unfinished job"
        for job_id in ids[:: N // 20] + sorted(cancelled)[:20]:
            _, job = await _send(s, "GET", f"{api}/v1/jobs/{job_id}", headers)
            assert job["status"] == final_status[job_id], job
    # The resumed subscriber saw every event once, in order, with no gaps.
    gseqs = [e["gseq"] for e in events]
    assert gseqs == list(range(gseqs[0], gseqs[0] + len(gseqs)))
    per_job = defaultdict(list)
    for event in events:
        per_job[event["stream"]].append(event["seq"])
    for stream, seqs in per_job.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), stream


async def test_sigkill_actor_with_1000_jobs_in_flight(api, headers, settings, ray_cluster):
    await _scenario(api, headers, settings, "crash", kill="actor")


async def test_sigkill_the_serve_replica_with_1000_jobs_in_flight(api, headers, settings, ray_cluster):
    await _scenario(api, headers, settings, "crashreplica", kill="replica")


async def test_sigkill_actor_with_1000_jobs_in_flight_and_cancels_racing_it(api, headers, settings, ray_cluster):
    await _scenario(api, headers, settings, "crashcancel", kill="actor", cancel_every=5)
