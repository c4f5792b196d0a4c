"""The clip crawl as a dojo flow: fan-out through the queue, a shared bucket, one run report."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from actors.facade import queue_actor
from pipelines.clips.db import ClipDB
from pipelines.clips.fake_helix import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, FakeHelix, fake_streamers

pytestmark = [pytest.mark.ray]

STREAMERS = 20
CLIPS = 30


@pytest.fixture
async def crawl_env(tmp_path, settings, ray_cluster, api):
    """A fake Helix with a 20 req/s bucket and 5% 5xx, and a fresh queue whose jobs are pointed at it."""
    server = FakeHelix(rate=20, burst=20, latency=0.02, error_rate=0.05, clips_per_broadcaster=CLIPS)
    await server.start()
    source = tmp_path / "streamers.csv"
    with open(source, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["broadcaster_id", "login"])
        writer.writeheader()
        writer.writerows(fake_streamers(STREAMERS))
    queue = f"crawl{time.time_ns() % 10**8}"
    env = {"DOJO_HELIX_URL": server.url + "/helix", "DOJO_HELIX_CLIENT_ID": DEFAULT_CLIENT_ID,
           "DOJO_HELIX_TOKEN": DEFAULT_TOKEN, "DOJO_CLIPS_DB": str(tmp_path / "clips.sqlite3"),
           "DOJO_HELIX_RATE": "20", "DOJO_HELIX_BURST": "20", "DOJO_HELIX_MAX_IN_FLIGHT": "8",
           "DOJO_CLIPS_PAGE_SIZE": "20"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    actor = queue_actor(queue, settings)  # created now, so its jobs see the env above
    await actor.ping.remote()
    yield {"server": server, "queue": queue, "source": str(source), "actor": actor,
           "db": ClipDB(env["DOJO_CLIPS_DB"])}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    await server.stop()


async def _crawl(s, api, headers, env) -> dict:
    payload = {"source": env["source"], "started_at": "2024-01-01T00:00:00Z", "ended_at": "2024-01-02T00:00:00Z"}
    async with s.post(f"{api}/v1/jobs", json={"type": "clips.crawl", "queue": env["queue"], "payload": payload},
                      headers=headers) as r:
        assert r.status == 201, await r.text()
        return await r.json()


async def _until_final(s, api, headers, job_id, timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _ in range(3):
            async with s.get(f"{api}/v1/jobs/{job_id}", headers=headers) as r:
                if r.status == 503:
                    await asyncio.sleep(0.5)
                    continue
                job = await r.json()
                break
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} not final: {job}")


@pytest.mark.slow
async def test_crawl_flow_stores_every_clip_once_within_the_bucket_then_only_updates(api, headers, crawl_env):
    server, db = crawl_env["server"], crawl_env["db"]
    async with aiohttp.ClientSession() as s:
        server.throttle_next(5, reset_after=1.0)  # a burst of 429s on top of the bucket
        parent = await _until_final(s, api, headers, (await _crawl(s, api, headers, crawl_env))["id"])
        assert parent["status"] == "succeeded", parent
        report = parent["result"]
        assert report["streamers"] == STREAMERS and report["statuses"] == {"succeeded": STREAMERS}, report["errors"]
        assert report["new"] == STREAMERS * CLIPS
        assert parent["children"]["counts"] == {"succeeded": STREAMERS}
        assert parent["children"]["sums"]["new"] == STREAMERS * CLIPS
        ids = db.clip_ids()
        assert len(ids) == len(set(ids)) == STREAMERS * CLIPS
        stats = server.stats()
        assert stats["bucket_exceeded"] == 0 and stats["throttled"] >= 5 and stats["injected_5xx"] > 0, stats
        assert server.max_in_flight <= 8, stats  # DOJO_HELIX_MAX_IN_FLIGHT, held across every worker

        server.bump(views=True)
        again = await _until_final(s, api, headers, (await _crawl(s, api, headers, crawl_env))["id"])
        assert again["result"]["new"] == 0 and again["result"]["updated"] == STREAMERS * CLIPS
        assert len(db.clip_ids()) == STREAMERS * CLIPS
        assert server.stats()["bucket_exceeded"] == 0


@pytest.mark.slow
async def test_killing_the_queue_actor_mid_crawl_still_finishes_every_streamer_once(api, headers, crawl_env):
    server, actor = crawl_env["server"], crawl_env["actor"]
    async with aiohttp.ClientSession() as s:
        parent = await _crawl(s, api, headers, crawl_env)
        while server.stats()["requests"] < 10:
            await asyncio.sleep(0.02)
        pid = (await actor.ping.remote())["pid"]
        os.kill(pid, signal.SIGKILL)
        done = await _until_final(s, api, headers, parent["id"], timeout=180)
        assert done["status"] == "succeeded" and done["result"]["statuses"] == {"succeeded": STREAMERS}
        async with s.get(f"{api}/v1/jobs?queue={crawl_env['queue']}&type=clips.streamer&limit=500",
                         headers=headers) as r:
            children = (await r.json())["jobs"]
        assert len(children) == STREAMERS
        assert Counter(c["payload"]["broadcaster_id"] for c in children).most_common(1)[0][1] == 1
        async with s.get(f"{api}/v1/jobs/{parent['id']}/events?limit=1000", headers=headers) as r:
            events = (await r.json())["events"]
        callbacks = [e for e in events if e["kind"] == "status" and e["data"].get("phase") == "callback"]
        finals = [e for e in events if e["kind"] == "status" and e["data"]["status"] == "succeeded"]
        assert len(callbacks) == 1 and len(finals) == 1
    ids = crawl_env["db"].clip_ids()
    assert len(ids) == len(set(ids)) == STREAMERS * CLIPS
    assert (await actor.ping.remote())["pid"] != pid


async def test_crawl_errors_are_clear(api, headers, crawl_env):
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{api}/v1/jobs", json={"type": "clips.crawl", "queue": crawl_env["queue"],
                                                  "payload": {"source": "", "bogus": 1}}, headers=headers) as r:
            assert r.status == 422 and "unknown clips.crawl payload keys" in (await r.json())["message"]
        async with s.post(f"{api}/v1/jobs", json={"type": "clips.crawl", "queue": crawl_env["queue"],
                                                  "payload": {"source": "/nope/streamers.csv"}},
                          headers=headers) as r:
            job = await r.json()
        failed = await _until_final(s, api, headers, job["id"])
        assert failed["status"] == "failed" and "streamers.csv" in failed["error"]["message"]
        assert len(failed["history"]) == 1  # a configuration error is not retried
        async with s.post(f"{api}/v1/schedules", json={"name": "bad", "cron": "0 25 * * *",
                                                       "job": {"type": "clips.crawl"}}, headers=headers) as r:
            assert r.status == 422 and "not a valid cron" in (await r.json())["message"]


async def test_cli_crawl_against_the_fake_crawls_the_fakes_range(api, settings, tmp_path):
    """`dojo crawl clips --fake-helix URL` as the README shows it: without --since/--until it crawls the
    range the fake's clips are in, and prints the run report."""
    server = FakeHelix(clips_per_broadcaster=5)
    await server.start()
    source = tmp_path / "streamers.csv"
    with open(source, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["broadcaster_id", "login"])
        writer.writeheader()
        writer.writerows(fake_streamers(3))
    env = {**os.environ, "DOJO_URL": api, "DOJO_API_TOKEN": settings.api_token}
    dojo = str(Path(sys.executable).parent / "dojo")
    try:
        process = await asyncio.create_subprocess_exec(
            dojo, "crawl", "clips", "--source", str(source), "--fake-helix", server.url, "--queue",
            f"cli{time.time_ns() % 10**8}", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        await server.stop()
    assert process.returncode == 0, (out, err)
    result = json.loads(out.decode().strip().splitlines()[-1].removeprefix("result: "))
    assert result["statuses"] == {"succeeded": 3} and result["clips"] == 15 and result["errors"] == {}, result

    # The clips it stored, out to Parquet.
    out_file = tmp_path / "clips.parquet"
    export = await asyncio.create_subprocess_exec(dojo, "clips", "export", str(out_file), "--broadcaster", "100001",
                                                  env=env, stdout=asyncio.subprocess.PIPE,
                                                  stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(export.communicate(), 60)
    assert export.returncode == 0, (out, err)
    import pyarrow.parquet as pq

    table = pq.read_table(out_file)
    assert set(table.column("broadcaster_id").to_pylist()) == {"100001"}
    assert {clip["id"] for clip in server.clips("100001")} <= set(table.column("id").to_pylist())
