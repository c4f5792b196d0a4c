"""Event replay and live events: one job's (``/v1/jobs/{id}/events``) and a whole queue's
(``/v1/queues/{queue}/events``), as a JSON page, a server-sent event stream or a WebSocket.

``job_stream`` and ``queue_stream`` are the WebSocket handlers; the dashboard's live routes call
them too, with its own check of who asks.
"""

from __future__ import annotations

from typing import Annotated, Awaitable, Callable

from fastapi import APIRouter, Query, Request, WebSocket

from actors.ids import queue_of

from ..auth import Principal
from ..deps import ADMIN, Facade, existing_queue, principal, principal_ws, redact
from ..hub import ALL
from ..streams import last_event_id, sse, ws_stream

#: ``limit`` of event reads: at least 1 (SQLite reads -1 as "no limit"); more than 1000 reads 1000.
Limit = Annotated[int, Query(ge=1, description="at most this many events (1..1000)")]

router = APIRouter()


async def _for(who: Principal, events):
    """A job's events as ``who`` may see them: fencing tokens only for the API token."""
    async for event in events:
        yield event if who.role == "admin" else redact(event)


async def job_stream(websocket: WebSocket, job_id: str, after: int, who: Callable[[], Awaitable[Principal]]):
    """One job's events after seq ``after``, then live, to whoever ``who()`` says asks (it raises if no one may)."""
    seen: list[Principal] = []
    queues, hub = websocket.app.state.queues, websocket.app.state.hub

    async def check():
        seen.append(await who())
        seen[0].require_read("job", job_id)
        queue_of(job_id)
        await queues.get(job_id)
    await ws_stream(websocket, check, lambda: _for(seen[0], hub.follow(queue_of(job_id), "job:" + job_id, after)))


async def queue_stream(websocket: WebSocket, queue: str, after: int, authorize: Callable[[], Awaitable[None]]):
    """Every event of a queue after gseq ``after``, then live, once ``authorize()`` let the client in."""
    async def check():
        await authorize()
        existing_queue(websocket.app.state.queues, queue)
    await ws_stream(websocket, check, lambda: websocket.app.state.hub.follow(queue, ALL, after))


@router.get("/v1/jobs/{job_id}/events", tags=["events"])
async def job_events(job_id: str, request: Request, queues: Facade, after: int = 0, limit: Limit = 1000):
    who = principal(request)
    who.require_read("job", job_id)
    queue = queue_of(job_id)
    await queues.get(job_id)
    if "text/event-stream" in request.headers.get("accept", ""):
        after = last_event_id(request, after)
        return sse(_for(who, request.app.state.hub.follow(queue, "job:" + job_id, after)), "seq")
    events = await queues.events(queue, "job:" + job_id, after, min(limit, 1000))
    return {"events": events if who.role == "admin" else [redact(e) for e in events]}


@router.websocket("/v1/jobs/{job_id}/events")
async def job_events_ws(websocket: WebSocket, job_id: str, after: int = 0):
    async def who() -> Principal:
        return principal_ws(websocket)
    await job_stream(websocket, job_id, after, who)


@router.get("/v1/queues/{queue}/events", tags=["events"], dependencies=ADMIN)
async def queue_events(queue: str, request: Request, queues: Facade, after: int = 0, limit: Limit = 1000):
    existing_queue(queues, queue)
    if "text/event-stream" in request.headers.get("accept", ""):
        return sse(request.app.state.hub.follow(queue, ALL, last_event_id(request, after)), "gseq")
    return {"events": await queues.events(queue, None, after, min(limit, 1000))}


@router.websocket("/v1/queues/{queue}/events")
async def queue_events_ws(websocket: WebSocket, queue: str, after: int = 0):
    async def authorize() -> None:
        principal_ws(websocket).require_admin()
    await queue_stream(websocket, queue, after, authorize)
