"""A job's log lines (``ctx.log`` and captured stdout/stderr): a JSON page, or a live event stream
that ends when the job does. Not in the OpenAPI document (an event stream has no schema there)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from actors.exceptions import InvalidInput
from actors.ids import queue_of
from actors.store import FINAL

from ..http import with_keepalive
from ..streams import SSE_HEADERS, last_event_id

router = APIRouter(include_in_schema=False)


@router.get("/v1/jobs/{job_id}/logs", tags=["jobs"])
async def job_logs(job_id: str, request: Request, after: int = 0, limit: int = 1000, follow: bool = False):
    """A job's log lines (``ctx.log`` and captured stdout/stderr), oldest first.

    JSON ``{"job_id", "status", "lines": [{"seq", "at", "attempt", "line"}], "next_after"}``;
    page on with ``after=next_after``. With ``follow=1`` or ``Accept: text/event-stream`` it is a
    Server-Sent Events stream: ``log`` events (``{"seq", "attempt", "lines"}``) as they are written,
    then one ``end`` event (``{"status"}``) when the job is finished.
    """
    auth = request.app.state.auth
    streams = follow or "text/event-stream" in request.headers.get("accept", "")
    token = request.query_params.get("token") if streams and request.method == "GET" else None
    auth.principal(request.headers.get("authorization"), token).require_read("job", job_id)
    queue_of(job_id)
    if not 1 <= limit <= 1000:
        raise InvalidInput(f"limit must be within 1..1000, got {limit}")
    answer = await request.app.state.queues.logs(job_id, after, limit)
    if streams:
        return _follow_logs(request.app.state.hub, job_id, last_event_id(request, after), answer)
    lines = [{"seq": e["seq"], "at": e["at"], "attempt": e.get("attempt"), "line": line}
             for e in answer["events"] for line in e.get("lines", ())]
    next_after = answer["events"][-1]["seq"] if answer["events"] else after
    return {"job_id": job_id, "status": answer["status"], "lines": lines, "next_after": next_after,
            "more": len(answer["events"]) >= limit}


def _follow_logs(hub, job_id: str, after: int, first: dict) -> StreamingResponse:
    queue = queue_of(job_id)
    known = first["last_seq"]  # final status events up to here belong to earlier runs (before a retry)

    async def body():
        yield ": dojo log stream\n\n"
        if first["status"] in FINAL:
            # Finished: send what is stored after ``after`` and end.
            for event in first["events"]:
                yield _sse_event(event["seq"], "log", {"seq": event["seq"], "attempt": event.get("attempt"),
                                                       "lines": event.get("lines", [])})
            yield _sse_event(None, "end", {"status": first["status"]})
            return
        async for event in with_keepalive(hub.follow(queue, "job:" + job_id, after)):
            if event is None:
                yield ": keep-alive\n\n"
                continue
            data = event["data"]
            if event["kind"] == "log":
                yield _sse_event(event["seq"], "log", {"seq": event["seq"], "attempt": data.get("attempt"),
                                                       "lines": data.get("lines", [])})
            elif event["kind"] == "status" and data.get("status") in FINAL and event["seq"] > known:
                yield _sse_event(None, "end", {"status": data["status"]})
                return

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


def _sse_event(seq: int | None, kind: str, data: dict) -> str:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n"
