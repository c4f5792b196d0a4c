"""Small HTTP helpers shared by the API and the dashboard routes."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Callable

from fastapi import Request

from actors.exceptions import InvalidInput, MalformedRequest, PayloadTooLarge
from actors.ids import QUEUE_NAME


#: Deepest nesting of arrays and objects a JSON body may have (payloads are records, not trees).
MAX_JSON_DEPTH = 64


async def read_json(request: Request) -> Any:
    """The request's JSON body, or MalformedRequest (400) saying what is wrong with it."""
    raw = await request.body()
    if not raw:
        raise MalformedRequest("the request body is empty; send JSON")
    try:
        doc = json.loads(raw)
    except RecursionError:
        doc = _TOO_DEEP
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"the request body is not valid JSON: {exc}") from None
    if doc is _TOO_DEEP or _deeper_than(doc, MAX_JSON_DEPTH):
        raise MalformedRequest(f"the JSON body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels; "
                               "send flatter data")
    return doc


_TOO_DEEP = object()


def _deeper_than(doc: Any, most: int) -> bool:
    """True when ``doc`` nests lists/dicts more than ``most`` levels (no recursion: it is untrusted)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > most:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class BodyTooLarge(PayloadTooLarge):
    """The request body is over the size limit; send less (large inputs go to object storage)."""


class BodyLimit:
    """ASGI middleware: refuse a request body over its limit while it streams.

    A ``Content-Length`` over the limit is answered 413 before any byte is read; a body
    without one (``Transfer-Encoding: chunked``) is counted as it arrives and the read
    that passes the limit raises ``BodyTooLarge`` (413), so nothing past it is buffered.
    """

    def __init__(self, app, limit_for: Callable[[str], int]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        length = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await _refuse(send, BodyTooLarge(
                f"request body is {int(length)} bytes, over the limit of {limit} bytes; "
                "put large inputs in object storage", limit=limit))
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"request body is over the limit of {limit} bytes (it was cut off "
                                       f"after {seen} bytes); put large inputs in object storage", limit=limit)
            return message

        await self.app(scope, counted, send)


async def _refuse(send, exc: InvalidInput) -> None:
    body = json.dumps(exc.to_dict()).encode()
    await send({"type": "http.response.start", "status": exc.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def check_queue(queue: str) -> str:
    if not isinstance(queue, str) or not QUEUE_NAME.match(queue):
        raise InvalidInput(f"queue name {queue!r} must match {QUEUE_NAME.pattern}")
    return queue


#: The longest search (``q``) the lists take: a search is a substring of a job's id, payload or error.
MAX_SEARCH = 256


def check_search(q: str | None) -> str | None:
    """A list's search text: None for none, else 1..MAX_SEARCH characters (422 otherwise)."""
    if q is not None and len(q) > MAX_SEARCH:
        raise InvalidInput(f"q (search) must be at most {MAX_SEARCH} characters, got {len(q)}; search for a "
                           "distinctive part of the id, payload or error")
    return q or None


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
