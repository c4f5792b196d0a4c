"""A first-come, first-served line of waiters from any thread and any event loop.

Limits shared by the job attempts of one process (each attempt may run its own
``asyncio.run`` on its own thread) cannot use ``asyncio`` primitives, which bind
to one loop. :class:`Handoff` is the part they share: a waiter parks a future
of its own loop; whoever frees something hands it to the longest waiter through
that loop (``call_soon_threadsafe``). A waiter cancelled just after something
was handed to it passes it back through ``returned``, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any, Callable

Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future]


class Handoff:
    def __init__(self, returned: Callable[[Any], None]):
        #: Guards the line; the owner holds it around ``park`` and ``give`` with its own state.
        self.lock = threading.Lock()
        self._line: deque[Waiter] = deque()
        self._returned = returned

    def __len__(self) -> int:
        return len(self._line)

    def park(self) -> Waiter:
        """Join the line (hold ``lock``); then ``await wait(waiter)`` without it."""
        loop = asyncio.get_running_loop()
        waiter = (loop, loop.create_future())
        self._line.append(waiter)
        return waiter

    async def wait(self, waiter: Waiter) -> Any:
        try:
            return await waiter[1]
        except asyncio.CancelledError:
            with self.lock:
                if waiter in self._line:
                    self._line.remove(waiter)
                    raise
            # Something was handed to us just as we were cancelled: pass it on.
            if waiter[1].done() and not waiter[1].cancelled():
                self._returned(waiter[1].result())
            raise

    def give(self, value: Any) -> bool:
        """Hand ``value`` to the longest waiter whose loop still runs (hold ``lock``); False if none."""
        while self._line:
            loop, future = self._line.popleft()
            try:
                loop.call_soon_threadsafe(self._deliver, future, value)
                return True
            except RuntimeError:  # that waiter's loop is closed
                continue
        return False

    def fail_all(self, error: BaseException) -> None:
        """Wake every waiter with ``error`` raised (hold ``lock``)."""
        while self._line:
            loop, future = self._line.popleft()
            try:
                loop.call_soon_threadsafe(_fail, future, error)
            except RuntimeError:  # that waiter's loop is closed
                continue

    def _deliver(self, future: asyncio.Future, value: Any) -> None:
        if future.done():  # cancelled between the hand-over and now
            self._returned(value)
        else:
            future.set_result(value)


def _fail(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
