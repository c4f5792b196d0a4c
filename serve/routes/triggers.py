"""Triggers and hooks (``actors/triggers.py``): a trigger enqueues a job per matching message of a
channel; a hook publishes an outside system's signed request to a channel."""

from __future__ import annotations

from fastapi import APIRouter, Request

from actors.exceptions import DojoError, Unauthorized

from ..deps import ADMIN, Facade, existing_queue, on_queue
from ..http import check_queue, read_json

router = APIRouter()


@router.put("/v1/triggers/{name}", tags=["triggers"], dependencies=ADMIN)
async def trigger_put(name: str, request: Request, queues: Facade, queue: str = "default"):
    """Create or replace a trigger: each message on its channel that matches enqueues one job.

    Like enqueueing, it creates the queue when it is new."""
    check_queue(queue)
    return await queues.trigger_put(queue, name, await read_json(request))


@router.get("/v1/triggers", tags=["triggers"], dependencies=ADMIN)
async def trigger_list(queues: Facade, queue: str = "default"):
    return {"triggers": await on_queue(queues, queue, queues.trigger_list)}


@router.delete("/v1/triggers/{name}", tags=["triggers"], dependencies=ADMIN)
async def trigger_delete(name: str, queues: Facade, queue: str = "default"):
    await on_queue(queues, queue, queues.trigger_delete, name)
    return {"deleted": name}


@router.put("/v1/hooks/{name}", tags=["triggers"], dependencies=ADMIN)
async def hook_put(name: str, request: Request, queues: Facade, queue: str = "default"):
    """Create a hook (the answer holds its secret, this once) or change its channel; ``rotate``: a new secret."""
    check_queue(queue)
    return await queues.hook_put(queue, name, await read_json(request))


@router.get("/v1/hooks", tags=["triggers"], dependencies=ADMIN)
async def hook_list(queues: Facade, queue: str = "default"):
    return {"hooks": await on_queue(queues, queue, queues.hook_list)}


@router.delete("/v1/hooks/{name}", tags=["triggers"], dependencies=ADMIN)
async def hook_delete(name: str, queues: Facade, queue: str = "default"):
    await on_queue(queues, queue, queues.hook_delete, name)
    return {"deleted": name}


@router.post("/v1/hooks/{name}", status_code=202, tags=["triggers"])
async def hook_receive(name: str, request: Request, queues: Facade, queue: str = "default"):
    """An outside system's signed request (no token: ``X-Dojo-Signature`` with the hook's secret).

    Its JSON body is published to the hook's channel. Whatever is wrong (the queue, the hook, the
    signature) answers 401 alike: a caller without the secret learns nothing."""
    try:
        existing_queue(queues, queue)
    except DojoError:
        raise Unauthorized("no such hook, or a wrong X-Dojo-Signature") from None
    body = await request.body()
    return await queues.hook_publish(queue, name, body, request.headers.get("x-dojo-signature", ""))
