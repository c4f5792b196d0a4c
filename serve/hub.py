"""Fan-out of committed events inside one API replica.

Each replica holds ONE subscription per queue actor (``Queues.subscribe``) and
hands its events to the local WebSocket/SSE clients, so a thousand watchers
cost the actor one stream, not a thousand. A client's stream is its backlog
(read from the store after its ``after`` sequence) followed by live events,
de-duplicated and gap-checked by sequence number, so a reconnect with the last
sequence seen misses nothing and repeats nothing, across actor restarts too.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import defaultdict
from typing import AsyncIterator

from actors.facade import Queues

log = logging.getLogger(__name__)

ALL = "*"
INBOX_LIMIT = 10_000


class Feed:
    """One queue's live events, shared by every local listener."""

    def __init__(self, queues: Queues, queue: str):
        self.queues = queues
        self.queue = queue
        self.listeners: dict[str, set[asyncio.Queue]] = defaultdict(set)
        self.task: asyncio.Task | None = None
        self.started = asyncio.Event()
        self.cursor: int | None = None  # the last gseq delivered; a restarted stream resumes after it

    def start(self) -> None:
        if self.task is None or self.task.done():
            # A context of its own: the feed serves every request of the replica, so it must not run
            # as part of the request that happened to start it (and be cancelled with it).
            self.task = asyncio.get_running_loop().create_task(self._run(), context=contextvars.Context())

    async def _run(self) -> None:
        while True:
            try:
                if self.cursor is None:
                    self.cursor = (await self.queues.ping(self.queue))["last_gseq"]
                self.started.set()
                async for batch in self.queues.subscribe(self.queue, self.cursor):
                    self.cursor = batch[-1]["gseq"]
                    self._deliver(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event feed of queue %s broke; resuming after gseq %s", self.queue, self.cursor)
                await asyncio.sleep(0.5)

    def _deliver(self, batch: list[dict]) -> None:
        everyone = self.listeners.get(ALL, ())
        for event in batch:
            for inbox in (*self.listeners.get(event["stream"], ()), *everyone):
                if inbox.qsize() < INBOX_LIMIT:
                    inbox.put_nowait(event)
                else:  # a slow client: it will notice the gap and re-read from the store
                    pass

    def add(self, stream: str, inbox: asyncio.Queue) -> None:
        self.listeners[stream].add(inbox)

    def remove(self, stream: str, inbox: asyncio.Queue) -> None:
        listeners = self.listeners.get(stream)
        if listeners is not None:
            listeners.discard(inbox)
            if not listeners:
                del self.listeners[stream]


class Hub:
    def __init__(self, queues: Queues):
        self.queues = queues
        self.feeds: dict[str, Feed] = {}

    async def feed(self, queue: str) -> Feed:
        feed = self.feeds.get(queue)
        if feed is None:
            feed = self.feeds[queue] = Feed(self.queues, queue)
        feed.start()
        await asyncio.wait_for(feed.started.wait(), 30)
        return feed

    async def follow(self, queue: str, stream: str, after: int) -> AsyncIterator[dict]:
        """Events of ``stream`` (or of the whole queue when stream is ALL) after ``after``, then live."""
        feed = await self.feed(queue)
        inbox: asyncio.Queue = asyncio.Queue()
        feed.add(stream, inbox)
        key = "gseq" if stream == ALL else "seq"
        store_stream = None if stream == ALL else stream
        last = after
        try:
            async for event in self._backlog(queue, store_stream, last):
                last = event[key]
                yield event
            while True:
                event = await inbox.get()
                if event[key] <= last:
                    continue
                if event[key] > last + 1:
                    # A gap (the client was slow or the feed restarted): fill it from the store.
                    async for missed in self._backlog(queue, store_stream, last):
                        if missed[key] < event[key]:
                            last = missed[key]
                            yield missed
                    if event[key] <= last:
                        continue
                last = event[key]
                yield event
        finally:
            feed.remove(stream, inbox)

    async def _backlog(self, queue: str, stream: str | None, after: int) -> AsyncIterator[dict]:
        key = "gseq" if stream is None else "seq"
        while True:
            batch = await self.queues.events(queue, stream, after, 1000)
            for event in batch:
                yield event
            if len(batch) < 1000:
                return
            after = batch[-1][key]
