"""Promise: a due schedule enqueues exactly one job per tick, even when the actor is killed around it."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import pytest

from actors.facade import queue_actor

pytestmark = [pytest.mark.ray, pytest.mark.slow]


async def test_schedule_fires_once_per_tick_across_an_actor_kill(api, headers, settings):
    queue = f"sched{time.time_ns() % 10**8}"
    actor = queue_actor(queue, settings)
    first = await actor.ping.remote()
    async with aiohttp.ClientSession() as s:
        body = {"name": "every-minute", "cron": "* * * * *", "job": {"type": "echo", "payload": "tick"}}
        async with s.post(f"{api}/v1/schedules?queue={queue}", json=body, headers=headers) as r:
            assert r.status == 201, await r.text()
            schedule = await r.json()
        tick = schedule["next_run"]
        # Kill the actor a moment before the tick; the restarted one must fire it once.
        await asyncio.sleep(max(0.0, tick - time.time() - 1.0))
        os.kill(first["pid"], signal.SIGKILL)
        deadline = time.time() + 60
        jobs = []
        while time.time() < deadline:
            try:
                async with s.get(f"{api}/v1/jobs?queue={queue}&type=echo", headers=headers) as r:
                    if r.status == 200:
                        jobs = (await r.json())["jobs"]
            except aiohttp.ClientError:
                pass
            if jobs and time.time() > tick + 3:
                break
            await asyncio.sleep(0.3)
        assert [j["unique_key"] for j in jobs] == [f"schedule:every-minute:{int(tick)}"]
        async with s.get(f"{api}/v1/schedules/every-minute?queue={queue}", headers=headers) as r:
            after = await r.json()
        assert after["fired"] == 1 and after["last_job_id"] == jobs[0]["id"] and after["next_run"] == tick + 60
        assert (await actor.ping.remote())["pid"] != first["pid"]
        async with s.post(f"{api}/v1/schedules/every-minute/pause?queue={queue}", headers=headers) as r:
            assert (await r.json())["paused"] is True
        async with s.delete(f"{api}/v1/schedules/every-minute?queue={queue}", headers=headers) as r:
            assert r.status == 200
