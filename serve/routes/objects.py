"""Objects in storage: signed links to what a job's result names, and the objects behind those links.

``output_links`` is the handler's core; the dashboard's job page calls it too (with same-origin links).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from actors.exceptions import InvalidInput, NotFound, Unauthorized
from actors.retention import outputs_of
from actors.settings import URL_TTL_RANGE
from actors.storage import LocalStore, output_urls

from ..deps import principal

#: An object is what a job wrote from untrusted input: the browser must not guess it is HTML, and if
#: it opens one as a page, that page runs no script, loads nothing and is an origin of its own.
OBJECT_HEADERS = {"X-Content-Type-Options": "nosniff",
                  "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'; "
                                             "style-src 'unsafe-inline'; frame-ancestors 'none'",
                  "Referrer-Policy": "no-referrer"}

router = APIRouter()


async def output_links(state, job_id: str, base: str, ttl: float) -> tuple[dict, dict]:
    """The job and signed links (starting at ``base``, valid ``ttl`` seconds) to the objects its result names."""
    job = await state.queues.get(job_id)
    # Only objects in the job's own folder: a result naming another job's object gets no URL for it.
    return job, await asyncio.to_thread(output_urls, state.store, outputs_of(job), base, ttl)


@router.get("/v1/jobs/{job_id}/outputs", tags=["jobs"])
async def outputs(job_id: str, request: Request, expires: float | None = None):
    """Signed, expiring, absolute URLs for the objects a job's result names (e.g. a render's video).

    ``expires`` (seconds) defaults to DOJO_URL_TTL and is kept within 60 s..7 days; links start
    at DOJO_PUBLIC_URL, else at the address this request came to.
    """
    principal(request).require_read("job", job_id)
    settings = request.app.state.settings
    if expires is not None and not URL_TTL_RANGE[0] <= expires <= URL_TTL_RANGE[1]:
        raise InvalidInput(f"expires must be within {URL_TTL_RANGE[0]:.0f}..{URL_TTL_RANGE[1]:.0f} seconds, "
                           f"got {expires}; leave it out for DOJO_URL_TTL ({settings.url_ttl:.0f} s)")
    base = settings.public_url or str(request.base_url)
    job, urls = await output_links(request.app.state, job_id, base, expires or settings.url_ttl)
    return {"job_id": job_id, "status": job["status"], "urls": urls}


@router.get("/v1/objects/{key:path}", tags=["jobs"])
async def get_object(key: str, request: Request, exp: str = "", sig: str = ""):
    """A stored object, for a signed URL from /v1/jobs/{id}/outputs (the signature is the credential)."""
    store = request.app.state.store
    if not isinstance(store, LocalStore):
        raise NotFound("objects live in S3 here; use the presigned URLs from /v1/jobs/{id}/outputs")
    if not exp or not sig or not (exp + sig).isascii() or not store.verify(key, exp, sig):
        raise Unauthorized("this object URL is unsigned, tampered with or expired; get a fresh one from "
                           "GET /v1/jobs/{id}/outputs")
    path = store.path(key)
    if not path.is_file():
        raise NotFound(f"no object with key {key!r}")
    return FileResponse(path, headers=OBJECT_HEADERS)
