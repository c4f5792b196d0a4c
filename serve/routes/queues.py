"""Queues: create one, read its stats, and control it (pause, resume, purge its waiting jobs).

``control`` is the handler of the three controls; the dashboard's queue card calls it too.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from actors.exceptions import InvalidInput, NotFound
from actors.facade import Queues
from actors.pauses import check_types

from ..deps import ADMIN, Facade, existing_queue, on_queue
from ..http import check_queue, read_json

router = APIRouter()


async def optional_body(request: Request) -> dict:
    body = await read_json(request) if await request.body() else {}
    if not isinstance(body, dict):
        raise InvalidInput("send a JSON object like {'types': ['echo']}, or no body")
    return body


async def control(queues: Queues, queue: str, action: str, request: Request) -> dict:
    """``pause``, ``resume`` or ``purge`` the queue (its body: ``{"types": [...]}``; a purge ``{"confirm": queue}``)."""
    if action not in ("pause", "resume", "purge"):
        raise NotFound(f"no queue action {action!r}; use pause, resume or purge")
    existing_queue(queues, queue)
    body = await optional_body(request)
    if action != "purge":
        return await queues.pause(queue, check_types(body.get("types")), action == "pause")
    if body.get("confirm") != queue:
        raise InvalidInput(f"a purge deletes the waiting jobs of queue {queue!r} for good; confirm it with "
                           f"{{'confirm': {queue!r}}}", field="confirm")
    unknown = set(body) - {"confirm", "types"}
    if unknown:
        raise InvalidInput(f"unknown purge fields {sorted(unknown)}; allowed: confirm, types", field=sorted(unknown)[0])
    return await queues.purge(queue, check_types(body.get("types")))


@router.put("/v1/queues/{queue}", tags=["queues"], dependencies=ADMIN)
async def queue_create(queue: str, queues: Facade):
    """Create a queue (idempotent; enqueueing into a new queue creates it too). At most DOJO_MAX_QUEUES."""
    check_queue(queue)
    await queues.create(queue)
    return await queues.stats(queue)


@router.get("/v1/queues/{queue}", tags=["queues"], dependencies=ADMIN)
async def queue_stats(queue: str, queues: Facade):
    return await on_queue(queues, queue, queues.stats)


@router.post("/v1/queues/{queue}/pause", tags=["queues"], dependencies=ADMIN)
async def queue_pause(queue: str, request: Request, queues: Facade):
    """Start no more jobs of the queue (or of ``{"types": [...]}``); it keeps accepting jobs and running
    leases finish. The pause holds across restarts until resumed."""
    return await control(queues, queue, "pause", request)


@router.post("/v1/queues/{queue}/resume", tags=["queues"], dependencies=ADMIN)
async def queue_resume(queue: str, request: Request, queues: Facade):
    """Resume the queue (no body), or only ``{"types": [...]}``."""
    return await control(queues, queue, "resume", request)


@router.post("/v1/queues/{queue}/purge", tags=["queues"], dependencies=ADMIN)
async def queue_purge(queue: str, request: Request, queues: Facade):
    """Delete every job waiting for a start (queued, scheduled, retrying), or only of ``types``.

    Send ``{"confirm": "<queue>"}``: a purge cannot be undone. Running jobs are not touched."""
    return await control(queues, queue, "purge", request)
