"""Small HTTP helpers shared by the API and the dashboard routes."""

from __future__ import annotations

import json
from typing import Any

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
