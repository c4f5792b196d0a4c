"""The pull API for workers outside Ray: lease jobs of a queue, then heartbeat, report progress,
complete or fail each lease (the worker token, or the API token)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from actors.exceptions import InvalidInput, NotFound
from actors.ids import queue_of

from ..deps import WORKER, Facade, existing_queue, job_view
from ..http import read_json

router = APIRouter()


@router.post("/v1/queues/{queue}/lease", tags=["workers"], dependencies=WORKER)
async def pull_lease(queue: str, request: Request, queues: Facade):
    existing_queue(queues, queue)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidInput("send {'worker': name, 'types': [...], 'n': 1, 'visibility_timeout': 60}")
    worker_name = body.get("worker", "anonymous")
    n, ttl, types = body.get("n", 1), body.get("visibility_timeout", 60), body.get("types")
    if not isinstance(worker_name, str) or not 0 < len(worker_name) <= 100:
        raise InvalidInput("worker must be a name of 1-100 characters")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100:
        raise InvalidInput(f"n must be a whole number within 1..100, got {n!r}")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 1 <= ttl <= 3600:
        raise InvalidInput(f"visibility_timeout must be 1..3600 seconds, got {ttl!r}")
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
        raise InvalidInput("types must be a list of job type names")
    leases = await queues.pull_lease(queue, worker_name, types, n, float(ttl))
    return {"leases": [{**lease, "lease_id": f"{lease['job_id']}:{lease['token']}"} for lease in leases]}


@router.post("/v1/leases/{lease_id}/{action}", tags=["workers"], dependencies=WORKER)
async def pull_report(lease_id: str, action: str, request: Request, queues: Facade):
    if action not in ("heartbeat", "progress", "complete", "fail"):
        raise NotFound(f"no lease action {action!r}; use heartbeat, progress, complete or fail")
    job_id, _, token = lease_id.rpartition(":")
    if not token.isdigit():
        raise InvalidInput(f"malformed lease id {lease_id!r}; use the lease_id returned by the lease call")
    queue = queue_of(job_id)
    raw = await request.body()
    body = {}
    if raw:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise InvalidInput("the body must be a JSON object")
    result = await queues.pull_report(queue, int(token), job_id, action, body)
    return job_view(result) if "id" in result else result
