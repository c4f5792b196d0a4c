"""The queue actor's shared limits, used from several worker processes at once (real Ray, real actor)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import ray

from actors.facade import queue_actor
from actors.limits import SharedLimiter

pytestmark = pytest.mark.ray


@ray.remote(num_cpus=0)
def hammer(queue: str, name: str, limit: int, threads: int, per_thread: int, hold: float) -> list[tuple]:
    """``threads`` event loops in one process, each running ``per_thread`` requests through one limiter."""
    limiter = SharedLimiter(name, max_in_flight=limit, queue=queue)
    spans: list[tuple] = []
    lock = threading.Lock()

    async def one() -> None:
        async with limiter.slot():
            entered = time.time()
            await asyncio.sleep(hold)
            left = time.time()
        with lock:
            spans.append((entered, left))

    async def loop_body() -> None:
        await asyncio.gather(*(one() for _ in range(per_thread)))

    workers = [threading.Thread(target=asyncio.run, args=(loop_body(),)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return spans


def most_at_once(spans: list[tuple]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def test_in_flight_places_hold_across_processes_and_all_go_back(settings, ray_cluster):
    queue = f"limits{time.time_ns() % 10**8}"
    actor = queue_actor(queue, settings)
    ray.get(actor.ping.remote())
    limit = 5
    runs = [hammer.remote(queue, "host", limit, threads=4, per_thread=10, hold=0.01) for _ in range(3)]
    spans = [span for run in ray.get(runs, timeout=120) for span in run]
    assert len(spans) == 3 * 4 * 10
    assert 2 <= most_at_once(spans) <= limit
    # Every place went back: all of them can be taken again at once.
    deadline = time.monotonic() + 10
    while True:
        granted = ray.get(actor.acquire_slots.remote("slots:host", limit, "check", limit, 60.0, 0.0))
        ray.get(actor.release_slots.remote("slots:host", granted))
        if len(granted) == limit or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(granted) == limit


def test_a_limiter_without_its_queue_says_so_instead_of_waiting(ray_cluster):
    limiter = SharedLimiter("host", max_in_flight=2, queue="no-such-queue")

    async def use() -> None:
        async with limiter.slot():
            pass

    with pytest.raises(LookupError, match="no actor for queue 'no-such-queue'"):
        asyncio.run(asyncio.wait_for(use(), 30))
