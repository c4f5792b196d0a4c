"""Scoped read tokens: one job's, or one channel of one queue's (see ``serve.auth``)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from actors.exceptions import InvalidInput

from ..auth import channel_stream, mint
from ..deps import ADMIN, READ_TOKEN_TTL, Facade, check_channel, existing_queue
from ..http import read_json

router = APIRouter()


@router.post("/v1/tokens", status_code=201, tags=["auth"], dependencies=ADMIN)
async def create_token(request: Request, queues: Facade):
    """A read token for one job, or for one channel of one queue (``queue``, default ``default``)."""
    body = await read_json(request)
    if not isinstance(body, dict) or "scope" not in body or "name" not in body:
        raise InvalidInput("send {'scope': 'job' | 'channel', 'name': <job id or channel>, 'ttl': seconds, "
                           "'queue': <the channel's queue>}")
    name = body["name"]
    if not isinstance(name, str):
        raise InvalidInput(f"name must be a job id or a channel name (a string), got {name!r}")
    if body["scope"] == "job":
        await queues.get(body["name"])
    elif body["scope"] == "channel":
        queue = body.get("queue", "default")
        if not isinstance(queue, str):
            raise InvalidInput(f"queue must be a queue name, got {queue!r}")
        check_channel(name)
        existing_queue(queues, queue)
        name = channel_stream(queue, name)
    ttl = body.get("ttl", READ_TOKEN_TTL)
    out = {"token": mint(request.app.state.settings.secret, body["scope"], name, ttl), "ttl": ttl}
    return {**out, "queue": name.split("/", 1)[0]} if body["scope"] == "channel" else out
