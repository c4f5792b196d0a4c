"""The HTTP and WebSocket API (FastAPI), served by Ray Serve: ``create_app`` puts it together.

Every route but ``/healthz`` needs a token (see ``serve.auth``). Every error
is a JSON body ``{"error": <kind>, "message": <what was wrong and how to fix
it>, ...}`` with a 4xx status, and a refused request changes nothing.

The routes live one router per resource in ``serve.routes``, the dashboard in
``serve.dashboard``; job packages bring their own (``ROUTES``, see
``actors.jobs.extensions``). This module builds the state they share and the
middleware around them.
"""

from __future__ import annotations

import functools

from fastapi import Depends, FastAPI

from actors.exceptions import DojoError
from actors.facade import Queues
from actors.jobs import extensions
from actors.objects import store_from_settings
from actors.settings import Settings

from . import errors
from .auth import Authenticator
from .coalesce import Coalescer
from .dashboard import router as dashboard
from .deps import admin
from .http import BodyLimit
from .hub import Hub
from .openapi import install as install_openapi
from .routes import ROUTERS, jobs
from .streams import StreamCaps
from .submit import FastSubmit

MAX_BODY_BYTES = 16 * 1024 * 1024
FORM_BODY_BYTES = 64 * 1024  # the dashboard's login and logout forms


def create_app(settings: Settings, queues: Queues | None = None) -> FastAPI:
    app = FastAPI(title="dojo", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None,
                  description="Durable jobs on Ray: enqueue, watch live progress, fetch results. "
                              "Send 'Authorization: Bearer <token>' (browsers may pass ?token= to WebSocket "
                              "and event-stream routes only).")
    queues = queues or Queues(settings)
    auth = app.state.auth = Authenticator(settings.api_token, settings.worker_token, settings.secret)
    app.state.settings = settings
    app.state.queues = queues
    app.state.hub = Hub(queues)
    app.state.dojo = queues  # what job modules' routers use to enqueue
    app.state.store = store_from_settings(settings)
    app.state.coalescer = Coalescer(lambda queue, specs: queues.enqueue(specs), refused=errors.refused_one)
    errors.install(app)

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
    app.add_middleware(FastSubmit, is_admin=is_admin, submit=functools.partial(jobs.enqueue_one, app.state))
    # The body is counted as it streams, whatever reads it. Added before the middleware below, so it
    # is inside it: its BodyTooLarge reaches the error handlers as itself, not in an ExceptionGroup.
    app.add_middleware(BodyLimit, limit_for=body_limit)
    app.add_middleware(StreamCaps, total=settings.max_streams, per_token=settings.max_streams_per_token)
    install_openapi(app)
    app.add_middleware(errors.RayErrors)

    for router in [*ROUTERS, dashboard]:
        app.include_router(router)
    # Job packages' own routes (ROUTES in the package, see actors.jobs.extensions): the API token's.
    for router in extensions(settings.job_modules, "ROUTES"):
        app.include_router(router, dependencies=[Depends(admin)])
        uploads.update(route.path.split("{")[0] for route in router.routes)
    return app
