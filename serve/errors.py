"""How an error becomes an answer: one JSON body ``{"error", "message", ...}`` with a 4xx/5xx status.

The queue's errors reach it already unwrapped: the facade (``actors.facade.Queues``) is the one place
a Ray error becomes dojo's (a restarting actor is ``QueueUnavailable``). This owns the app's exception
handlers (a dojo error, an unknown route or method, a request FastAPI could not parse) and
``RayErrors``, the net for a Ray-wrapped dojo error from any other actor (the object store's).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from actors.exceptions import DojoError, InvalidInput

from .openapi import allowed_methods


def unwrap(exc: BaseException) -> BaseException:
    """Ray wraps an actor's exception; the API answers with the original one."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def refused_one(exc: BaseException) -> int | None:
    """For the coalescer: which spec of a coalesced call the queue refused (-1: it does not say), or None
    when the error is the whole call's (a restarting actor, too many queues): then every caller gets it.
    The facade has unwrapped it already."""
    if not isinstance(exc, InvalidInput):
        return None
    index = exc.context.get("index")
    return index if isinstance(index, int) else -1


def error_response(exc: DojoError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status)


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
            cause = unwrap(exc)
            if started or not isinstance(cause, DojoError):
                raise
            await error_response(cause)(scope, receive, send)


def install(app: FastAPI) -> None:
    """Answer dojo errors, unknown routes and methods, and unparseable requests with dojo's error body."""

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
