"""``POST /v1/renders``: upload a deck (+ script), validate it all, store it, enqueue a render.

Multipart fields: ``deck`` (one or more files: PDF, Markdown, ZIP of images,
or PNG/JPEG images in slide order), ``script`` (optional YAML/JSON, one
narration per slide) and the options of ``RenderOptions`` as form fields
(``engine``, ``voice``, ``speed``, ``resolution`` or ``width``/``height``,
``pad_before``, ``pad_after``, ``subtitles``, ``burn_in``).

Bad input changes nothing: every check (``inputs.validate_render``) runs
before the first byte is stored; if storing or enqueueing fails, what was
stored is deleted. Errors answer with the status of the dojo error and its
``{"error", "message"}`` body.

The app provides ``app.state.dojo`` (the queue facade with ``async enqueue``)
and optionally ``app.state.store`` (an object store; else built from settings).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUpload

from actors.exceptions import DojoError, InvalidInput, PayloadTooLarge

from .deck import Limits, check_name
from .inputs import delete_inputs, store_inputs, validate_render

router = APIRouter()

_OPTION_FIELDS = ("engine", "voice", "speed", "resolution", "width", "height", "pad_before", "pad_after",
                  "subtitles", "burn_in", "fps", "loudness")


def _store(request: Request):
    store = getattr(request.app.state, "store", None)
    if store is None:
        from actors.settings import Settings
        from actors.objects import store_from_settings

        store = request.app.state.store = store_from_settings(Settings.from_env())
    return store


async def _read(upload, budget: int) -> tuple[str, bytes]:
    name = check_name(upload.filename or "")
    chunks, size = [], 0
    while True:
        chunk = await upload.read(1 << 20)
        if not chunk:
            break
        size += len(chunk)
        if size > budget:
            raise PayloadTooLarge(f"the upload is larger than {Limits().max_total_bytes} bytes; "
                                  f"split the deck or lower the image resolution")
        chunks.append(chunk)
    return name, b"".join(chunks)


def _error(exc: DojoError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content=exc.to_dict())


#: The multipart body, for the API's OpenAPI document (the handler reads the form itself).
BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["deck"], "properties": {
        "deck": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "PDF, Markdown, a ZIP of images, or PNG/JPEG images in slide order"},
        "script": {"type": "string", "format": "binary", "description": "YAML/JSON, one narration per slide"},
        **{name: {"type": "string"} for name in _OPTION_FIELDS}}}}}}


@router.post("/v1/renders", status_code=202, openapi_extra={"requestBody": BODY})
async def create_render(request: Request):
    """Validate, store and enqueue a render; answer with the queued job."""
    limits = Limits()
    try:
        form = await request.form(max_files=limits.max_slides + 1, max_fields=64)
    except Exception as exc:  # starlette raises its own errors for malformed multipart
        return _error(InvalidInput(f"the request must be multipart/form-data with 'deck' files: {exc}"))
    try:
        budget = limits.max_total_bytes
        files = []
        for item in form.getlist("deck"):
            if not isinstance(item, StarletteUpload):
                raise InvalidInput("'deck' must be a file upload, not a text field")
            name, data = await _read(item, budget)
            budget -= len(data)
            files.append((name, data))
        script = None
        script_item = form.get("script")
        if script_item is not None and not isinstance(script_item, str):
            script = await _read(script_item, budget)
        elif isinstance(script_item, str) and script_item.strip():
            script = ("script.yaml", script_item.encode("utf-8"))
        unknown = {key for key in form.keys() if key not in ("deck", "script", *_OPTION_FIELDS)}
        if unknown:
            raise InvalidInput(f"unknown form fields {sorted(unknown)}; options are {list(_OPTION_FIELDS)}")
        options = {key: form.get(key) for key in _OPTION_FIELDS if form.get(key) not in (None, "")}
        _, render_options = await run_in_threadpool(validate_render, files, script, options, limits)
        store = _store(request)
        payload = await run_in_threadpool(store_inputs, store, files, script, render_options)
        try:
            jobs = await request.app.state.dojo.enqueue([{"type": "render", "payload": payload}])
        except BaseException:
            await run_in_threadpool(delete_inputs, store, [*payload["deck"], *filter(None, [payload.get("script")])])
            raise
        return jobs[0]
    except DojoError as exc:
        return _error(exc)
    finally:
        await form.close()
