"""Rate limits: token buckets shared by every worker of a queue (``actors/buckets.py``)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from actors.exceptions import InvalidInput

from ..deps import ADMIN, Facade, existing_queue, on_queue
from ..http import read_json

router = APIRouter()


@router.put("/v1/ratelimits/{name}", tags=["ratelimits"], dependencies=ADMIN)
async def bucket_put(name: str, request: Request, queues: Facade, queue: str = "default"):
    """Define a token bucket shared by every worker: {"rate": per second, "burst": tokens}."""
    existing_queue(queues, queue)
    body = await read_json(request)
    if not isinstance(body, dict) or "rate" not in body:
        raise InvalidInput("send {'rate': tokens per second, 'burst': bucket size}")
    return await queues.bucket_put(queue, name, body["rate"], body.get("burst", body["rate"]))


@router.get("/v1/ratelimits/{name}", tags=["ratelimits"], dependencies=ADMIN)
async def bucket_get(name: str, queues: Facade, queue: str = "default"):
    return await on_queue(queues, queue, queues.bucket_get, name)
