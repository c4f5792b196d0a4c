"""Fan-out of committed events inside one API replica.

Each replica holds ONE subscription per queue actor (``Queues.subscribe``) and
hands its events to the local WebSocket/SSE clients, so a thousand watchers
cost the actor one stream, not a thousand. A client's stream is its backlog
(read from the store after its ``after`` sequence) followed by live events,
de-duplicated and gap-checked by sequence number, so a reconnect with the last
sequence seen misses nothing and repeats nothing, across actor restarts too.

Replay has backpressure: the backlog is read a page at a time (on the queue
actor's reader threads, never its loop) and the next page is asked for only
when the client has taken the last one, so a follower replays at the pace its
socket drains and costs the actor one bounded read per page. While it replays,
live events wait in its inbox (at most ``INBOX_LIMIT``; beyond that they are
dropped and re-read from the store when the replay reaches them). A page of the
whole queue comes as the JSON text each event is sent as (``Raw``), so a
replaying follower costs the replica a string, not a parse and a dump.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections import defaultdict
from typing import AsyncIterator

from actors.facade import Queues

log = logging.getLogger(__name__)

ALL = "*"
INBOX_LIMIT = 10_000
PAGE = 1000


class Raw(dict):
    """A replayed event: its ordering keys (gseq, stream, seq, kind) and ``text``, the JSON sent for it."""

    __slots__ = ("text",)


def text_of(event: dict) -> str:
    """The JSON text of an event as a client is sent it."""
    return event.text if type(event) is Raw else json.dumps(event)


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
            inboxes = (*self.listeners.get(event["stream"], ()), *everyone)
            if not inboxes:
                continue
            shared = Raw(event)  # its JSON text is made once for every listener here
            shared.text = json.dumps(event)
            for inbox in inboxes:
                if inbox.qsize() < INBOX_LIMIT:
                    inbox.put_nowait(shared)
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
        """Committed events after ``after``, a page at a time; the next page is read once this one is taken."""
        if stream is not None:  # one job's or channel's stream: short, and its events may be redacted
            while True:
                batch = await self.queues.events(queue, stream, after, PAGE)
                for event in batch:
                    yield event
                if len(batch) < PAGE:
                    return
                after = batch[-1]["seq"]
        while True:  # the whole queue (an operator's stream): as the text to send
            rows = await self.queues.events(queue, None, after, PAGE, raw=True)
            for gseq, name, seq, kind, text in rows:
                event = Raw(gseq=gseq, stream=name, seq=seq, kind=kind)
                event.text = text
                yield event
            if len(rows) < PAGE:
                return
            after = rows[-1][0]
