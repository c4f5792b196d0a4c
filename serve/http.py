"""Small HTTP helpers shared by the API and the dashboard routes."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from fastapi import Request

from actors.exceptions import InvalidInput, MalformedRequest
from actors.queue import QUEUE_NAME


async def read_json(request: Request) -> Any:
    """The request's JSON body, or MalformedRequest (400) saying what is wrong with it."""
    raw = await request.body()
    if not raw:
        raise MalformedRequest("the request body is empty; send JSON")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"the request body is not valid JSON: {exc}") from None


def check_queue(queue: str) -> str:
    if not isinstance(queue, str) or not QUEUE_NAME.match(queue):
        raise InvalidInput(f"queue name {queue!r} must match {QUEUE_NAME.pattern}")
    return queue


async def with_keepalive(events: AsyncIterator, every: float = 15.0) -> AsyncIterator:
    """The items of ``events``, and ``None`` whenever ``every`` seconds pass without one (SSE keep-alives).

    The source runs in a task of its own: a keep-alive never cancels it mid-await (cancelling an
    async generator's ``__anext__`` would end the stream).
    """
    items: asyncio.Queue = asyncio.Queue(maxsize=1000)
    end = object()

    async def pump() -> None:
        try:
            async for item in events:
                await items.put(item)
        finally:
            try:
                items.put_nowait(end)
            except asyncio.QueueFull:
                pass

    task = asyncio.ensure_future(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(items.get(), every)
            except asyncio.TimeoutError:
                yield None
                continue
            if item is end:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()
                return
            yield item
    finally:
        task.cancel()
