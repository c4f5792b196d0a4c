"""The HTTP and WebSocket API (FastAPI), served by Ray Serve.

Every route but ``/healthz`` needs a token (see ``serve.auth``). Every error
is a JSON body ``{"error": <kind>, "message": <what was wrong and how to fix
it>, ...}`` with a 4xx status, and a refused request changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Annotated

import ray
from fastapi import Depends, FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from actors.exceptions import DojoError, InvalidInput, NotFound, Unauthorized
from actors.bulk import BulkFilter
from actors.facade import Queues
from actors import tracing
from actors.pauses import check_types
from actors.jobs import extensions
from actors.objects import store_from_settings
from actors.queue import QUEUE_NAME, STATUSES, queue_of
from actors.retention import outputs_of
from actors.settings import URL_TTL_RANGE, Settings
from actors.storage import LocalStore, output_urls
from actors.views import PUBLIC_JOB_FIELDS, public  # noqa: F401  (PUBLIC_JOB_FIELDS: for importers)

from .auth import Authenticator, Principal, channel_stream, mint, query_token_allowed
from .coalesce import Coalescer
from .http import BodyLimit, check_queue, check_search, read_json, with_keepalive
from .hub import ALL, Hub, text_of
from .openapi import allowed_methods, install as install_openapi
from .streams import StreamCaps, ws_stream
from .submit import FastSubmit

log = logging.getLogger(__name__)

READ_TOKEN_TTL = 24 * 3600
CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
#: ``limit`` of event reads: at least 1 (SQLite reads -1 as "no limit"); more than 1000 reads 1000.
Limit = Annotated[int, Query(ge=1, description="at most this many events (1..1000)")]
MAX_BODY_BYTES = 16 * 1024 * 1024
FORM_BODY_BYTES = 64 * 1024  # the dashboard's login and logout forms
#: An object is what a job wrote from untrusted input: the browser must not guess it is HTML, and if
#: it opens one as a page, that page runs no script, loads nothing and is an origin of its own.
OBJECT_HEADERS = {"X-Content-Type-Options": "nosniff",
                  "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'; "
                                             "style-src 'unsafe-inline'; frame-ancestors 'none'",
                  "Referrer-Policy": "no-referrer"}
def _unwrap(exc: BaseException) -> BaseException:
    """Ray wraps an actor's exception; the API answers with the original one."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class RayErrors:
    """A dojo error that reached the app wrapped by Ray answers as itself (plain ASGI: no per-request
    task and stream copy, which Starlette's ``BaseHTTPMiddleware`` costs)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watch(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:  # noqa: BLE001
            cause = _unwrap(exc)
            if started or not isinstance(cause, DojoError):
                raise
            await error_response(cause)(scope, receive, send)


def error_response(exc: DojoError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status)


def create_app(settings: Settings, queues: Queues | None = None) -> FastAPI:
    app = FastAPI(title="dojo", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None,
                  description="Durable jobs on Ray: enqueue, watch live progress, fetch results. "
                              "Send 'Authorization: Bearer <token>' (browsers may pass ?token= to WebSocket "
                              "and event-stream routes only).")
    queues = queues or Queues(settings)
    hub = Hub(queues)
    auth = Authenticator(settings.api_token, settings.worker_token, settings.secret)
    app.state.settings = settings
    app.state.queues = queues
    app.state.hub = hub
    app.state.auth = auth
    app.state.dojo = queues  # what job modules' routers use to enqueue
    store = app.state.store = store_from_settings(settings)

    @app.exception_handler(DojoError)
    async def dojo_error(request: Request, exc: DojoError):
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return JSONResponse({"error": "NotFound", "message": f"no route {request.method} {request.url.path}; "
                                 "see /docs for the API"}, status_code=404)
        if exc.status_code == 405:
            allow = allowed_methods(app, request.scope)
            return JSONResponse({"error": "MethodNotAllowed", "message": f"{request.method} is not allowed on "
                                 f"{request.url.path}; use {', '.join(allow)} (see /docs)"}, status_code=405,
                                headers={"Allow": ", ".join(allow)})
        return JSONResponse({"error": "HTTPError", "message": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(InvalidInput(f"invalid request: {problems}"))

    uploads: set[str] = set()  # path prefixes of job packages' routes: they take uploads (e.g. POST /v1/renders)

    def body_limit(path: str) -> int:
        if any(path.startswith(prefix) for prefix in uploads):
            return settings.max_upload_bytes
        if path.startswith(("/dashboard/login", "/dashboard/logout")):
            return FORM_BODY_BYTES
        return MAX_BODY_BYTES

    def is_admin(authorization: str) -> bool:
        try:
            return auth.principal(authorization).role == "admin"
        except DojoError:
            return False

    # Innermost: one job per POST with the API token skips FastAPI's routing (serve/submit.py); the
    # middleware below still counts its body and answers Ray-wrapped errors.
    app.add_middleware(FastSubmit, is_admin=is_admin, submit=lambda *args: enqueue_one(*args))
    # The body is counted as it streams, whatever reads it. Added before the middleware below, so it
    # is inside it: its BodyTooLarge reaches the error handlers as itself, not in an ExceptionGroup.
    app.add_middleware(BodyLimit, limit_for=body_limit)
    app.add_middleware(StreamCaps, total=settings.max_streams, per_token=settings.max_streams_per_token)
    install_openapi(app)

    app.add_middleware(RayErrors)

    def principal(request: Request) -> Principal:
        allowed = query_token_allowed(request.method, request.headers.get("accept"))
        return auth.principal(request.headers.get("authorization"),
                              request.query_params.get("token") if allowed else None)

    # Async, so FastAPI runs them on the loop rather than in its thread pool (an HMAC compare needs no thread).
    async def admin(request: Request) -> Principal:
        who = principal(request)
        who.require_admin()
        return who

    async def worker(request: Request) -> Principal:
        who = principal(request)
        who.require_worker()
        return who

    async def call(coro):
        try:
            return await coro
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            raise QueueUnavailable(f"the queue's actor is restarting ({type(exc).__name__}); retry in a second",
                                   retry_after=1) from None
        except Exception as exc:  # noqa: BLE001
            cause = _unwrap(exc)
            if isinstance(cause, DojoError):
                raise cause from None
            raise

    json_body = read_json
    coalescer = app.state.coalescer = Coalescer(lambda queue, specs: queues.enqueue(specs), refused=_refused_one)

    def read_token(job_id: str) -> str:
        return mint(settings.secret, "job", job_id, READ_TOKEN_TTL)

    async def enqueue_one(queue: str, spec: dict, headers) -> tuple[dict, int]:
        """One job spec through the coalescer: (its answer, 201 or 200 when its unique_key matched)."""
        with tracing.enqueue_span(headers, [spec]):  # the job joins this request's trace (if traced)
            job = await call(coalescer.submit(queue, spec))
        return {**public(job), "read_token": read_token(job["id"])}, 201 if job["created"] else 200

    # -- health ----------------------------------------------------------------
    @app.get("/healthz", tags=["ops"])
    async def healthz():
        return {"status": "ok", "time": time.time()}

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(admin)])
    async def openapi():
        return app.openapi()

    @app.get("/docs", include_in_schema=False)
    async def docs():
        """The Swagger UI lives under the dashboard's session (its assets served by dojo, not a CDN)."""
        return RedirectResponse("/dashboard/docs", status_code=307)

    # -- jobs --------------------------------------------------------------------
    @app.post("/v1/jobs", status_code=201, tags=["jobs"], dependencies=[Depends(admin)],
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "description": "One job spec or a list of them (same queue).",
                  "example": {"type": "countdown", "payload": {"steps": 5}, "priority": 0, "delay": 0,
                              "max_attempts": 3, "timeout": 60, "unique_key": None}}}}}})
    async def enqueue(request: Request):
        """Enqueue one job (201, or 200 when its unique_key matched an unfinished job) or a list of them.

        Concurrent single-job requests share one actor call and one group commit (``serve.coalesce``);
        each is answered only after its job is committed, and a bad spec fails only its own request.
        """
        body = await json_body(request)
        queue = body.get("queue", "default") if isinstance(body, dict) else None
        if isinstance(queue, str) and QUEUE_NAME.match(queue):  # else the plain call says what is wrong
            content, status = await enqueue_one(queue, body, request.headers)
            return JSONResponse(content, status_code=status)
        specs = body if isinstance(body, list) else [body]
        with tracing.enqueue_span(request.headers, specs):  # the jobs join this request's trace (if traced)
            jobs = await call(queues.enqueue(specs))
        out = [{**public(j), "read_token": read_token(j["id"])} for j in jobs]
        status = 201 if any(j["created"] for j in jobs) else 200
        return JSONResponse(out if isinstance(body, list) else out[0], status_code=status)

    @app.get("/v1/jobs", tags=["jobs"], dependencies=[Depends(admin)])
    async def list_jobs(queue: str = "default", type: str | None = None, status: str | None = None,
                        since: float | None = None, until: float | None = None, cursor: str | None = None,
                        q: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50):
        _check_queue(queue)
        statuses = status.split(",") if status else None
        if statuses and set(statuses) - set(STATUSES):
            raise InvalidInput(f"unknown status {sorted(set(statuses) - set(STATUSES))}; use {list(STATUSES)}")
        if cursor:
            queue_of(cursor)
        jobs = await call(queues.list(queue, status=statuses, type=type.split(",") if type else None,
                                      created_after=since, created_before=until, before_id=cursor, limit=limit + 1,
                                      text=check_search(q)))
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return {"jobs": [public(j) for j in jobs], "next_cursor": jobs[-1]["id"] if more else None}

    @app.get("/v1/jobs/{job_id}/deliveries", tags=["jobs"])
    async def job_deliveries(job_id: str, request: Request):
        """The job's callback deliveries (``callback`` in its spec): state, tries and each try's answer."""
        principal(request).require_read("job", job_id)
        queue_of(job_id)
        return {"job_id": job_id, "deliveries": await call(queues.deliveries(job_id))}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    async def get_job(job_id: str, request: Request):
        who = principal(request)
        who.require_read("job", job_id)
        queue_of(job_id)
        job = public(await call(queues.get(job_id)))
        if who.role != "admin":
            job["history"] = [{k: v for k, v in h.items() if k not in FENCING} for h in job.get("history") or ()]
        return job

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], dependencies=[Depends(admin)])
    async def cancel(job_id: str):
        return public(await call(queues.cancel(job_id)))

    @app.post("/v1/jobs/{job_id}/retry", tags=["jobs"], dependencies=[Depends(admin)])
    async def retry(job_id: str):
        return public(await call(queues.retry(job_id)))

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"], dependencies=[Depends(admin)])
    async def delete(job_id: str):
        await call(queues.delete(job_id))
        return {"deleted": job_id}

    @app.get("/v1/jobs/{job_id}/events", tags=["events"])
    async def job_events(job_id: str, request: Request, after: int = 0, limit: Limit = 1000):
        who = principal(request)
        who.require_read("job", job_id)
        queue_of(job_id)
        await call(queues.get(job_id))
        if "text/event-stream" in request.headers.get("accept", ""):
            after = _last_event_id(request, after)
            return _sse(_for(who, hub.follow(queue_of(job_id), "job:" + job_id, after)), "seq")
        events = await call(queues.events(queue_of(job_id), "job:" + job_id, after, min(limit, 1000)))
        return {"events": events if who.role == "admin" else [_redact(e) for e in events]}

    @app.websocket("/v1/jobs/{job_id}/events")
    async def job_events_ws(websocket: WebSocket, job_id: str, after: int = 0):
        seen: list[Principal] = []

        async def check():
            seen.append(principal_ws(websocket))
            seen[0].require_read("job", job_id)
            queue_of(job_id)
            await call(queues.get(job_id))
        await ws_stream(websocket, check, lambda: _for(seen[0], hub.follow(queue_of(job_id), "job:" + job_id, after)))

    @app.get("/v1/queues/{queue}/events", tags=["events"], dependencies=[Depends(admin)])
    async def queue_events(queue: str, request: Request, after: int = 0, limit: Limit = 1000):
        _check_queue(queue)
        if "text/event-stream" in request.headers.get("accept", ""):
            return _sse(hub.follow(queue, ALL, _last_event_id(request, after)), "gseq")
        return {"events": await call(queues.events(queue, None, after, min(limit, 1000)))}

    @app.websocket("/v1/queues/{queue}/events")
    async def queue_events_ws(websocket: WebSocket, queue: str, after: int = 0):
        async def check():
            principal_ws(websocket).require_admin()
            _check_queue(queue)
        await ws_stream(websocket, check, lambda: hub.follow(queue, ALL, after))

    @app.put("/v1/queues/{queue}", tags=["queues"], dependencies=[Depends(admin)])
    async def queue_create(queue: str):
        """Create a queue (idempotent; enqueueing into a new queue creates it too). At most DOJO_MAX_QUEUES."""
        check_queue(queue)
        await call(queues.create(queue))
        return await call(queues.stats(queue))

    @app.get("/v1/queues/{queue}", tags=["queues"], dependencies=[Depends(admin)])
    async def queue_stats(queue: str):
        _check_queue(queue)
        return await call(queues.stats(queue))

    # -- queue control: pause, resume, purge; bulk actions by filter ----------------------
    async def optional_body(request: Request) -> dict:
        body = await json_body(request) if await request.body() else {}
        if not isinstance(body, dict):
            raise InvalidInput("send a JSON object like {'types': ['echo']}, or no body")
        return body

    @app.post("/v1/queues/{queue}/pause", tags=["queues"], dependencies=[Depends(admin)])
    async def queue_pause(queue: str, request: Request):
        """Start no more jobs of the queue (or of ``{"types": [...]}``); it keeps accepting jobs and running
        leases finish. The pause holds across restarts until resumed."""
        _check_queue(queue)
        body = await optional_body(request)
        return await call(queues.pause(queue, check_types(body.get("types")), True))

    @app.post("/v1/queues/{queue}/resume", tags=["queues"], dependencies=[Depends(admin)])
    async def queue_resume(queue: str, request: Request):
        """Resume the queue (no body), or only ``{"types": [...]}``."""
        _check_queue(queue)
        body = await optional_body(request)
        return await call(queues.pause(queue, check_types(body.get("types")), False))

    @app.post("/v1/queues/{queue}/purge", tags=["queues"], dependencies=[Depends(admin)])
    async def queue_purge(queue: str, request: Request):
        """Delete every job waiting for a start (queued, scheduled, retrying), or only of ``types``.

        Send ``{"confirm": "<queue>"}``: a purge cannot be undone. Running jobs are not touched."""
        _check_queue(queue)
        body = await optional_body(request)
        if body.get("confirm") != queue:
            raise InvalidInput(f"a purge deletes the waiting jobs of queue {queue!r} for good; confirm it with "
                               f"{{'confirm': {queue!r}}}", field="confirm")
        unknown = set(body) - {"confirm", "types"}
        if unknown:
            raise InvalidInput(f"unknown purge fields {sorted(unknown)}; allowed: confirm, types",
                               field=sorted(unknown)[0])
        return await call(queues.purge(queue, check_types(body.get("types"))))

    async def bulk(action: str, request: Request) -> dict:
        body = await json_body(request)
        _check_queue(BulkFilter.parse(action, body).queue)  # a bad filter or queue: 4xx, nothing changed
        return await call(queues.bulk(action, body))

    @app.post("/v1/jobs/cancel", tags=["jobs"], dependencies=[Depends(admin)])
    async def bulk_cancel(request: Request):
        """Cancel the jobs matching a filter ``{"queue", "type", "status", "created_after", "created_before",
        "limit", "cursor"}``, oldest first, ``limit`` (<= 1000) per call; go on with ``next_cursor``."""
        return await bulk("cancel", request)

    @app.post("/v1/jobs/retry", tags=["jobs"], dependencies=[Depends(admin)])
    async def bulk_retry(request: Request):
        """Retry the failed, cancelled or expired jobs matching a filter (as ``POST /v1/jobs/cancel``)."""
        return await bulk("retry", request)

    @app.post("/v1/jobs/delete", tags=["jobs"], dependencies=[Depends(admin)])
    async def bulk_delete(request: Request):
        """Delete the finished jobs matching a filter (as ``POST /v1/jobs/cancel``)."""
        return await bulk("delete", request)

    # -- objects (results in storage) ------------------------------------------------------
    @app.get("/v1/jobs/{job_id}/outputs", tags=["jobs"])
    async def outputs(job_id: str, request: Request, expires: float | None = None):
        """Signed, expiring, absolute URLs for the objects a job's result names (e.g. a render's video).

        ``expires`` (seconds) defaults to DOJO_URL_TTL and is kept within 60 s..7 days; links start
        at DOJO_PUBLIC_URL, else at the address this request came to.
        """
        principal(request).require_read("job", job_id)
        if expires is not None and not URL_TTL_RANGE[0] <= expires <= URL_TTL_RANGE[1]:
            raise InvalidInput(f"expires must be within {URL_TTL_RANGE[0]:.0f}..{URL_TTL_RANGE[1]:.0f} seconds, "
                               f"got {expires}; leave it out for DOJO_URL_TTL ({settings.url_ttl:.0f} s)")
        job = await call(queues.get(job_id))
        base = settings.public_url or str(request.base_url)
        # Only objects in the job's own folder: a result naming another job's object gets no URL for it.
        urls = await asyncio.to_thread(output_urls, store, outputs_of(job), base, expires or settings.url_ttl)
        return {"job_id": job_id, "status": job["status"], "urls": urls}

    @app.get("/v1/objects/{key:path}", tags=["jobs"])
    async def get_object(key: str, exp: str = "", sig: str = ""):
        """A stored object, for a signed URL from /v1/jobs/{id}/outputs (the signature is the credential)."""
        from fastapi.responses import FileResponse

        if not isinstance(store, LocalStore):
            raise NotFound("objects live in S3 here; use the presigned URLs from /v1/jobs/{id}/outputs")
        if not exp or not sig or not (exp + sig).isascii() or not store.verify(key, exp, sig):
            raise Unauthorized("this object URL is unsigned, tampered with or expired; get a fresh one from "
                               "GET /v1/jobs/{id}/outputs")
        path = store.path(key)
        if not path.is_file():
            raise NotFound(f"no object with key {key!r}")
        return FileResponse(path, headers=OBJECT_HEADERS)

    # -- channels (pub/sub; the same event log as jobs) ------------------------------
    @app.post("/v1/channels/{name}/messages", status_code=201, tags=["channels"], dependencies=[Depends(admin)])
    async def publish(name: str, request: Request, queue: str = "default"):
        _check_queue(queue)
        body = await json_body(request)
        return await call(queues.publish(queue, name, body))

    @app.get("/v1/channels/{name}/messages", tags=["channels"])
    async def channel_backlog(name: str, request: Request, after: int = 0, queue: str = "default"):
        principal(request).require_read("channel", channel_stream(queue, name))
        _check_channel(name)
        _check_queue(queue)
        if "text/event-stream" in request.headers.get("accept", ""):
            return _sse(hub.follow(queue, "channel:" + name, _last_event_id(request, after)), "seq")
        return {"events": await call(queues.events(queue, "channel:" + name, after, 1000))}

    @app.websocket("/v1/channels/{name}")
    async def channel_ws(websocket: WebSocket, name: str, after: int = 0, queue: str = "default"):
        async def check():
            principal_ws(websocket).require_read("channel", channel_stream(queue, name))
            _check_channel(name)
            _check_queue(queue)
        await ws_stream(websocket, check, lambda: hub.follow(queue, "channel:" + name, after))

    # -- triggers and hooks (actors/triggers.py) ------------------------------------------
    @app.put("/v1/triggers/{name}", tags=["triggers"], dependencies=[Depends(admin)])
    async def trigger_put(name: str, request: Request, queue: str = "default"):
        """Create or replace a trigger: each message on its channel that matches enqueues one job.

        Like enqueueing, it creates the queue when it is new."""
        check_queue(queue)
        return await call(queues.trigger_put(queue, name, await json_body(request)))

    @app.get("/v1/triggers", tags=["triggers"], dependencies=[Depends(admin)])
    async def trigger_list(queue: str = "default"):
        _check_queue(queue)
        return {"triggers": await call(queues.trigger_list(queue))}

    @app.delete("/v1/triggers/{name}", tags=["triggers"], dependencies=[Depends(admin)])
    async def trigger_delete(name: str, queue: str = "default"):
        _check_queue(queue)
        await call(queues.trigger_delete(queue, name))
        return {"deleted": name}

    @app.put("/v1/hooks/{name}", tags=["triggers"], dependencies=[Depends(admin)])
    async def hook_put(name: str, request: Request, queue: str = "default"):
        """Create a hook (the answer holds its secret, this once) or change its channel; ``rotate``: a new secret."""
        check_queue(queue)
        return await call(queues.hook_put(queue, name, await json_body(request)))

    @app.get("/v1/hooks", tags=["triggers"], dependencies=[Depends(admin)])
    async def hook_list(queue: str = "default"):
        _check_queue(queue)
        return {"hooks": await call(queues.hook_list(queue))}

    @app.delete("/v1/hooks/{name}", tags=["triggers"], dependencies=[Depends(admin)])
    async def hook_delete(name: str, queue: str = "default"):
        _check_queue(queue)
        await call(queues.hook_delete(queue, name))
        return {"deleted": name}

    @app.post("/v1/hooks/{name}", status_code=202, tags=["triggers"])
    async def hook_receive(name: str, request: Request, queue: str = "default"):
        """An outside system's signed request (no token: ``X-Dojo-Signature`` with the hook's secret).

        Its JSON body is published to the hook's channel. Whatever is wrong (the queue, the hook, the
        signature) answers 401 alike: a caller without the secret learns nothing."""
        try:
            _check_queue(queue)
        except DojoError:
            raise Unauthorized("no such hook, or a wrong X-Dojo-Signature") from None
        body = await request.body()
        return await call(queues.hook_publish(queue, name, body, request.headers.get("x-dojo-signature", "")))

    # -- schedules ----------------------------------------------------------------------
    @app.post("/v1/schedules", status_code=201, tags=["schedules"], dependencies=[Depends(admin)],
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "example": {"name": "clips-hourly", "cron": "0 * * * *", "timezone": "UTC", "missed": "skip",
                              "job": {"type": "clips.crawl", "payload": {}}}}}}}})
    async def schedule_put(request: Request, queue: str = "default"):
        """Create or replace a cron schedule (one job per tick, exactly once, across restarts).

        Like enqueueing, it creates the queue when it is new."""
        check_queue(queue)
        return await call(queues.schedule_put(queue, await json_body(request)))

    @app.get("/v1/schedules", tags=["schedules"], dependencies=[Depends(admin)])
    async def schedule_list(queue: str = "default"):
        _check_queue(queue)
        return {"schedules": await call(queues.schedule_list(queue))}

    @app.get("/v1/schedules/{name}", tags=["schedules"], dependencies=[Depends(admin)])
    async def schedule_get(name: str, queue: str = "default"):
        _check_queue(queue)
        return await call(queues.schedule_get(queue, name))

    @app.delete("/v1/schedules/{name}", tags=["schedules"], dependencies=[Depends(admin)])
    async def schedule_delete(name: str, queue: str = "default"):
        _check_queue(queue)
        await call(queues.schedule_delete(queue, name))
        return {"deleted": name}

    @app.post("/v1/schedules/{name}/{action}", tags=["schedules"], dependencies=[Depends(admin)])
    async def schedule_action(name: str, action: str, queue: str = "default"):
        """``pause``, ``resume`` or ``run`` (enqueue one job now)."""
        _check_queue(queue)
        if action == "run":
            return public(await call(queues.schedule_run(queue, name)))
        if action not in ("pause", "resume"):
            raise NotFound(f"no schedule action {action!r}; use pause, resume or run")
        return await call(queues.schedule_pause(queue, name, action == "pause"))

    # -- rate limits -----------------------------------------------------------------------
    @app.put("/v1/ratelimits/{name}", tags=["ratelimits"], dependencies=[Depends(admin)])
    async def bucket_put(name: str, request: Request, queue: str = "default"):
        """Define a token bucket shared by every worker: {"rate": per second, "burst": tokens}."""
        _check_queue(queue)
        body = await json_body(request)
        if not isinstance(body, dict) or "rate" not in body:
            raise InvalidInput("send {'rate': tokens per second, 'burst': bucket size}")
        return await call(queues.bucket_put(queue, name, body["rate"], body.get("burst", body["rate"])))

    @app.get("/v1/ratelimits/{name}", tags=["ratelimits"], dependencies=[Depends(admin)])
    async def bucket_get(name: str, queue: str = "default"):
        _check_queue(queue)
        return await call(queues.bucket_get(queue, name))

    # -- tokens ------------------------------------------------------------------------
    @app.post("/v1/tokens", status_code=201, tags=["auth"], dependencies=[Depends(admin)])
    async def create_token(request: Request):
        """A read token for one job, or for one channel of one queue (``queue``, default ``default``)."""
        body = await json_body(request)
        if not isinstance(body, dict) or "scope" not in body or "name" not in body:
            raise InvalidInput("send {'scope': 'job' | 'channel', 'name': <job id or channel>, 'ttl': seconds, "
                               "'queue': <the channel's queue>}")
        name = body["name"]
        if not isinstance(name, str):
            raise InvalidInput(f"name must be a job id or a channel name (a string), got {name!r}")
        if body["scope"] == "job":
            await call(queues.get(body["name"]))
        elif body["scope"] == "channel":
            queue = body.get("queue", "default")
            if not isinstance(queue, str):
                raise InvalidInput(f"queue must be a queue name, got {queue!r}")
            _check_channel(name)
            _check_queue(queue)
            name = channel_stream(queue, name)
        ttl = body.get("ttl", READ_TOKEN_TTL)
        out = {"token": mint(settings.secret, body["scope"], name, ttl), "ttl": ttl}
        return {**out, "queue": name.split("/", 1)[0]} if body["scope"] == "channel" else out

    # -- pull API for workers outside Ray ------------------------------------------------
    @app.post("/v1/queues/{queue}/lease", tags=["workers"], dependencies=[Depends(worker)])
    async def pull_lease(queue: str, request: Request):
        _check_queue(queue)
        body = await json_body(request)
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
        leases = await call(queues.pull_lease(queue, worker_name, types, n, float(ttl)))
        return {"leases": [{**lease, "lease_id": f"{lease['job_id']}:{lease['token']}"} for lease in leases]}

    @app.post("/v1/leases/{lease_id}/{action}", tags=["workers"], dependencies=[Depends(worker)])
    async def pull_report(lease_id: str, action: str, request: Request):
        if action not in ("heartbeat", "progress", "complete", "fail"):
            raise NotFound(f"no lease action {action!r}; use heartbeat, progress, complete or fail")
        job_id, _, token = lease_id.rpartition(":")
        if not token.isdigit():
            raise InvalidInput(f"malformed lease id {lease_id!r}; use the lease_id returned by the lease call")
        queue = queue_of(job_id)
        raw = await request.body()
        body = {}
        if raw:
            body = await json_body(request)
            if not isinstance(body, dict):
                raise InvalidInput("the body must be a JSON object")
        result = await call(queues.pull_report(queue, int(token), job_id, action, body))
        return public(result) if "id" in result else result

    # -- the dashboard (/dashboard) and job logs (/v1/jobs/{id}/logs) -----------------------
    from .dashboard import router as dashboard_router

    app.include_router(dashboard_router)

    # -- job packages' own routes (ROUTES in the package, see actors.jobs.extensions) -------
    for router in extensions(settings.job_modules, "ROUTES"):
        app.include_router(router, dependencies=[Depends(admin)])
        uploads.update(route.path.split("{")[0] for route in router.routes)

    def principal_ws(websocket: WebSocket) -> Principal:
        return auth.principal(websocket.headers.get("authorization"), websocket.query_params.get("token"))

    def _check_queue(queue: str) -> str:
        """A well-formed name of an existing queue (422 / 404); never creates the queue."""
        return queues.exists(check_queue(queue))

    def _check_channel(name: str) -> str:
        """A well-formed channel name (422): what publishing accepts, reads and tokens accept too."""
        if not CHANNEL_NAME.fullmatch(name):
            raise InvalidInput(f"channel names are 1-100 characters of letters, digits, '_', '.', ':' or '-', "
                               f"got {name[:120]!r}")
        return name

    return app


def _refused_one(exc: BaseException) -> int | None:
    """For the coalescer: which spec of a coalesced call the queue refused (-1: it does not say), or None
    when the error is the whole call's (a restarting actor, too many queues): then every caller gets it."""
    cause = _unwrap(exc)
    if not isinstance(cause, InvalidInput):
        return None
    index = cause.context.get("index")
    return index if isinstance(index, int) else -1


class QueueUnavailable(DojoError):
    """The queue's actor is restarting; retry the request shortly (nothing was changed)."""

    status = 503



#: Lease details only the API and worker tokens see: with a fencing token a reader could act on the attempt.
FENCING = ("token", "runner")


def _redact(event: dict) -> dict:
    data = event.get("data")
    if isinstance(data, dict) and any(k in data for k in FENCING):
        return {**event, "data": {k: v for k, v in data.items() if k not in FENCING}}
    return event


async def _for(who: Principal, events):
    """A job's events as ``who`` may see them: fencing tokens only for the API token."""
    async for event in events:
        yield event if who.role == "admin" else _redact(event)


def _last_event_id(request: Request, after: int) -> int:
    last = request.headers.get("last-event-id")
    return int(last) if last and last.isdigit() else after


def _sse(events, key: str) -> StreamingResponse:
    async def body():
        yield ": dojo event stream\n\n"
        async for event in with_keepalive(events):
            if event is None:
                yield ": keep-alive\n\n"
            else:
                yield f"id: {event[key]}\nevent: {event['kind']}\ndata: {text_of(event)}\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
