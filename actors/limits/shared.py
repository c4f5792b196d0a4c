"""Rate and concurrency limits shared by every worker, held by a queue's actor.

``SharedLimiter`` is what a job uses to call a rate-limited API from many
workers at once: ``await acquire()`` takes a token from the actor's named
bucket right before a request, ``pause_until(t)`` pauses the bucket for
everyone when the API answers 429, and ``async with slot():`` holds one of
the N in-flight places for the host. It works from any event loop (each job
attempt may run its own ``asyncio.run``).

In-flight places are leased from the actor in batches and handed from one
request of the process to the next without an actor call (``_Places``), so a
busy worker pays about one actor round trip per ``REUSE`` requests, not two
per request; a place goes back when no local request wants it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import ray

from .handoff import Handoff
from ..ids import actor_name
from ..settings import NAMESPACE

log = logging.getLogger(__name__)

#: A place is handed between local requests at most this many times before it goes back to the actor,
#: so a busy process cannot keep the host's places from the others for long.
REUSE = 16


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
        self._places: _Places | None = None
        self._actor = None

    @property
    def actor(self):
        if self._actor is None:  # one lookup per limiter; the handle follows the actor across restarts
            try:
                self._actor = ray.get_actor(actor_name(self.queue), namespace=NAMESPACE)
            except ValueError:
                raise LookupError(f"no actor for queue {self.queue!r}: a SharedLimiter works inside a dojo job "
                                  "(which names its queue) or with queue= naming a queue of a running dojo") from None
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
        if self._places is None:
            self._places = _Places(lambda: self.actor, f"slots:{self.bucket}", self.max_in_flight,
                                   self._holder, self.slot_ttl)
        place = await self._places.acquire()
        try:
            yield
        finally:
            self._places.release(place)

    def __repr__(self) -> str:
        return f"SharedLimiter({self.bucket!r}, rate={self.rate}, burst={self.burst}, in_flight={self.max_in_flight})"


class _Place:
    __slots__ = ("id", "granted", "uses")

    def __init__(self, place_id: str, granted: float):
        self.id = place_id
        self.granted = granted
        self.uses = 0


class _Places:
    """This process's share of one cluster-wide in-flight limit, usable from any thread and event loop.

    Waiters queue here, first come first served. A broker thread of the process leases as many places
    as there are waiters in one actor call; a released place goes straight to the next local waiter
    (no actor call) unless it was used ``REUSE`` times or is half its ``ttl`` old, and otherwise back
    to the actor, batched with other returns.
    """

    def __init__(self, actor, name: str, limit: int, holder: str, ttl: float):
        self._actor = actor
        self.name = name
        self.limit = limit
        self.holder = holder
        self.ttl = ttl
        self._line = Handoff(returned=lambda place: self.release(place, used=False))
        self._returns: list[str] = []
        self._leasing = False

    async def acquire(self) -> _Place:
        with self._line.lock:
            waiter = self._line.park()
        self._kick()
        return await self._line.wait(waiter)

    def release(self, place: _Place, used: bool = True) -> None:
        place.uses += used
        fresh = place.uses < REUSE and time.monotonic() - place.granted < self.ttl / 2
        with self._line.lock:
            if fresh and self._line.give(place):
                return
            self._returns.append(place.id)
        self._kick()

    # -- the broker: actor calls run on one background loop of the process --------------------------
    def _kick(self) -> None:
        _broker().call_soon_threadsafe(self._pump)

    def _pump(self) -> None:
        with self._line.lock:
            returns, self._returns = self._returns, []
            start = bool(len(self._line)) and not self._leasing
            self._leasing = self._leasing or start
        if returns:
            self._actor().release_slots.remote(self.name, returns)  # fire and forget
        if start:
            asyncio.get_running_loop().create_task(self._lease())

    async def _lease(self) -> None:
        failures = 0
        try:
            while True:
                with self._line.lock:
                    want = len(self._line)
                if not want:
                    return
                try:
                    granted = await self._actor().acquire_slots.remote(self.name, self.limit, self.holder, want,
                                                                        self.ttl, 5.0)
                    failures = 0
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                    failures += 1  # the actor is restarting: try again shortly
                    log.warning("could not lease places of %s (%s); retrying", self.name, type(exc).__name__)
                    await asyncio.sleep(min(2.0, 0.1 * failures))
                    continue
                except Exception as exc:  # no such queue, bad arguments: every waiter gets the error
                    with self._line.lock:
                        self._line.fail_all(exc)
                    return
                now = time.monotonic()
                with self._line.lock:
                    for place_id in granted:
                        if not self._line.give(_Place(place_id, now)):
                            self._returns.append(place_id)
                    returning = bool(self._returns)
                if returning:
                    self._pump()
        finally:
            with self._line.lock:
                self._leasing = False
                again = bool(len(self._line))
            if again:
                self._pump()


_broker_loop: asyncio.AbstractEventLoop | None = None
_broker_lock = threading.Lock()


def _broker() -> asyncio.AbstractEventLoop:
    """The process's background event loop for limiter calls to the queue actors (started on first use)."""
    global _broker_loop
    with _broker_lock:
        if _broker_loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="dojo-limits", daemon=True).start()
            _broker_loop = loop
        return _broker_loop
