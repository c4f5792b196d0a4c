"""The dashboard's HTTP and WebSocket routes.

Pages (``/dashboard``, ``/dashboard/jobs``, ``/dashboard/jobs/<id>``,
``/dashboard/cluster``, ``/dashboard/schedules``) are one HTML shell whose
ES modules render the view from the URL, so a filter is a link. Without a
valid session every page answers the login form and nothing else; the
scripts, styles and data routes answer 401. Data comes from
``/dashboard/api/...`` (the queue facade, ``app.state.queues``) and live
updates from ``/dashboard/ws/...`` (the replica's event hub), never from
polling. State-changing calls need the CSRF token (see ``session``).

A data or live route that does what an API route does calls that route's
handler (``serve.routes``): only the session check and the overviews across
queues (``/dashboard/api/queues``, ``cluster``, ``schedules``) are its own.
"""

from __future__ import annotations

import asyncio
import html
import logging
import mimetypes
import time
from pathlib import Path

import ray
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from actors.exceptions import DojoError, Forbidden, InvalidInput, NotFound
from actors.ids import QUEUE_NAME, queue_of
from actors.facade import DEFAULT_QUEUE, live_queues, queue_files

from ..auth import Principal
from ..deps import existing_queue, job_view
from ..http import check_search, read_json
from ..routes import events as event_routes, jobs as job_routes, objects as object_routes
from ..routes import queues as queue_routes, schedules as schedule_routes
from . import session as sessions
from .logins import LoginBook, TooManyLogins

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC = HERE / "static"
PAGES = HERE / "pages"
BULK_MAX = 500
PAGE_NAMES = ("", "jobs", "cluster", "schedules")

router = APIRouter(include_in_schema=False)


# -- helpers -----------------------------------------------------------------------------------
def _secret(request) -> str:
    """The key of the dashboard's cookies and CSRF tokens (a new API token ends every session)."""
    settings = request.app.state.settings
    return sessions.session_key(settings.secret, settings.api_token)


def _logins(request) -> LoginBook:
    book = getattr(request.app.state, "logins", None)
    if book is None:
        book = request.app.state.logins = LoginBook(Path(request.app.state.settings.state_dir) / "dashboard.sqlite3")
    return book


def _session(request: Request | WebSocket) -> sessions.Session:
    return sessions.require(request.app.state.auth, _secret(request), request.headers.get("authorization"),
                            request.cookies.get(sessions.COOKIE), ended=_logins(request).ended)


def _write_session(request: Request) -> sessions.Session:
    """The session of a state-changing request, CSRF-checked."""
    who = _session(request)
    sessions.check_csrf(_secret(request), who, request.method, request.headers.get(sessions.CSRF_HEADER))
    return who


def _check_queue(request: Request | WebSocket, queue: str) -> str:
    return existing_queue(request.app.state.queues, queue)


def known_queues(settings) -> list[str]:
    """Queues with a database in the state dir or a live actor; always includes ``default``."""
    names = {DEFAULT_QUEUE} | queue_files(settings)
    try:
        names |= live_queues()
    except Exception:  # noqa: BLE001  (Ray not reachable: the state dir still answers)
        pass
    return sorted(n for n in names if QUEUE_NAME.match(n))


# -- login and pages ---------------------------------------------------------------------------
def _login_page(error: str = "", next_path: str = "/dashboard", status: int = 401) -> HTMLResponse:
    text = (PAGES / "login.html").read_text()
    text = text.replace("{{error}}", f'<p class="error" role="alert">{html.escape(error)}</p>' if error else "")
    text = text.replace("{{next}}", html.escape(next_path, quote=True))
    return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store",
                                                           "Content-Security-Policy": _CSP})


# A render's poster and video may come from S3 (presigned https links), hence http(s) for images and media.
_CSP = ("default-src 'self'; img-src 'self' data: blob: https: http:; media-src 'self' blob: https: http:; "
        "connect-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'")


def _safe_next(path: str | None) -> str:
    if not path or not path.startswith("/dashboard") or "//" in path or "\\" in path:
        return "/dashboard"
    return path


@router.post("/dashboard/login")
async def login(request: Request):
    settings = request.app.state.settings
    if not sessions.same_origin(request.headers.get("origin"), request.headers.get("host")):
        raise Forbidden("the login form must be sent from this dashboard's own page")
    form = await request.form()
    token = str(form.get("token") or "").strip()
    next_path = _safe_next(str(form.get("next") or ""))
    book, client = _logins(request), request.client.host if request.client else "?"
    try:
        book.check(client)  # before the token is compared: past the limit, guesses learn nothing
    except TooManyLogins as exc:
        page = _login_page(exc.message, next_path, status=429)
        page.headers["Retry-After"] = str(exc.context["retry_after"])
        return page
    try:
        request.app.state.auth.principal(f"Bearer {token}" if token else None).require_admin()
    except DojoError:
        book.failed(client)
        return _login_page("That is not this server's API token (`dojo token` prints it).", next_path)
    value, _ = sessions.new_session(_secret(request))
    response = RedirectResponse(next_path, status_code=303)
    secure = request.url.scheme == "https" or settings.public_url.startswith("https://")
    response.set_cookie(sessions.COOKIE, value, max_age=sessions.SESSION_TTL, path="/dashboard", httponly=True,
                        samesite="strict", secure=secure)
    return response


@router.post("/dashboard/logout")
async def logout(request: Request):
    who = _session(request)
    form = await request.form()
    sent = request.headers.get(sessions.CSRF_HEADER) or str(form.get("csrf") or "")
    sessions.check_csrf(_secret(request), who, "POST", sent)
    if who.via == "cookie":  # the cookie stops working on the server too, not only in this browser
        _logins(request).end(who.nonce, who.expires)
    response = RedirectResponse("/dashboard", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/dashboard", httponly=True, samesite="strict")
    return response


@router.get("/dashboard/static/{name}")
async def static(name: str, request: Request):
    _session(request)
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise NotFound(f"no dashboard asset {name!r}")
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if name.endswith(".js"):
        media = "text/javascript"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})


# -- the API's docs (Swagger UI from a package, under the dashboard's session: no token in any URL) ----
SWAGGER_ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js")


@router.get("/dashboard/docs")
async def docs_page(request: Request):
    try:
        _session(request)
    except DojoError:
        return _login_page(next_path="/dashboard/docs", status=401)
    return HTMLResponse((PAGES / "docs.html").read_text(),
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP,
                                 "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"})


@router.get("/dashboard/docs/{name}")
async def docs_asset(name: str, request: Request):
    _session(request)
    if name not in SWAGGER_ASSETS:
        raise NotFound(f"no docs asset {name!r}")
    import fastapi_offline

    media = "text/css" if name.endswith(".css") else "text/javascript"
    return FileResponse(Path(fastapi_offline.__file__).parent / "static" / name, media_type=media,
                        headers={"Cache-Control": "max-age=86400"})


@router.get("/dashboard/openapi.json")
async def docs_spec(request: Request):
    _session(request)
    return JSONResponse(request.app.openapi())


async def _page(request: Request):
    try:
        who = _session(request)
    except DojoError:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        status = 200 if request.url.path.rstrip("/") == "/dashboard" else 401
        return _login_page(next_path=_safe_next(target), status=status)
    csrf = sessions.csrf_token(_secret(request), who) if who.via == "cookie" else ""
    text = (PAGES / "shell.html").read_text().replace("{{csrf}}", html.escape(csrf, quote=True))
    return HTMLResponse(text, headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP,
                                       "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"})


router.add_api_route("/dashboard", _page, methods=["GET"])
router.add_api_route("/dashboard/", _page, methods=["GET"])
router.add_api_route("/dashboard/jobs", _page, methods=["GET"])
router.add_api_route("/dashboard/jobs/{job_id}", _page, methods=["GET"])
router.add_api_route("/dashboard/cluster", _page, methods=["GET"])
router.add_api_route("/dashboard/schedules", _page, methods=["GET"])


# -- data --------------------------------------------------------------------------------------
@router.get("/dashboard/api/queues")
async def api_queues(request: Request, window: float = 3600, bucket: float = 60, only: str | None = None):
    """Every known queue (or just ``only``) with its depth, running jobs and the last ``window`` seconds."""
    _session(request)
    if not 60 <= window <= 7 * 86400 or not 1 <= bucket <= window:
        raise InvalidInput("window must be 60..604800 seconds and bucket 1..window seconds")
    queues = request.app.state.queues
    names = [_check_queue(request, only)] if only else await asyncio.to_thread(known_queues, request.app.state.settings)
    answers = await asyncio.gather(*(queues.insights(n, window, bucket) for n in names),
                                   return_exceptions=True)
    out = []
    for name, answer in zip(names, answers):
        if isinstance(answer, BaseException):
            out.append({"queue": name, "error": str(getattr(answer, "message", answer))})
        else:
            out.append(answer)
    return {"queues": out, "now": time.time()}


@router.get("/dashboard/api/jobs")
async def api_jobs(request: Request, queue: str = "default", type: str | None = None, status: str | None = None,
                   since: float | None = None, until: float | None = None, q: str | None = None,
                   cursor: str | None = None, limit: int = 50, order: str = "newest", parent: str | None = None):
    """One page of jobs; ``next_cursor`` continues it. ``order`` is ``newest`` or ``oldest``."""
    _session(request)
    _check_queue(request, queue)
    statuses = job_routes.statuses(status, skip_empty=True)
    if order not in ("newest", "oldest"):
        raise InvalidInput(f"order must be 'newest' or 'oldest', got {order!r}")
    if not 1 <= limit <= 500:
        raise InvalidInput(f"limit must be within 1..500, got {limit}")
    for job_id in (cursor, parent):
        if job_id:
            queue_of(job_id)
    filters = dict(status=statuses, type=[t for t in type.split(",") if t] if type else None,
                   created_after=since, created_before=until, limit=limit + 1, text=check_search(q),
                   parent_id=parent)
    if order == "newest":
        filters["before_id"] = cursor
        found = await request.app.state.queues.browse(queue, **filters)
    else:
        found = await request.app.state.queues.browse(queue, oldest_first=True, after_id=cursor, **filters)
    return job_routes.page(found, limit)


@router.get("/dashboard/api/jobs/{job_id}")
async def api_job(job_id: str, request: Request):
    _session(request)
    return await job_routes.fetch(request.app.state.queues, job_id)


@router.get("/dashboard/api/jobs/{job_id}/outputs")
async def api_outputs(job_id: str, request: Request):
    """Signed, expiring URLs for the objects the job's result names (a render's ``video``, ...)."""
    _session(request)
    # Same-origin paths for the page (the browser may know the API by another name than DOJO_PUBLIC_URL).
    _, urls = await object_routes.output_links(request.app.state, job_id, "", 3600)
    return {"job_id": job_id, "urls": urls}


@router.get("/dashboard/api/jobs/{job_id}/deliveries")
async def api_deliveries(job_id: str, request: Request):
    """The job's callback deliveries and each try's answer (actors/callbacks.py)."""
    _session(request)
    return await job_routes.deliveries_of(request.app.state.queues, job_id)



@router.post("/dashboard/api/jobs")
async def api_enqueue(request: Request):
    """Enqueue one spec (the page's duplicate-with-edits)."""
    _write_session(request)
    spec = await read_json(request)
    if not isinstance(spec, dict):
        raise InvalidInput("send one job spec object like {'type': 'countdown', 'payload': {...}}")
    [job] = await request.app.state.queues.enqueue([spec])
    return JSONResponse(job_view(job), status_code=201)


async def _act(queues, action: str, job_id: str):
    job = await job_routes.act(queues, action, job_id)
    return {"id": job_id, "deleted": True} if job is None else job


@router.post("/dashboard/api/jobs/{job_id}/{action}")
async def api_action(job_id: str, action: str, request: Request):
    _write_session(request)
    queue_of(job_id)
    return await _act(request.app.state.queues, action, job_id)


#: Pages (of 1,000 jobs) one "all matching" click of the jobs page changes; the answer's cursor goes on.
BULK_FILTER_PAGES = 10


@router.post("/dashboard/api/bulk")
async def api_bulk(request: Request):
    """``{"action": "cancel" | "retry" | "delete", "ids": [...]}``; answers each id's outcome.

    Or ``{"action", "filter": {queue, type, status, created_after, created_before, group, cursor}}``: every job
    of the filter, through ``POST /v1/jobs/{action}`` (up to BULK_FILTER_PAGES pages; ``next_cursor`` goes on).
    """
    _write_session(request)
    body = await read_json(request)
    if isinstance(body, dict) and isinstance(body.get("filter"), dict):
        filters = {**body["filter"], "limit": 1000}
        total = {"action": body.get("action"), "changed": 0, "skipped": 0, "next_cursor": None}
        for _ in range(BULK_FILTER_PAGES):
            page = await job_routes.bulk_page(request.app.state.queues, body.get("action"), filters)
            total["changed"] += page["changed"]
            total["skipped"] += page["skipped"]
            total["next_cursor"] = filters["cursor"] = page["next_cursor"]
            if not page["next_cursor"]:
                break
        return total
    if not isinstance(body, dict) or body.get("action") not in ("cancel", "retry", "delete") \
            or not isinstance(body.get("ids"), list) or not body["ids"]:
        raise InvalidInput("send {'action': 'cancel' | 'retry' | 'delete', 'ids': [job ids]}")
    ids = body["ids"]
    if len(ids) > BULK_MAX:
        raise InvalidInput(f"at most {BULK_MAX} jobs per bulk action, got {len(ids)}")
    for job_id in ids:
        queue_of(job_id)
    queues = request.app.state.queues
    answers = await asyncio.gather(*(_act(queues, body["action"], i) for i in ids), return_exceptions=True)
    results = []
    for job_id, answer in zip(ids, answers):
        if isinstance(answer, DojoError):
            results.append({"id": job_id, "ok": False, "error": answer.message})
        elif isinstance(answer, BaseException):
            raise answer
        else:
            results.append({"id": job_id, "ok": True, "status": answer.get("status", "deleted")})
    return {"action": body["action"], "results": results,
            "ok": sum(r["ok"] for r in results), "refused": sum(not r["ok"] for r in results)}


@router.post("/dashboard/api/queues/{queue}/{action}")
async def api_queue_action(queue: str, action: str, request: Request):
    """``pause``, ``resume`` or ``purge`` a queue from its card (a purge sends ``{"confirm": <queue>}``), through
    the handler of ``POST /v1/queues/{queue}/{action}``."""
    _write_session(request)
    return await queue_routes.control(request.app.state.queues, queue, action, request)


@router.get("/dashboard/api/cluster")
async def api_cluster(request: Request):
    """Ray's nodes (alive, resources) and the running jobs on each, from every queue's leases."""
    _session(request)
    nodes = await asyncio.to_thread(ray.nodes)
    names = await asyncio.to_thread(known_queues, request.app.state.settings)
    answers = await asyncio.gather(*(request.app.state.queues.insights(n, 60, 60) for n in names),
                                   return_exceptions=True)
    running: dict[str, list] = {}
    for name, answer in zip(names, answers):
        if isinstance(answer, dict):
            for job in answer.get("running_jobs", ()):
                running.setdefault(job.get("node") or "unknown", []).append({**job, "queue": name})
    out = []
    for node in nodes:
        resources = node.get("Resources") or {}
        node_id = node.get("NodeID")
        jobs = running.pop(node_id, [])
        out.append({
            "id": node_id, "alive": bool(node.get("Alive")), "address": node.get("NodeManagerAddress"),
            "hostname": node.get("NodeManagerHostname"), "head": "node:__internal_head__" in resources,
            "type": (node.get("Labels") or {}).get("ray.io/node-type") or _node_type(resources),
            "cpus": resources.get("CPU", 0), "gpus": resources.get("GPU", 0),
            "memory": resources.get("memory", 0),
            "custom": {k: v for k, v in resources.items()
                       if k not in ("CPU", "GPU", "memory", "object_store_memory") and not k.startswith("node:")},
            "running": jobs, "state": "busy" if jobs else ("idle" if node.get("Alive") else "dead"),
        })
    return {"nodes": out, "elsewhere": running, "now": time.time()}


def _node_type(resources: dict) -> str:
    if "node:__internal_head__" in resources:
        return "head"
    return "gpu_worker" if resources.get("GPU") else "cpu_worker"


@router.get("/dashboard/api/schedules")
async def api_schedules(request: Request):
    """Every queue's cron schedules (empty when this dojo has no schedules)."""
    _session(request)
    queues = request.app.state.queues
    if not hasattr(queues, "schedule_list"):
        return {"schedules": [], "supported": False}
    names = await asyncio.to_thread(known_queues, request.app.state.settings)
    answers = await asyncio.gather(*(queues.schedule_list(n) for n in names), return_exceptions=True)
    out = []
    for name, answer in zip(names, answers):
        if isinstance(answer, list):
            out += [{**s, "queue": name} for s in answer]
    return {"schedules": out, "supported": True, "now": time.time()}


@router.post("/dashboard/api/schedules/{queue}/{name}/{action}")
async def api_schedule_action(queue: str, name: str, action: str, request: Request):
    _write_session(request)
    _check_queue(request, queue)
    queues = request.app.state.queues
    if not hasattr(queues, "schedule_list"):
        raise NotFound("this dojo has no schedules")
    return await schedule_routes.schedule_act(queues, queue, name, action)


# -- live --------------------------------------------------------------------------------------
async def _ws_check(websocket: WebSocket) -> None:
    # SameSite=Strict keeps the cookie off cross-site handshakes; the Origin check is a second lock.
    if not sessions.same_origin(websocket.headers.get("origin"), websocket.headers.get("host")):
        raise Forbidden("this WebSocket only accepts the dashboard's own pages")
    _session(websocket)


@router.websocket("/dashboard/ws/queues/{queue}")
async def ws_queue(websocket: WebSocket, queue: str, after: int = 0):
    """Every event of a queue after gseq ``after``, then live (the jobs table and overview)."""
    await event_routes.queue_stream(websocket, queue, after, lambda: _ws_check(websocket))


@router.websocket("/dashboard/ws/jobs/{job_id}")
async def ws_job(websocket: WebSocket, job_id: str, after: int = 0):
    """One job's events after seq ``after``, then live (the job page)."""
    async def who() -> Principal:
        await _ws_check(websocket)
        return Principal("admin")  # a session is the API token's: it sees what that token sees
    await event_routes.job_stream(websocket, job_id, after, who)


__all__ = ["router", "known_queues"]
