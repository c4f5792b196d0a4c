"""The API about itself: ``/healthz`` (no token), its OpenAPI document (the API token) and ``/docs``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from ..deps import ADMIN

router = APIRouter()


@router.get("/healthz", tags=["ops"])
async def healthz():
    return {"status": "ok", "time": time.time()}


@router.get("/openapi.json", include_in_schema=False, dependencies=ADMIN)
async def openapi(request: Request):
    return request.app.openapi()


@router.get("/docs", include_in_schema=False)
async def docs():
    """The Swagger UI lives under the dashboard's session (its assets served by dojo, not a CDN)."""
    return RedirectResponse("/dashboard/docs", status_code=307)
