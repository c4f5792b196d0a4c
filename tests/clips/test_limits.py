"""LocalLimiter: a token bucket, pauses and an in-flight limit, shared across tasks, threads and loops."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pipelines.clips.limits import Gate, Limiter, LocalLimiter


def test_implements_the_protocol():
    assert isinstance(LocalLimiter(), Limiter)


async def test_bucket_grants_burst_then_rate():
    limiter = LocalLimiter(rate=50, burst=5)
    t0 = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(15)))
    elapsed = time.monotonic() - t0
    assert 0.19 <= elapsed < 0.6  # (15 - 5) / 50 = 0.2 s
    assert limiter.granted == 15


async def test_no_bucket_is_free_and_rejects_bad_sizes():
    limiter = LocalLimiter()
    t0 = time.monotonic()
    for _ in range(1000):
        await limiter.acquire()
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(ValueError):
        await LocalLimiter(rate=10, burst=2).acquire(3)
    with pytest.raises(ValueError):
        LocalLimiter(rate=0)


async def test_pause_delays_grants_and_only_extends():
    limiter = LocalLimiter(rate=1000, burst=10)
    limiter.pause_until(time.time() + 0.15)
    limiter.pause_until(time.time() + 0.01)  # a shorter pause does not shorten the longer one
    t0 = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - t0 >= 0.13


async def test_slots_bound_in_flight():
    limiter = LocalLimiter(max_in_flight=3)
    now = peak = 0

    async def work():
        nonlocal now, peak
        async with limiter.slot():
            now += 1
            peak = max(peak, now)
            await asyncio.sleep(0.01)
            now -= 1

    await asyncio.gather(*(work() for _ in range(20)))
    assert peak == 3


async def test_gate_survives_cancelled_waiters():
    gate = Gate(1)
    await gate.acquire()
    waiters = [asyncio.ensure_future(gate.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    gate.release()
    await asyncio.sleep(0.01)
    assert waiters[1].done() and not waiters[2].done()
    gate.release()
    await asyncio.wait_for(waiters[2], 1)
    gate.release()
    assert gate.in_use == 0
    await asyncio.gather(*waiters[1:], return_exceptions=True)


def test_one_limiter_shared_by_threads_with_their_own_loops():
    limiter = LocalLimiter(rate=100, burst=5, max_in_flight=2)

    def worker():
        async def run():
            for _ in range(10):
                async with limiter.slot():
                    await limiter.acquire()
        asyncio.run(run())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert limiter.granted == 30
    assert time.monotonic() - t0 >= 0.24  # (30 - 5) / 100


def test_under_leaves_headroom():
    limiter = LocalLimiter.under(20, 20, 32)
    assert limiter.rate < 20 and limiter.burst == 18 and limiter.max_in_flight == 32  # 100 ms of jitter
    assert LocalLimiter.under(800 / 60, 800).burst == 798
    assert LocalLimiter.under(None, None).rate is None
