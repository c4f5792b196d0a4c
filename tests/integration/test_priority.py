"""Priority holds across job types when a queue is at its concurrency limit (real Ray, real runners).

A queue that may run one runner at a time is busy with a long line of low-priority ``sleep``
jobs when one urgent job of another type arrives. The busy runner finishes what it holds and
makes room; the urgent job starts next, not after the whole line.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import ray

from actors.facade import queue_actor

pytestmark = pytest.mark.ray


def _wait_final(actor, ids: list[str], limit: float = 120.0) -> list[dict]:
    deadline = time.monotonic() + limit
    while True:
        jobs = ray.get([actor.get.remote(i) for i in ids])
        if all(job["status"] in ("succeeded", "failed", "cancelled") for job in jobs) or time.monotonic() > deadline:
            return jobs
        time.sleep(0.2)


def test_an_urgent_job_of_another_type_goes_before_the_rest_of_a_busy_line(ray_cluster, settings):
    one = dataclasses.replace(settings, concurrency=1)
    actor = queue_actor(f"prio{time.time_ns() % 10**8}", one)
    line = ray.get(actor.enqueue.remote([{"type": "sleep", "payload": {"seconds": 0.3}, "priority": 0}
                                         for _ in range(20)]))
    line_ids = [job["id"] for job in line]
    deadline = time.monotonic() + 60
    while ray.get(actor.get.remote(line_ids[0]))["status"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    [urgent] = ray.get(actor.enqueue.remote([{"type": "stamp", "priority": 5}]))

    jobs = _wait_final(actor, line_ids + [urgent["id"]])
    assert all(job["status"] == "succeeded" for job in jobs), [job["status"] for job in jobs]
    urgent_start = jobs[-1]["started_at"]
    after = [job for job in jobs[:-1] if job["started_at"] > urgent_start]
    # The line's runner gave way at its next batch boundary: most of the line started after the urgent job.
    assert len(after) >= 10, (len(after), urgent_start, [job["started_at"] for job in jobs[:-1]])
