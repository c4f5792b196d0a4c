"""The clip collector's job types: a parent that fans out, a child per streamer.

``clips.crawl`` (payload, all optional)::

    {"source": "db" | "streamers.csv" | "streamers.parquet",   # default DOJO_CLIPS_STREAMERS
     "started_at": "2024-01-01T00:00:00Z", "ended_at": "...", # default: the last DOJO_CLIPS_LOOKBACK_HOURS
     "window_hours": 24, "first": 100}

reads the streamers, fixes the time range once (every child crawls the same
range) and enqueues one ``clips.streamer`` child per streamer in one
``ctx.enqueue_many`` call. Each child's ``unique_key`` is
``clips.streamer:<parent job id>:<broadcaster id>``, so a re-delivered parent
enqueues nothing twice. When all children are final, ``summarize_children``
adds up their summaries (the run report).

``clips.streamer`` runs :func:`~pipelines.clips.crawl.crawl_streamer` and
returns ``{"broadcaster_id", "new", "updated", "unchanged", "requests", ...}``.

Requests go through the limiter named by ``DOJO_HELIX_LIMITER``: ``local`` is
one :class:`LocalLimiter` per process (fine for one worker process); a
``module:callable`` is called with the settings and must return a Limiter
shared by all workers (the queue actor's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Coroutine

from actors.exceptions import InvalidInput
from actors.jobs import JobContext, job

from .crawl import crawl_streamer, time_range
from .cluster_db import open_clip_db
from .db import read_streamers
from .exceptions import ClipsConfigError, HelixRequestError
from .helix import HelixClient, parse_time, rfc3339
from .limits import Limiter, local_limiter, shared_limiter
from .settings import ClipsSettings

CRAWL = "clips.crawl"
STREAMER = "clips.streamer"
SUMMARY_FIELDS = ("new", "updated", "unchanged", "requests", "clips", "retries", "throttled")

_limiters: dict[tuple, Limiter] = {}
_limiters_lock = threading.Lock()


def limiter_for(settings: ClipsSettings) -> Limiter:
    """The process's limiter for these settings' Helix host and client id (made once)."""
    key = (settings.limiter, settings.helix_url, settings.client_id, settings.rate, settings.burst,
           settings.max_in_flight)
    with _limiters_lock:
        if key not in _limiters:
            _limiters[key] = _make_limiter(settings)
        return _limiters[key]


def _make_limiter(settings: ClipsSettings) -> Limiter:
    kind = settings.limiter
    if kind == "auto":  # inside Ray the workers share the queue actor's bucket; alone, a local one
        import ray

        kind = "shared" if ray.is_initialized() else "local"
    if kind == "local":
        return local_limiter(settings)
    if kind == "shared":
        return shared_limiter(settings)
    module_name, _, attr = settings.limiter.partition(":")
    if not module_name or not attr:
        raise ClipsConfigError("DOJO_HELIX_LIMITER must be 'auto', 'shared', 'local' or 'module:callable', "
                               f"got {settings.limiter!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ClipsConfigError(f"DOJO_HELIX_LIMITER={settings.limiter!r} cannot be loaded: {exc}") from None
    return factory(settings)


def run_async(coro: Coroutine) -> Any:
    """Run a coroutine from a job's synchronous ``perform``, with or without a loop in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1, thread_name_prefix="dojo-clips") as pool:
        return pool.submit(asyncio.run, coro).result()


# -- payloads ---------------------------------------------------------------------------------


def _check_time(payload: dict, name: str) -> None:
    if payload.get(name) is not None:
        try:
            parse_time(payload[name])
        except HelixRequestError:
            raise InvalidInput(f"{name} must be an RFC3339 time like 2024-01-01T00:00:00Z, "
                               f"got {payload[name]!r}") from None


def _settings(payload: dict) -> ClipsSettings:
    """The Helix settings from the environment. A payload's ``helix_url`` (a Helix server on this machine:
    a recording proxy, or ``pipelines.clips.fake_helix`` for demos and tests) replaces the API's address;
    without credentials in the environment, the local stand-in's own are sent."""
    settings = ClipsSettings.from_env()
    local = payload.get("helix_url")
    if local:
        from .fake_helix import DEFAULT_CLIENT_ID, DEFAULT_TOKEN

        base = local.rstrip("/")
        settings = dataclasses.replace(settings, helix_url=base if base.endswith("/helix") else base + "/helix",
                                       client_id=settings.client_id or DEFAULT_CLIENT_ID,
                                       token=settings.token or DEFAULT_TOKEN)
    return settings


def _check_common(payload: dict) -> None:
    local = payload.get("helix_url")
    if local is not None and (not isinstance(local, str) or not local.startswith(("http://127.", "http://localhost"))):
        raise InvalidInput("helix_url must be a loopback URL like http://127.0.0.1:8787 (a Helix server on this "
                           "machine); the real API's address is DOJO_HELIX_URL")
    _check_time(payload, "started_at")
    _check_time(payload, "ended_at")
    hours = payload.get("window_hours")
    if hours is not None and (not isinstance(hours, (int, float)) or isinstance(hours, bool) or hours <= 0):
        raise InvalidInput(f"window_hours must be a number > 0, got {hours!r}")
    first = payload.get("first")
    if first is not None and (not isinstance(first, int) or isinstance(first, bool) or not 1 <= first <= 100):
        raise InvalidInput(f"first must be an integer within 1..100 (Helix's page size), got {first!r}")


def validate_crawl(payload: Any) -> None:
    payload = {} if payload is None else payload
    if not isinstance(payload, dict):
        raise InvalidInput(f"a {CRAWL} payload must be an object, got {type(payload).__name__}")
    unknown = set(payload) - {"source", "started_at", "ended_at", "window_hours", "first", "helix_url"}
    if unknown:
        raise InvalidInput(f"unknown {CRAWL} payload keys {sorted(unknown)}; expected source, started_at, "
                           "ended_at, window_hours, first")
    source = payload.get("source")
    if source is not None and (not isinstance(source, str) or not source):
        raise InvalidInput(f"source must be 'db' or a .csv/.parquet path, got {source!r}")
    _check_common(payload)


def validate_streamer(payload: Any) -> None:
    if not isinstance(payload, dict):
        raise InvalidInput(f"a {STREAMER} payload must be an object, got {type(payload).__name__}")
    bid = payload.get("broadcaster_id")
    if not isinstance(bid, str) or not bid.isdigit():
        raise InvalidInput(f"broadcaster_id must be a numeric Twitch user id as a string, got {bid!r}")
    for name in ("started_at", "ended_at"):
        if payload.get(name) is None:
            raise InvalidInput(f"{STREAMER} needs {name} (RFC3339); {CRAWL} fills it in for its children")
    _check_common(payload)


# -- job types --------------------------------------------------------------------------------


def summarize_children(ctx: JobContext, payload: Any, outcomes: list) -> dict:
    """The run report of one crawl: totals of the children's summaries, errors grouped by message.

    ``outcomes`` are the children's final states; each is read as a dict with
    ``status`` and ``result`` (the child's summary) or ``error``.
    """
    totals = {name: 0 for name in SUMMARY_FIELDS}
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    for outcome in outcomes:
        outcome = outcome if isinstance(outcome, dict) else getattr(outcome, "__dict__", {})
        status = str(outcome.get("status", "unknown"))
        statuses[status] = statuses.get(status, 0) + 1
        result = outcome.get("result")
        if isinstance(result, dict):
            for name in SUMMARY_FIELDS:
                value = result.get(name)
                if isinstance(value, (int, float)):
                    totals[name] += value
        error = outcome.get("error")
        if error:
            message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            errors[message] = errors.get(message, 0) + 1
    return {"streamers": len(outcomes), "statuses": statuses, **totals, "errors": errors}


@job(CRAWL, max_attempts=3, timeout=300, num_cpus=0.1, validate=validate_crawl, on_children_done=summarize_children)
def crawl(ctx: JobContext, payload: dict | None) -> dict:
    """Fan out: one ``clips.streamer`` child per streamer, enqueued in one call."""
    payload = payload or {}
    settings = _settings(payload)
    settings.require_credentials()  # fail once here rather than in every child
    db = open_clip_db(settings.db_path)  # the head's one database, whichever node this runs on
    streamers = read_streamers(payload.get("source") or settings.streamers, db)
    start, end = time_range(settings.lookback_hours, payload.get("started_at"), payload.get("ended_at"))
    window_hours = payload.get("window_hours") or settings.window_hours
    first = payload.get("first") or settings.page_size
    specs = [{
        "type": STREAMER,
        "payload": {"broadcaster_id": s["broadcaster_id"], "login": s.get("login", ""),
                    "started_at": rfc3339(start), "ended_at": rfc3339(end),
                    "window_hours": window_hours, "first": first,
                    **({"helix_url": payload["helix_url"]} if payload.get("helix_url") else {})},
        "unique_key": f"{STREAMER}:{ctx.job_id}:{s['broadcaster_id']}",
    } for s in streamers]
    ctx.progress(0.0, stage="enqueue", message=f"{len(specs)} streamers", streamers=len(specs))
    children = ctx.enqueue_many(specs)
    return {"streamers": len(specs), "children": len(children), "started_at": rfc3339(start),
            "ended_at": rfc3339(end), "window_hours": window_hours, "first": first}


@job(STREAMER, max_attempts=5, retry_delay=2.0, timeout=600, num_cpus=0.5, threads=128, validate=validate_streamer)
def streamer(ctx: JobContext, payload: dict) -> dict:
    """Crawl one streamer and upsert its clips; returns the summary."""
    settings = _settings(payload)
    return run_async(_crawl_one(ctx, payload, settings))


async def _crawl_one(ctx: JobContext, payload: dict, settings: ClipsSettings) -> dict:
    db = open_clip_db(settings.db_path)  # the head's one database, whichever node this runs on
    async with HelixClient.from_settings(settings, limiter_for(settings)) as helix:
        return await crawl_streamer(
            payload["broadcaster_id"], helix=helix, db=db,
            started_at=payload["started_at"], ended_at=payload["ended_at"],
            window=timedelta(hours=payload.get("window_hours") or settings.window_hours),
            first=payload.get("first") or settings.page_size, progress=ctx.progress,
        )
