"""Coalescing: many concurrent single items share one call (one actor call, one group commit).

A Serve replica receives one job per ``POST /v1/jobs`` from most callers; the
queue actor moves >100k jobs/s when a call carries many, but only ~1.5–2k
calls/s. ``Coalescer`` gathers the items that arrive for the same key (a
queue) while the loop is busy and sends them together:

- an idle key sends on the next loop turn (no added latency for a lone
  caller); while a call for the key is in flight, new items wait at most
  ``linger`` seconds (hundreds of microseconds) or until ``max_batch`` of
  them are waiting, and at most ``max_inflight`` calls per key run at once;
- every caller gets its own result, and only after the call that carried
  its item returned (for the queue actor: after the group commit);
- a refused item fails only its own caller: the call is all-or-nothing and
  changed nothing, so the refused item is sent again alone (its caller gets
  exactly the error it would have had alone) and the others are sent again
  together. ``refused(exc)`` says whether an error is about one item (its
  index, or -1 when the error does not say which) or about the whole call
  (``None``: every caller of the call gets it).

The sends run in a context of their own: a caller that goes away (an HTTP
client that disconnects) does not cancel the call that carries the others.
It is plain asyncio (no Ray): the API uses it in front of the queue actor,
``serve.client.AsyncClient`` in front of ``POST /v1/jobs``; ``ThreadCoalescer`` does
the same for threads (``serve.client.Client``).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import defaultdict
from typing import Any, Awaitable, Callable, Hashable

Send = Callable[[Hashable, list], Awaitable[list]]
Refused = Callable[[BaseException], "int | None"]

LINGER_S = 0.0003
MAX_BATCH = 1000  # the queue actor's limit per call (actors.queue.Limits.max_batch)
MAX_INFLIGHT = 4


class Coalescer:
    """Send concurrent ``submit(key, item)`` calls of one key as one ``send(key, items)``."""

    def __init__(self, send: Send, refused: Refused = lambda exc: None, linger: float = LINGER_S,
                 max_batch: int = MAX_BATCH, max_inflight: int = MAX_INFLIGHT):
        if linger < 0 or max_batch < 1 or max_inflight < 1:
            raise ValueError(f"expected linger >= 0, max_batch >= 1 and max_inflight >= 1, "
                             f"got {linger}, {max_batch}, {max_inflight}")
        self._send = send
        self._refused = refused
        self.linger = linger
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._pending: dict[Hashable, list[tuple[Any, asyncio.Future]]] = defaultdict(list)
        self._inflight: dict[Hashable, int] = defaultdict(int)
        self._timers: dict[Hashable, asyncio.Handle] = {}
        self.calls = 0  # sends made, for tests and benchmarks
        self.items = 0

    async def submit(self, key: Hashable, item: Any) -> Any:
        """``item``'s own result once the call carrying it returned (or that call's error)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        pending = self._pending[key]
        pending.append((item, future))
        if len(pending) >= self.max_batch:
            self._flush(key)
        elif key not in self._timers and self._inflight[key] < self.max_inflight:
            # Idle: go on the next turn (the items of this turn go along). Busy: linger, bounded.
            delay = self.linger if self._inflight[key] else 0
            self._timers[key] = loop.call_later(delay, self._flush, key) if delay else loop.call_soon(self._flush, key)
        return await future

    def _flush(self, key: Hashable) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        pending = self._pending.get(key)
        if not pending or self._inflight[key] >= self.max_inflight:
            return  # a call that returns sends what waits
        batch, pending[:] = pending[:self.max_batch], pending[self.max_batch:]
        if not pending:
            del self._pending[key]
        self._inflight[key] += 1
        # A fresh context: the call belongs to no caller, so no caller's cancellation reaches it.
        contextvars.Context().run(asyncio.get_running_loop().create_task, self._run(key, batch))

    async def _run(self, key: Hashable, batch: list) -> None:
        try:
            await self._deliver(key, batch)
        finally:
            self._inflight[key] -= 1
            if self._pending.get(key):
                self._flush(key)
            elif not self._inflight[key]:
                del self._inflight[key]

    async def _deliver(self, key: Hashable, batch: list) -> None:
        self.calls += 1
        self.items += len(batch)
        try:
            results = await self._send(key, [item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001  (handed to the callers)
            index = self._refused(exc) if len(batch) > 1 else None
            if index is None:
                _fail(batch, exc)
            elif 0 <= index < len(batch):
                rest = batch[:index] + batch[index + 1:]
                await asyncio.gather(self._deliver(key, [batch[index]]), self._deliver(key, rest))
            else:
                await asyncio.gather(*(self._deliver(key, [one]) for one in batch))
            return
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        if not isinstance(results, list) or len(results) != len(batch):
            _fail(batch, RuntimeError(f"expected {len(batch)} results, got {results!r:.200}"))
            return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)


def _fail(batch: list, exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


class ThreadCoalescer:
    """``Coalescer`` for threads (the sync client): concurrent ``submit`` calls of a key share one send.

    The first caller of an idle key sends at once (a lone caller waits for nothing); callers that
    arrive meanwhile wait, and when a send returns, the first of them sends everything that waits.
    """

    def __init__(self, send: Callable[[Hashable, list], list], refused: Refused = lambda exc: None,
                 max_batch: int = MAX_BATCH):
        if max_batch < 1:
            raise ValueError(f"expected max_batch >= 1, got {max_batch}")
        self._send = send
        self._refused = refused
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: dict[Hashable, list[_Slot]] = defaultdict(list)
        self._sending: set = set()
        self.calls = 0

    def submit(self, key: Hashable, item: Any) -> Any:
        slot = _Slot(item)
        with self._lock:
            self._pending[key].append(slot)
            if key not in self._sending:
                self._sending.add(key)
                slot.lead = True
        while not slot.finished:
            if slot.lead:
                slot.lead = False
                self._send_next(key)
            else:
                slot.event.wait()
                slot.event.clear()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _send_next(self, key: Hashable) -> None:
        with self._lock:
            pending = self._pending[key]
            batch, pending[:] = pending[:self.max_batch], pending[self.max_batch:]
        try:
            self._deliver(key, batch)
        finally:
            with self._lock:
                pending = self._pending[key]
                if pending:
                    pending[0].lead = True
                    pending[0].event.set()
                else:
                    del self._pending[key]
                    self._sending.discard(key)

    def _deliver(self, key: Hashable, batch: list[_Slot]) -> None:
        self.calls += 1
        try:
            results = self._send(key, [slot.item for slot in batch])
        except Exception as exc:  # noqa: BLE001  (handed to the callers)
            index = self._refused(exc) if len(batch) > 1 else None
            if index is None:
                for slot in batch:
                    slot.finish(error=exc)
            elif 0 <= index < len(batch):
                self._deliver(key, [batch[index]])
                self._deliver(key, batch[:index] + batch[index + 1:])
            else:
                for slot in batch:
                    self._deliver(key, [slot])
            return
        except BaseException as exc:
            for slot in batch:
                slot.finish(error=exc)
            raise
        if not isinstance(results, list) or len(results) != len(batch):
            error = RuntimeError(f"expected {len(batch)} results, got {results!r:.200}")
            for slot in batch:
                slot.finish(error=error)
            return
        for slot, result in zip(batch, results):
            slot.finish(result=result)


class _Slot:
    __slots__ = ("item", "event", "lead", "finished", "result", "error")

    def __init__(self, item: Any):
        self.item = item
        self.event = threading.Event()
        self.lead = False
        self.finished = False
        self.result = None
        self.error: BaseException | None = None

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.finished = True
        self.event.set()
