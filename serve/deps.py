"""What the routers of the API and the dashboard share: who asks, what they ask of, and what they see.

- Who: ``principal`` (the request's token; ``?token=`` only where a browser cannot send a header),
  ``admin`` and ``worker`` (route dependencies, ``ADMIN`` / ``WORKER``), ``principal_ws``.
- Of what: ``Facade`` (the queue facade, ``app.state.queues``), ``existing_queue`` (a well-formed
  name of an existing queue, checked once per request; a read never creates one), ``on_queue``
  (that check, then the facade call), ``check_channel``.
- What they see: ``job_view`` (the public view of a job; fencing details for the API token only),
  ``redact``, ``read_token``.

Errors and the actor call live in ``serve.errors``, live streams in ``serve.streams``.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request, WebSocket
from starlette.requests import HTTPConnection

from actors.exceptions import InvalidInput
from actors.facade import Queues
from actors.views import public

from .auth import Principal, mint, query_token_allowed
from .http import check_queue

#: How long the read token an enqueue answers with lasts (and a minted one, by default).
READ_TOKEN_TTL = 24 * 3600
CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
#: Lease details only the API and worker tokens see: with a fencing token a reader could act on the attempt.
FENCING = ("token", "runner")


# -- who ----------------------------------------------------------------------------------------
def principal(request: Request) -> Principal:
    allowed = query_token_allowed(request.method, request.headers.get("accept"))
    return request.app.state.auth.principal(request.headers.get("authorization"),
                                            request.query_params.get("token") if allowed else None)


def principal_ws(websocket: WebSocket) -> Principal:
    return websocket.app.state.auth.principal(websocket.headers.get("authorization"),
                                              websocket.query_params.get("token"))


# Async, so FastAPI runs them on the loop rather than in its thread pool (an HMAC compare needs no thread).
async def admin(request: Request) -> Principal:
    who = principal(request)
    who.require_admin()
    return who


async def worker(request: Request) -> Principal:
    who = principal(request)
    who.require_worker()
    return who


ADMIN = [Depends(admin)]
WORKER = [Depends(worker)]


# -- of what ------------------------------------------------------------------------------------
async def _facade(connection: HTTPConnection) -> Queues:
    return connection.app.state.queues


#: The queue facade of the app, as a route parameter (it adds nothing to the OpenAPI document).
Facade = Annotated[Queues, Depends(_facade)]


def existing_queue(queues: Queues, queue: str) -> str:
    """A well-formed name of an existing queue (422 / 404); never creates the queue."""
    return queues.exists(check_queue(queue))


async def on_queue(queues: Queues, queue: str, method, *args):
    """``method(queue, *args)`` (a facade call) on an existing ``queue``, which is checked first (422 / 404)."""
    existing_queue(queues, queue)
    return await method(queue, *args)


def check_channel(name: str) -> str:
    """A well-formed channel name (422): what publishing accepts, reads and tokens accept too."""
    if not CHANNEL_NAME.fullmatch(name):
        raise InvalidInput(f"channel names are 1-100 characters of letters, digits, '_', '.', ':' or '-', "
                           f"got {name[:120]!r}")
    return name


# -- what they see ------------------------------------------------------------------------------
def redact(event: dict) -> dict:
    """An event without the fencing details of its lease."""
    data = event.get("data")
    if isinstance(data, dict) and any(k in data for k in FENCING):
        return {**event, "data": {k: v for k, v in data.items() if k not in FENCING}}
    return event


def job_view(job: dict, who: Principal | None = None) -> dict:
    """The public view of a job; for anyone but the API token (``who``), its history without fencing details."""
    out = public(job)
    if who is not None and who.role != "admin":
        out["history"] = [{k: v for k, v in h.items() if k not in FENCING} for h in job.get("history") or ()]
    return out


def read_token(secret: str, job_id: str) -> str:
    """The token an enqueue answers with: it reads that one job (and its events) for READ_TOKEN_TTL."""
    return mint(secret, "job", job_id, READ_TOKEN_TTL)
