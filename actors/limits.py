"""Rate and concurrency limits shared by every worker, held by a queue's actor.

``SharedLimiter`` is what a job uses to call a rate-limited API from many
workers at once: ``await acquire()`` takes a token from the actor's named
bucket right before a request, ``pause_until(t)`` pauses the bucket for
everyone when the API answers 429, and ``async with slot():`` holds one of
the N in-flight places for the host. It works from any event loop (each job
attempt may run its own ``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

from .runner import actor_name
from .settings import NAMESPACE


class SharedLimiter:
    def __init__(self, bucket: str, *, rate: float | None = None, burst: float | None = None,
                 max_in_flight: int | None = None, queue: str | None = None, slot_ttl: float = 120.0):
        self.bucket = bucket
        self.rate = rate
        self.burst = burst
        self.max_in_flight = max_in_flight
        # The bucket lives in the actor of the queue whose job made this limiter.
        self.queue = queue or os.environ.get("DOJO_CURRENT_QUEUE", "default")
        self.slot_ttl = slot_ttl
        self._paused_until = 0.0
        self._holder = f"{os.getpid()}-{id(self)}"
        self._count = 0
        self._actor = None

    @property
    def actor(self):
        if self._actor is None:  # one lookup per limiter; the handle follows the actor across restarts
            import ray

            self._actor = ray.get_actor(actor_name(self.queue), namespace=NAMESPACE)
        return self._actor

    async def acquire(self, n: int = 1) -> None:
        """Take ``n`` tokens from the shared bucket, waiting as long as it says."""
        if self.rate is None:
            return
        needed = n
        while needed:
            wait = self._paused_until - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            answer = await self.actor.take_tokens.remote(self.bucket, needed, self.rate, self.burst)
            needed -= answer["granted"]
            if needed:
                await asyncio.sleep(max(0.005, answer["retry_after"]))

    def pause_until(self, epoch_s: float) -> None:
        """Pause the bucket for every worker (the API said 429 / no tokens left until epoch_s)."""
        if epoch_s <= self._paused_until:
            return
        self._paused_until = epoch_s
        if self.rate is not None:
            self.actor.pause_bucket.remote(self.bucket, epoch_s)  # fire and forget: the local pause holds now

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of ``max_in_flight`` places for the host, across all workers."""
        if not self.max_in_flight:
            yield
            return
        self._count += 1
        holder = f"{self._holder}-{self._count}"
        name = f"slots:{self.bucket}"
        while not await self.actor.acquire_slot.remote(name, self.max_in_flight, holder, self.slot_ttl):
            pass
        try:
            yield
        finally:
            await self.actor.release_slot.remote(name, holder)

    def __repr__(self) -> str:
        return f"SharedLimiter({self.bucket!r}, rate={self.rate}, burst={self.burst}, in_flight={self.max_in_flight})"
