"""The short way in for the API's busiest request: one job per ``POST /v1/jobs`` with the API token.

Profiled in the replica, FastAPI's routing, dependency solving and request objects cost more than
the rest of such a request. ``FastSubmit`` is a plain ASGI middleware that answers the common case
itself: ``POST /v1/jobs`` without a query string, ``Authorization: Bearer <API token>``, and a JSON
object whose ``queue`` (if any) is a well-formed name. It makes the same coalesced call and gives
the same answer as the route (``serve.routes.jobs.enqueue``, through its ``enqueue_one``);
anything else (another token, a list, a body that is not such an object) goes on to the route
unchanged, its body replayed, so every refusal is still answered in one place.
"""

from __future__ import annotations

import json
from typing import Awaitable, Callable

from actors.exceptions import DojoError
from actors.ids import QUEUE_NAME

from .http import MAX_JSON_DEPTH, _deeper_than

#: ``submit(queue, spec, headers)`` -> (JSON content, status); headers: what tracing reads (``traceparent``).
Submit = Callable[[str, dict, dict], Awaitable[tuple[dict, int]]]


class FastSubmit:
    def __init__(self, app, is_admin: Callable[[str], bool], submit: Submit):
        self.app = app
        self.is_admin = is_admin
        self.submit = submit

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or scope["path"] != "/v1/jobs" or scope["method"] != "POST"
                or scope.get("query_string")):
            return await self.app(scope, receive, send)
        authorization = traceparent = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"traceparent":
                traceparent = value
        # Starlette reads headers as latin-1: the same text the route's token check gets.
        if authorization is None or not self.is_admin(authorization.decode("latin-1")):
            return await self.app(scope, receive, send)
        try:
            raw = await _body(receive)
            if raw is None:
                return  # the client left before sending its body: nobody to answer
            spec = _spec(raw)
            if spec is None:
                return await self.app(scope, _replay(raw, receive), send)
            headers = {"traceparent": traceparent.decode("latin-1")} if traceparent else {}
            content, status = await self.submit(spec.get("queue", "default"), spec, headers)
        except DojoError as exc:  # what the route's error handler answers
            content, status = exc.to_dict(), exc.status
        body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


async def _body(receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()  # BodyLimit (outside) counts it and refuses one too large
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _spec(raw: bytes) -> dict | None:
    """The one job spec the short way takes, or None (the route says what is wrong, or takes a list)."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict) or _deeper_than(doc, MAX_JSON_DEPTH):
        return None
    queue = doc.get("queue", "default")
    return doc if isinstance(queue, str) and QUEUE_NAME.match(queue) else None


def _replay(raw: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replayed
