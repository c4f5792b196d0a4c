"""The queue's event log: numbered events, staged with the commit and published after it.

Every change a subscriber may see is an event: ``gseq`` orders all of a queue's events, ``seq`` numbers
those of one stream (``job:<id>``, ``channel:<name>``, ``queue:<name>``), so a client resumes a stream or
the whole queue from the last number it saw. Events are staged in the store beside the change they
describe (one commit) and handed to the actor by ``take()`` to be published only once committed.

``Subscriptions`` is the other half, on the actor's loop: the committed events fanned out to every
subscriber in order, the latest ``RECENT`` from memory, older ones from the store (off the loop).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from typing import AsyncIterator, Awaitable, Callable

#: Committed events kept in memory for subscribers (one behind by more reads the store).
RECENT = 20_000
#: Events per batch a subscriber is sent.
BATCH = 2000


class EventLog:
    """Numbers and stages a queue's events. Single-threaded, like the rules that emit them."""

    def __init__(self, store):
        self.store = store
        self.next_gseq = store.max_gseq() + 1
        self._seq: dict[str, int] = {}  # stream -> its last seq (streams seen since the start)
        self._staged: list[dict] = []

    def emit(self, stream: str, kind: str, data: dict, now: float) -> dict:
        seq = self._seq.get(stream)
        if seq is None:
            seq = self.store.last_seq(stream)
        seq += 1
        self._seq[stream] = seq
        event = {"gseq": self.next_gseq, "stream": stream, "seq": seq, "at": now, "kind": kind, "data": data}
        self.next_gseq += 1
        self.store.add_event(event)
        self._staged.append(event)
        return event

    def begin(self, stream: str) -> None:
        """A new stream (a job just made): its numbers start at 1 without asking the store."""
        self._seq[stream] = 0

    def end(self, stream: str) -> None:
        """A stream that will get no more events (a finished or deleted job): forget its number."""
        self._seq.pop(stream, None)

    def take(self) -> list[dict]:
        """Events staged since the last call; publish them only after the commit."""
        events, self._staged = self._staged, []
        return events


class Subscriptions:
    """Committed events, in order, to any number of subscribers; plain asyncio on the actor's loop."""

    def __init__(self, last_gseq: int, recent: int = RECENT):
        self.last_gseq = last_gseq  # of the last committed event
        self._recent: collections.deque = collections.deque(maxlen=recent)
        self._new = asyncio.Event()

    def publish(self, events: list[dict]) -> None:
        """Events just committed (in gseq order): wake every subscriber."""
        if events:
            self.last_gseq = events[-1]["gseq"]
            self._recent.extend(events)
            self._new.set()
            self._new = asyncio.Event()

    async def follow(self, after: int, stored: Callable[[int, int], Awaitable[list[dict]]]) -> AsyncIterator[list]:
        """Every committed event with gseq > ``after``, in order, as batches; then live batches, forever.

        ``stored(after, limit)`` reads older events from the store for a subscriber behind the recent ones.
        """
        cursor = after
        while True:
            recent = self._recent
            if recent and cursor + 1 >= recent[0]["gseq"]:
                missing = recent[-1]["gseq"] - cursor
                batch = list(itertools.islice(recent, len(recent) - missing, len(recent) - missing + BATCH)) \
                    if missing > 0 else []
            else:
                batch = await stored(cursor, BATCH)
            if batch:
                cursor = batch[-1]["gseq"]
                yield batch
                continue
            await self._new.wait()
