"""A crawl of 5,000 streamers as one flow against the local fake Helix: every clip stored once.

The parent fans out 5,000 ``clips.streamer`` children (``ctx.enqueue_many``
sends them in calls of 1,000), they share the queue actor's bucket, and the
run report adds up all 5,000 summaries.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import os
import threading
import time

import pytest
import ray

from actors.facade import queue_actor
from pipelines.clips.db import ClipDB
from pipelines.clips.fake_helix import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, FakeHelix, fake_streamers

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STREAMERS = 5_000
CLIPS = 3


@pytest.fixture
def helix():
    """The fake on a loop of its own thread: the test's waiting never delays its answers."""
    # A bucket wide enough not to be the bottleneck, and a few 5xx so that retries happen at scale too.
    server = FakeHelix(rate=2_000, burst=2_000, latency=0.005, error_rate=0.01, clips_per_broadcaster=CLIPS)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="fake-helix")
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)
    loop.close()


def test_a_crawl_of_5000_streamers_stores_every_clip_once(helix, settings, ray_cluster, tmp_path):
    source = tmp_path / "streamers.csv"
    with open(source, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["broadcaster_id", "login"])
        writer.writeheader()
        writer.writerows(fake_streamers(STREAMERS))
    env = {"DOJO_HELIX_URL": helix.url + "/helix", "DOJO_HELIX_CLIENT_ID": DEFAULT_CLIENT_ID,
           "DOJO_HELIX_TOKEN": DEFAULT_TOKEN, "DOJO_CLIPS_DB": str(tmp_path / "clips.sqlite3"),
           "DOJO_HELIX_RATE": "2000", "DOJO_HELIX_BURST": "2000", "DOJO_HELIX_MAX_IN_FLIGHT": "64",
           "DOJO_HELIX_RETRIES": "6", "DOJO_CLIPS_PAGE_SIZE": "20"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        queue = f"crawl5k{time.time_ns() % 10**8}"
        # A lease long enough that a runner of 128 threads starved of CPU on 2 cores is not taken for dead:
        # this test is about the size of the fan-out, not about lost workers.
        actor = queue_actor(queue, dataclasses.replace(settings, lease_ttl=30.0))  # made now: sees the env above
        ray.get(actor.ping.remote())
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    payload = {"source": str(source), "started_at": "2024-01-01T00:00:00Z", "ended_at": "2024-01-02T00:00:00Z"}
    [parent] = ray.get(actor.enqueue.remote([{"type": "clips.crawl", "queue": queue, "payload": payload}]))
    started = time.monotonic()
    deadline = started + 280
    while time.monotonic() < deadline:
        done = ray.get(actor.get.remote(parent["id"]))
        if done["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the crawl did not finish: {done['status']} {done.get('progress')} {helix.stats()}")
    assert done["status"] == "succeeded", done["error"]
    report = done["result"]
    assert report["streamers"] == STREAMERS and report["statuses"] == {"succeeded": STREAMERS}, report["errors"]
    # A child run again (at least once) finds its clips stored by the earlier run: unchanged, not new.
    assert report["new"] + report["unchanged"] == STREAMERS * CLIPS and report["updated"] == 0, report
    assert done["children"]["total"] == done["children"]["final"] == STREAMERS
    assert done["children"]["sums"]["new"] == STREAMERS * CLIPS
    ids = ClipDB(env["DOJO_CLIPS_DB"]).clip_ids()
    assert len(ids) == len(set(ids)) == STREAMERS * CLIPS
    assert helix.stats()["bucket_exceeded"] == 0
    print(f"5,000 streamers crawled in {time.monotonic() - started:.1f} s; {report}; {helix.stats()}")
