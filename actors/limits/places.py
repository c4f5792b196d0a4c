"""In-flight places: at most ``limit`` requests at once to one thing (a host), across every worker.

The queue actor holds them in memory (a place is worth nothing after a restart: its holders retry), each
place expiring ``ttl`` seconds after its grant, so a dead worker cannot hold one forever. Workers lease
places in batches and hand them on locally (``shared.py``); this is the actor's side, plain asyncio.
"""

from __future__ import annotations

import asyncio
import itertools
import time


class Places:
    """The in-flight places of every name of one queue."""

    def __init__(self):
        self._holders: dict[str, dict[str, float]] = {}  # name -> place id -> expires (monotonic)
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._ids = itertools.count(1)

    async def acquire(self, name: str, limit: int, holder: str, want: int = 1, ttl: float = 60.0,
                      wait: float = 30.0) -> list[str]:
        """Up to ``want`` of the ``limit`` places of ``name``, as place ids; ``[]`` after ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            holders = self._holders.setdefault(name, {})
            for stale in [h for h, expires in holders.items() if expires < now]:
                del holders[stale]
            free = limit - len(holders)
            if free > 0:
                granted = [f"{holder}:{next(self._ids)}" for _ in range(min(max(1, want), free))]
                for place in granted:
                    holders[place] = now + ttl
                return granted
            if now >= deadline:
                return []
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(name, []).append(waiter)
            try:
                await asyncio.wait_for(waiter, min(deadline - now, ttl))
            except asyncio.TimeoutError:
                pass

    def release(self, name: str, places: list[str]) -> None:
        """Give places back; as many waiters as places freed try again."""
        holders = self._holders.get(name, {})
        freed = sum(holders.pop(place, None) is not None for place in places)
        waiters = self._waiters.get(name)
        while waiters and freed:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(True)
                freed -= 1
