"""Rate and concurrency limits that every worker calling one API shares.

The crawler only talks to a :class:`Limiter`:

- ``await limiter.acquire(n)``: take ``n`` request tokens, waiting as needed;
- ``limiter.pause_until(epoch_s)``: grant no token before this wall-clock time
  (the API said 429 or "0 remaining"); pauses only ever extend;
- ``async with limiter.slot():``: hold one of the N in-flight places for a
  host for the duration of one HTTP request.

The client calls them in that nesting: ``async with slot(): await acquire(1);
send``. Tokens are taken as late as possible (just before sending) so a token
is never spent waiting for a connection.

:class:`LocalLimiter` implements it in one process. It is safe to share across
threads and event loops (each job attempt may run its own ``asyncio.run``).
The queue actor's shared limiter implements the same protocol across workers.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from contextlib import asynccontextmanager
from typing import AsyncContextManager, AsyncIterator, Protocol, runtime_checkable

from actors.limits.handoff import Handoff


@runtime_checkable
class Limiter(Protocol):
    """What the Helix client needs from a rate limiter; see the module docstring."""

    async def acquire(self, n: int = 1) -> None: ...

    def pause_until(self, epoch_s: float) -> None: ...

    def slot(self) -> AsyncContextManager[None]: ...


class Gate:
    """A FIFO counting semaphore usable from any thread and any event loop.

    ``asyncio.Semaphore`` binds to one loop; a process-wide limiter outlives
    the loops of the job attempts that use it, hence this.
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a gate needs at least one place, got {size}")
        self.size = size
        self._free = size
        self._line = Handoff(returned=lambda _: self.release())

    @property
    def in_use(self) -> int:
        return self.size - self._free

    async def acquire(self) -> None:
        with self._line.lock:
            if self._free > 0 and not len(self._line):
                self._free -= 1
                return
            waiter = self._line.park()
        await self._line.wait(waiter)

    def release(self) -> None:
        with self._line.lock:
            if not self._line.give(None):
                self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc) -> None:
        self.release()


class LocalLimiter:
    """An in-process token bucket (``rate`` tokens/s, ``burst`` deep) and an in-flight limit.

    ``rate=None`` means no bucket (only pauses and the in-flight limit apply);
    ``max_in_flight=None`` means no in-flight limit. Waiters are served first
    come, first served; only the head of the line sleeps on a timer.

    The bucket starts full. To stay under a remote bucket of the same size,
    use :meth:`under` which leaves a little headroom: a request is counted by
    the server when it *arrives*, and arrival delays vary.
    """

    def __init__(self, rate: float | None = None, burst: int | None = None, max_in_flight: int | None = None):
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 tokens/s or None, got {rate}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate = rate
        self.burst = burst if burst is not None else (max(1, math.ceil(rate)) if rate else None)
        self._tokens = float(self.burst or 0)
        self._stamp = time.monotonic()
        self._resume_at = 0.0  # monotonic
        self._lock = threading.Lock()
        self._line = Gate(1)
        self._slots = Gate(max_in_flight) if max_in_flight else None
        self.max_in_flight = max_in_flight
        self.granted = 0

    @classmethod
    def under(cls, rate: float | None, burst: int | None, max_in_flight: int | None = None, *,
              rate_margin: float = 0.02, jitter_s: float = 0.1) -> "LocalLimiter":
        """A limiter that stays just under a remote bucket of ``rate``/``burst``.

        The server counts a request when it *arrives*. If one request takes
        ``d`` seconds longer to arrive than the next (a new connection, a busy
        event loop), the server sees them up to ``rate * d`` tokens closer
        together than they were sent. So the local bucket is
        ``ceil(rate * jitter_s)`` tokens shallower (at least 1) and refills
        ``rate_margin`` slower, which also builds slack over a long run.
        """
        if rate is None:
            return cls(None, None, max_in_flight)
        burst = burst if burst is not None else max(1, math.ceil(rate))
        margin = max(1, math.ceil(rate * jitter_s))
        return cls(rate * (1 - rate_margin), max(1, burst - margin), max_in_flight)

    async def acquire(self, n: int = 1) -> None:
        if n < 1:
            raise ValueError(f"acquire needs n >= 1, got {n}")
        if self.burst is not None and n > self.burst:
            raise ValueError(f"cannot take {n} tokens at once from a bucket of {self.burst}")
        # Skip the line only when nobody stands in it, so the head of the line is never starved.
        if self._line.in_use == 0 and self._try_take(n) == 0.0:
            return
        async with self._line:
            while True:
                wait = self._try_take(n)
                if wait == 0.0:
                    return
                await asyncio.sleep(wait)

    def _try_take(self, n: int) -> float:
        """Take ``n`` tokens and return 0.0, or return how long to wait before trying again."""
        with self._lock:
            now = time.monotonic()
            if now < self._resume_at:
                return self._resume_at - now
            if self.rate is None:
                self.granted += n
                return 0.0
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= n:
                self._tokens -= n
                self.granted += n
                return 0.0
            return max((n - self._tokens) / self.rate, 0.001)

    def pause_until(self, epoch_s: float) -> None:
        # The bucket keeps refilling while paused (capped at burst), so a pause
        # delays sends without lowering the long-run rate.
        resume = time.monotonic() + (epoch_s - time.time())
        with self._lock:
            self._resume_at = max(self._resume_at, resume)

    @property
    def paused_for(self) -> float:
        """Seconds until grants resume (0 when not paused)."""
        return max(0.0, self._resume_at - time.monotonic())

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            yield
            return
        async with self._slots:
            yield

    def __repr__(self) -> str:
        return f"LocalLimiter(rate={self.rate}, burst={self.burst}, max_in_flight={self.max_in_flight})"


def local_limiter(settings) -> LocalLimiter:
    """The ``DOJO_HELIX_LIMITER=local`` factory: a LocalLimiter just under the settings' rate and burst."""
    return LocalLimiter.under(settings.rate, settings.burst, settings.max_in_flight)


def shared_limiter(settings):
    """The ``DOJO_HELIX_LIMITER=shared`` factory: one bucket per Helix client id, held by the queue actor.

    Every worker of the cluster takes its tokens from the same bucket (kept just
    under the API's rate and burst, as ``LocalLimiter.under`` explains), a 429
    pauses it for all of them, and at most ``max_in_flight`` requests are in
    flight to the host across all workers.
    """
    from actors.limits import SharedLimiter

    if settings.rate is None:
        return SharedLimiter(f"helix:{settings.client_id or 'anonymous'}", max_in_flight=settings.max_in_flight)
    # A shared token travels back from the actor before its request leaves, so arrivals jitter more than
    # with a local bucket: leave a quarter second's worth of tokens out of the burst (at least one).
    margin = max(1, math.ceil(settings.rate * 0.25))
    return SharedLimiter(f"helix:{settings.client_id or 'anonymous'}", rate=settings.rate * 0.98,
                         burst=max(1, settings.burst - margin), max_in_flight=settings.max_in_flight)
