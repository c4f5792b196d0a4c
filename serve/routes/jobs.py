"""Jobs: enqueue, list, read, cancel, retry, delete (one job, or every job of a filter), deliveries.

The handlers' cores (``enqueue_one``, ``statuses``, ``page``, ``fetch``, ``deliveries_of``, ``act``,
``bulk_page``) are what the dashboard's routes call too, with its session in place of a token.
``enqueue_one`` is also the short submit path's (``serve.submit``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from actors import tracing
from actors.bulk import BulkFilter
from actors.exceptions import InvalidInput, NotFound
from actors.facade import Queues
from actors.ids import QUEUE_NAME, STATUSES, queue_of

from ..deps import ADMIN, Facade, existing_queue, job_view, principal, read_token
from ..http import check_search, read_json

router = APIRouter()


# -- what the API and the dashboard share -----------------------------------------------------------
async def enqueue_one(state, queue: str, spec: dict, headers) -> tuple[dict, int]:
    """One job spec through the coalescer: (its answer, 201 or 200 when its unique_key matched)."""
    with tracing.enqueue_span(headers, [spec]):  # the job joins this request's trace (if traced)
        job = await state.coalescer.submit(queue, spec)
    return {**job_view(job), "read_token": read_token(state.settings.secret, job["id"])}, 201 if job["created"] else 200


def statuses(status: str | None, skip_empty: bool = False) -> list[str] | None:
    """The statuses of a comma-separated ``status`` (None: any); 422 for one that is not a status."""
    named = [s for s in status.split(",") if s or not skip_empty] if status else []
    if set(named) - set(STATUSES):
        raise InvalidInput(f"unknown status {sorted(set(named) - set(STATUSES))}; use {list(STATUSES)}")
    return named or None


def page(jobs: list[dict], limit: int) -> dict:
    """One page of a list read with ``limit + 1``: the jobs and the cursor of the next page (None: the last)."""
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return {"jobs": [job_view(j) for j in jobs], "next_cursor": jobs[-1]["id"] if more else None}


async def fetch(queues: Queues, job_id: str, who=None) -> dict:
    """The view of one job (see ``job_view``)."""
    queue_of(job_id)
    return job_view(await queues.get(job_id), who)


async def deliveries_of(queues: Queues, job_id: str) -> dict:
    queue_of(job_id)
    return {"job_id": job_id, "deliveries": await queues.deliveries(job_id)}


async def act(queues: Queues, action: str, job_id: str) -> dict | None:
    """Cancel or retry a job (its view), or delete it (None)."""
    if action == "cancel":
        return job_view(await queues.cancel(job_id))
    if action == "retry":
        return job_view(await queues.retry(job_id))
    if action == "delete":
        await queues.delete(job_id)
        return None
    raise NotFound(f"no job action {action!r}; use cancel, retry or delete")


async def bulk_page(queues: Queues, action: str, filters) -> dict:
    """One page of a bulk action; a bad filter or queue is a 4xx and changes nothing."""
    existing_queue(queues, BulkFilter.parse(action, filters).queue)
    return await queues.bulk(action, filters)


# -- routes ---------------------------------------------------------------------------------------
@router.post("/v1/jobs", status_code=201, tags=["jobs"], dependencies=ADMIN,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "description": "One job spec or a list of them (same queue).",
                 "example": {"type": "countdown", "payload": {"steps": 5}, "priority": 0, "delay": 0,
                             "max_attempts": 3, "timeout": 60, "unique_key": None}}}}}})
async def enqueue(request: Request, queues: Facade):
    """Enqueue one job (201, or 200 when its unique_key matched an unfinished job) or a list of them.

    Concurrent single-job requests share one actor call and one group commit (``serve.coalesce``);
    each is answered only after its job is committed, and a bad spec fails only its own request.
    """
    body = await read_json(request)
    queue = body.get("queue", "default") if isinstance(body, dict) else None
    if isinstance(queue, str) and QUEUE_NAME.match(queue):  # else the plain call says what is wrong
        content, status = await enqueue_one(request.app.state, queue, body, request.headers)
        return JSONResponse(content, status_code=status)
    specs = body if isinstance(body, list) else [body]
    with tracing.enqueue_span(request.headers, specs):  # the jobs join this request's trace (if traced)
        jobs = await queues.enqueue(specs)
    secret = request.app.state.settings.secret
    out = [{**job_view(j), "read_token": read_token(secret, j["id"])} for j in jobs]
    status = 201 if any(j["created"] for j in jobs) else 200
    return JSONResponse(out if isinstance(body, list) else out[0], status_code=status)


@router.get("/v1/jobs", tags=["jobs"], dependencies=ADMIN)
async def list_jobs(queues: Facade, queue: str = "default", type: str | None = None, status: str | None = None,
                    since: float | None = None, until: float | None = None, cursor: str | None = None,
                    q: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50):
    existing_queue(queues, queue)
    wanted = statuses(status)
    if cursor:
        queue_of(cursor)
    jobs = await queues.list(queue, status=wanted, type=type.split(",") if type else None,
                                  created_after=since, created_before=until, before_id=cursor, limit=limit + 1,
                                  text=check_search(q))
    return page(jobs, limit)


@router.get("/v1/jobs/{job_id}/deliveries", tags=["jobs"])
async def job_deliveries(job_id: str, request: Request, queues: Facade):
    """The job's callback deliveries (``callback`` in its spec): state, tries and each try's answer."""
    principal(request).require_read("job", job_id)
    return await deliveries_of(queues, job_id)


@router.get("/v1/jobs/{job_id}", tags=["jobs"])
async def get_job(job_id: str, request: Request, queues: Facade):
    who = principal(request)
    who.require_read("job", job_id)
    return await fetch(queues, job_id, who)


@router.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], dependencies=ADMIN)
async def cancel(job_id: str, queues: Facade):
    return await act(queues, "cancel", job_id)


@router.post("/v1/jobs/{job_id}/retry", tags=["jobs"], dependencies=ADMIN)
async def retry(job_id: str, queues: Facade):
    return await act(queues, "retry", job_id)


@router.delete("/v1/jobs/{job_id}", tags=["jobs"], dependencies=ADMIN)
async def delete(job_id: str, queues: Facade):
    await act(queues, "delete", job_id)
    return {"deleted": job_id}


@router.post("/v1/jobs/cancel", tags=["jobs"], dependencies=ADMIN)
async def bulk_cancel(request: Request, queues: Facade):
    """Cancel the jobs matching a filter ``{"queue", "type", "status", "created_after", "created_before",
    "limit", "cursor"}``, oldest first, ``limit`` (<= 1000) per call; go on with ``next_cursor``."""
    return await bulk_page(queues, "cancel", await read_json(request))


@router.post("/v1/jobs/retry", tags=["jobs"], dependencies=ADMIN)
async def bulk_retry(request: Request, queues: Facade):
    """Retry the failed, cancelled or expired jobs matching a filter (as ``POST /v1/jobs/cancel``)."""
    return await bulk_page(queues, "retry", await read_json(request))


@router.post("/v1/jobs/delete", tags=["jobs"], dependencies=ADMIN)
async def bulk_delete(request: Request, queues: Facade):
    """Delete the finished jobs matching a filter (as ``POST /v1/jobs/cancel``)."""
    return await bulk_page(queues, "delete", await read_json(request))
