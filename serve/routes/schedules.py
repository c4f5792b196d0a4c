"""Cron schedules (``actors/schedules.py``): create or replace, list, read, delete, pause, resume, run now.

``schedule_act`` is the handler of the actions; the dashboard's schedules page calls it too.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from actors.exceptions import NotFound
from actors.facade import Queues

from ..deps import ADMIN, Facade, existing_queue, job_view, on_queue
from ..http import check_queue, read_json

router = APIRouter()


async def schedule_act(queues: Queues, queue: str, name: str, action: str) -> dict:
    """``pause``, ``resume`` or ``run`` (the view of the job it enqueued) a schedule of an existing queue."""
    if action == "run":
        return job_view(await queues.schedule_run(queue, name))
    if action not in ("pause", "resume"):
        raise NotFound(f"no schedule action {action!r}; use pause, resume or run")
    return await queues.schedule_pause(queue, name, action == "pause")


@router.post("/v1/schedules", status_code=201, tags=["schedules"], dependencies=ADMIN,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "example": {"name": "clips-hourly", "cron": "0 * * * *", "timezone": "UTC", "missed": "skip",
                             "job": {"type": "clips.crawl", "payload": {}}}}}}}})
async def schedule_put(request: Request, queues: Facade, queue: str = "default"):
    """Create or replace a cron schedule (one job per tick, exactly once, across restarts).

    Like enqueueing, it creates the queue when it is new."""
    check_queue(queue)
    return await queues.schedule_put(queue, await read_json(request))


@router.get("/v1/schedules", tags=["schedules"], dependencies=ADMIN)
async def schedule_list(queues: Facade, queue: str = "default"):
    return {"schedules": await on_queue(queues, queue, queues.schedule_list)}


@router.get("/v1/schedules/{name}", tags=["schedules"], dependencies=ADMIN)
async def schedule_get(name: str, queues: Facade, queue: str = "default"):
    return await on_queue(queues, queue, queues.schedule_get, name)


@router.delete("/v1/schedules/{name}", tags=["schedules"], dependencies=ADMIN)
async def schedule_delete(name: str, queues: Facade, queue: str = "default"):
    await on_queue(queues, queue, queues.schedule_delete, name)
    return {"deleted": name}


@router.post("/v1/schedules/{name}/{action}", tags=["schedules"], dependencies=ADMIN)
async def schedule_action(name: str, action: str, queues: Facade, queue: str = "default"):
    """``pause``, ``resume`` or ``run`` (enqueue one job now)."""
    existing_queue(queues, queue)
    return await schedule_act(queues, queue, name, action)
