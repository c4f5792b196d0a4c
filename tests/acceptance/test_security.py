"""Promise 6, closed by default for real: who may create queues, bounded input, no secrets in jobs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import uuid
from pathlib import Path

import aiohttp
import pytest

from actors.runner import actor_name
from actors.settings import NAMESPACE

pytestmark = pytest.mark.ray


def _fresh_queue() -> str:
    return "ghost-" + uuid.uuid4().hex[:12]


def _actor_exists(ray, queue: str) -> bool:
    try:
        ray.get_actor(actor_name(queue), namespace=NAMESPACE)
    except ValueError:
        return False
    return True


# -- queues are created only by the API token's enqueues ------------------------------------------
async def test_reads_of_an_unknown_queue_answer_404_and_create_nothing(api, headers, settings, ray_cluster):
    queue = _fresh_queue()
    job_id = f"j_{'0' * 20}.{queue}"
    worker = {"Authorization": f"Bearer {settings.worker_token}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{api}/v1/tokens", json={"scope": "channel", "name": "news"}, headers=headers) as r:
            channel = {"Authorization": f"Bearer {(await r.json())['token']}"}
        calls = [
            ("GET", f"/v1/jobs?queue={queue}", headers, None),
            ("GET", f"/v1/queues/{queue}", headers, None),
            ("GET", f"/v1/queues/{queue}/events", headers, None),
            ("GET", f"/v1/channels/news/messages?queue={queue}", headers, None),
            ("GET", f"/v1/channels/news/messages?queue={queue}", channel, None),
            ("POST", f"/v1/channels/news/messages?queue={queue}", headers, {"a": 1}),
            ("GET", f"/v1/schedules?queue={queue}", headers, None),
            ("GET", f"/v1/schedules/nightly?queue={queue}", headers, None),
            ("GET", f"/v1/ratelimits/helix?queue={queue}", headers, None),
            ("PUT", f"/v1/ratelimits/helix?queue={queue}", headers, {"rate": 1}),
            ("POST", f"/v1/queues/{queue}/lease", worker, {"worker": "w"}),
            ("GET", f"/v1/jobs/{job_id}", headers, None),
            ("GET", f"/v1/jobs/{job_id}/events", headers, None),
            ("GET", f"/v1/jobs/{job_id}/logs", headers, None),
            ("GET", f"/v1/jobs/{job_id}/outputs", headers, None),
            ("POST", f"/v1/jobs/{job_id}/cancel", headers, None),
            ("POST", f"/v1/leases/{job_id}:1/heartbeat", worker, None),
            ("GET", f"/dashboard/api/jobs?queue={queue}", headers, None),
            ("GET", f"/dashboard/api/queues?only={queue}", headers, None),
        ]
        for method, path, auth, body in calls:
            async with s.request(method, api + path, headers=auth, json=body) as r:
                answer = await r.json()
                assert r.status == 404, (method, path, r.status, answer)
                assert queue in answer["message"], answer
        for path in (f"/v1/queues/{queue}/events", f"/v1/channels/news?queue={queue}", f"/v1/jobs/{job_id}/events"):
            async with s.ws_connect(api + path, headers=headers) as ws:
                assert json.loads((await ws.receive(timeout=10)).data)["error"] in ("UnknownQueue", "NotFound")
                await ws.receive(timeout=10)
                assert ws.close_code == 4404, path
        async with s.post(f"{api}/v1/jobs", json={"type": "echo", "queue": queue}, headers=worker) as r:
            assert r.status == 403
    assert not _actor_exists(ray_cluster, queue)
    assert not (Path(settings.state_dir) / "queues" / f"{queue}.sqlite3").exists()


async def test_the_api_token_creates_a_queue_by_enqueueing_or_explicitly(api, headers, ray_cluster):
    by_enqueue, explicit = _fresh_queue(), _fresh_queue()
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{api}/v1/jobs", json={"type": "echo", "queue": by_enqueue}, headers=headers) as r:
            assert r.status == 201, await r.json()
        async with s.put(f"{api}/v1/queues/{explicit}", headers=headers) as r:
            assert r.status == 200, await r.json()
            assert (await r.json())["counts"]["queued"] == 0
        for queue in (by_enqueue, explicit):
            async with s.get(f"{api}/v1/queues/{queue}", headers=headers) as r:
                assert r.status == 200
            assert _actor_exists(ray_cluster, queue)


async def test_max_queues_refuses_one_more_and_existing_queues_survive_their_actor(settings, ray_cluster):
    from actors.exceptions import NotFound
    from actors.facade import DEFAULT_QUEUE, Queues, TooManyQueues, live_queues, queue_files

    existing = queue_files(settings) | live_queues() | {DEFAULT_QUEUE}
    capped = dataclasses.replace(settings, max_queues=len(existing) + 1)
    allowed, refused = _fresh_queue(), _fresh_queue()
    queues = Queues(capped)
    await queues.create(allowed)
    with pytest.raises(TooManyQueues) as caught:
        await queues.create(refused)
    assert caught.value.status == 409 and "DOJO_MAX_QUEUES" in caught.value.message
    assert not _actor_exists(ray_cluster, refused)
    with pytest.raises(NotFound):
        await queues.stats(refused)

    # The queue's database says it exists: after its actor is gone (a restarted cluster) it is found again.
    await queues.enqueue([{"type": "echo", "queue": allowed}])
    ray_cluster.kill(ray_cluster.get_actor(actor_name(allowed), namespace=NAMESPACE), no_restart=True)
    for _ in range(100):
        if not _actor_exists(ray_cluster, allowed):
            break
        await asyncio.sleep(0.1)
    again = Queues(capped)
    assert sum((await again.stats(allowed))["counts"].values()) == 1
    assert _actor_exists(ray_cluster, allowed)
    assert os.path.exists(Path(settings.state_dir) / "queues" / f"{allowed}.sqlite3")
