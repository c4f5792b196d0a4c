"""Live streams (WebSocket and server-sent events): how one is sent, and the caps on them.

``ws_stream`` sends events as WebSocket text frames, ``sse`` as a ``text/event-stream`` response
(with keep-alives; ``last_event_id`` resumes one after a reconnect); every live route of the API
and the dashboard answers through these two (the log stream of ``routes/logs.py`` words its own events).

Each open stream holds a socket, a task and an inbox in the replica, so an API
replica keeps at most ``DOJO_MAX_STREAMS`` open, and one credential (an API,
worker or scoped token, or a dashboard cookie) at most
``DOJO_MAX_STREAMS_PER_TOKEN`` of them. One more is refused at once, before
it is authorized or read: an event stream with 429 and ``Retry-After``, a
WebSocket with close code 4429, both with the usual JSON error body.

A slow subscriber: an event send that does not complete within ``SEND_S``
seconds (the client stopped reading) ends the stream, with close code 4408 for
a WebSocket; the client reconnects with ``after=<last seq>`` and misses
nothing. With the replica serving DOJO_PORT itself (DOJO_INGRESS=replica, the
default) a send waits for the client's socket, so a stalled client is seen
(tests/acceptance/test_streams.py, over the real port). Behind Ray Serve's
proxy (DOJO_INGRESS=serve) a replica's send is queued by Serve, not blocked,
so there a stalled client cannot be seen from here: the caps on the number of
streams are what bound the memory held for slow clients.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter

from fastapi import Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from actors.exceptions import DojoError

from .http import with_keepalive
from .hub import text_of

#: Seconds one send of a stream may take before the subscriber counts as too slow.
SEND_S = 30.0


class TooManyStreams(DojoError):
    """Too many live streams are open; close one (or wait) and reconnect with after=<last seq>."""

    status = 429


def _credential(scope) -> str:
    """Who opens the stream, for the per-token cap: a hash of its token or cookie, else its address."""
    headers = dict(scope.get("headers") or ())
    raw = headers.get(b"authorization", b"")
    if not raw:
        for part in scope.get("query_string", b"").split(b"&"):
            if part.startswith(b"token="):
                raw = part
        raw = raw or headers.get(b"cookie", b"")
    if not raw:
        raw = str((scope.get("client") or ("?",))[0]).encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def _is_stream(scope) -> bool:
    if scope["type"] == "websocket":
        return True
    if scope["type"] != "http" or scope.get("method") != "GET":
        return False
    return any(k == b"accept" and b"text/event-stream" in v for k, v in scope.get("headers") or ())


class StreamCaps:
    """ASGI middleware: count open streams; refuse one over the caps; end a stream whose client stalls."""

    def __init__(self, app, total: int, per_token: int, send_s: float | None = None):
        self.app = app
        self.total, self.per_token = total, per_token
        self.send_s = SEND_S if send_s is None else send_s
        self.open: Counter = Counter()

    async def __call__(self, scope, receive, send):
        if not _is_stream(scope):
            return await self.app(scope, receive, send)
        who = _credential(scope)
        if sum(self.open.values()) >= self.total:
            return await _refuse(scope, receive, send, TooManyStreams(
                f"this API replica has {self.total} live streams open (DOJO_MAX_STREAMS); retry shortly",
                retry_after=5))
        if self.open[who] >= self.per_token:
            return await _refuse(scope, receive, send, TooManyStreams(
                f"this token has {self.per_token} live streams open (DOJO_MAX_STREAMS_PER_TOKEN); close one "
                "first", retry_after=5))
        self.open[who] += 1
        stalled: list[bool] = []
        try:
            await self.app(scope, receive, self._timed(scope, send, stalled))
        except BaseException:
            if not stalled:  # the error is the app's own (perhaps wrapped in an ExceptionGroup)
                raise
        finally:
            self.open[who] -= 1
            if not self.open[who]:
                del self.open[who]

    def _timed(self, scope, send, stalled: list):
        async def timed_send(message):
            try:
                await asyncio.wait_for(send(message), self.send_s)
            except asyncio.TimeoutError:
                stalled.append(True)
                if scope["type"] == "websocket":
                    try:
                        await asyncio.wait_for(send({"type": "websocket.close", "code": 4408,
                                                     "reason": "too slow; reconnect with after=<last seq>"}), 1)
                    except Exception:  # noqa: BLE001 - the client is gone or stuck either way
                        pass
                raise _TooSlow() from None
        return timed_send


class _TooSlow(Exception):
    pass


async def _refuse(scope, receive, send, exc: TooManyStreams) -> None:
    body = json.dumps(exc.to_dict()).encode()
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": body.decode()})
        await send({"type": "websocket.close", "code": 4429, "reason": exc.message[:120]})
        return
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(exc.context["retry_after"]).encode())]})
    await send({"type": "http.response.body", "body": body})


async def ws_stream(websocket: WebSocket, check, follow) -> None:
    """Accept, authorize, then send events as JSON text frames until the client leaves.

    Close codes: 4401 no or bad token, 4403 token does not grant this stream,
    4404 no such job, 4400 bad request.
    """
    try:
        await check()
    except DojoError as exc:
        await websocket.accept()
        await websocket.send_json(exc.to_dict())
        await websocket.close(code=4000 + exc.status if exc.status < 1000 else 4500, reason=exc.message[:120])
        return
    await websocket.accept()

    async def pump():
        async for event in follow():
            await websocket.send_text(text_of(event))

    async def listen():
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return

    tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(listen())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except WebSocketDisconnect:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def last_event_id(request: Request, after: int) -> int:
    """Where an event stream resumes: the browser's ``Last-Event-ID`` on a reconnect, else ``after``."""
    last = request.headers.get("last-event-id")
    return int(last) if last and last.isdigit() else after


def sse(events, key: str) -> StreamingResponse:
    """``events`` as server-sent events, each with id ``event[key]`` and its kind, and keep-alives."""
    async def body():
        yield ": dojo event stream\n\n"
        async for event in with_keepalive(events):
            if event is None:
                yield ": keep-alive\n\n"
            else:
                yield f"id: {event[key]}\nevent: {event['kind']}\ndata: {text_of(event)}\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
