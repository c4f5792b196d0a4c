"""Channels (pub/sub on the queue's event log): publish a message, read a channel's backlog, follow it live."""

from __future__ import annotations

from fastapi import APIRouter, Request, WebSocket

from ..auth import channel_stream
from ..deps import ADMIN, Facade, check_channel, existing_queue, principal, principal_ws
from ..http import read_json
from ..streams import last_event_id, sse, ws_stream

router = APIRouter()


@router.post("/v1/channels/{name}/messages", status_code=201, tags=["channels"], dependencies=ADMIN)
async def publish(name: str, request: Request, queues: Facade, queue: str = "default"):
    existing_queue(queues, queue)
    body = await read_json(request)
    return await queues.publish(queue, name, body)


@router.get("/v1/channels/{name}/messages", tags=["channels"])
async def channel_backlog(name: str, request: Request, queues: Facade, after: int = 0, queue: str = "default"):
    principal(request).require_read("channel", channel_stream(queue, name))
    check_channel(name)
    existing_queue(queues, queue)
    if "text/event-stream" in request.headers.get("accept", ""):
        return sse(request.app.state.hub.follow(queue, "channel:" + name, last_event_id(request, after)), "seq")
    return {"events": await queues.events(queue, "channel:" + name, after, 1000)}


@router.websocket("/v1/channels/{name}")
async def channel_ws(websocket: WebSocket, name: str, after: int = 0, queue: str = "default"):
    async def check():
        principal_ws(websocket).require_read("channel", channel_stream(queue, name))
        check_channel(name)
        existing_queue(websocket.app.state.queues, queue)
    await ws_stream(websocket, check, lambda: websocket.app.state.hub.follow(queue, "channel:" + name, after))
