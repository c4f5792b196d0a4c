"""A Twitch Helix client for Get Clips, built for many workers sharing one quota.

- Every HTTP request goes through a :class:`~pipelines.clips.limits.Limiter`:
  ``async with limiter.slot(): await limiter.acquire(1); send``.
- ``Ratelimit-Remaining: 0`` pauses the limiter for one token's time
  (``(Ratelimit-Reset - now) / Ratelimit-Limit``), so a quota drained by
  someone else slows us down before the server has to say 429.
- 429 pauses the limiter until ``Ratelimit-Reset`` and the request is sent
  again; it does not count as a failed attempt (up to ``max_throttled``).
- 5xx, dropped connections and timeouts are retried with exponential backoff
  and jitter, ``max_attempts`` in all, then :class:`HelixUnavailable`.
- 401 raises :class:`HelixAuthError`, other 4xx :class:`HelixRequestError`,
  both with Helix's own message; retrying cannot fix them.

A long time range is split into windows (``window``) and each window's cursor
is followed to the end; a clip seen in two windows is kept once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp

from .exceptions import ClipsConfigError, HelixAuthError, HelixError, HelixRequestError, HelixUnavailable
from .limits import Limiter, LocalLimiter

log = logging.getLogger(__name__)

#: The fields of a clip in Helix's Get Clips answer, in Helix's order.
CLIP_FIELDS = ("id", "url", "embed_url", "broadcaster_id", "broadcaster_name", "creator_id", "creator_name",
               "video_id", "game_id", "language", "title", "view_count", "created_at", "thumbnail_url",
               "duration", "vod_offset", "is_featured")

_RETRYABLE_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


def rfc3339(moment: datetime) -> str:
    """Helix's time format: UTC, whole seconds, trailing Z. Naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | datetime) -> datetime:
    """An aware datetime from an RFC3339 string (or a datetime, naive taken as UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, AttributeError):
        raise HelixRequestError(f"expected an RFC3339 time like 2024-01-01T00:00:00Z, got {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def windows(started_at: datetime, ended_at: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    """Split ``[started_at, ended_at)`` into consecutive windows of at most ``size``."""
    if size <= timedelta(0):
        raise ValueError(f"window size must be positive, got {size}")
    if ended_at <= started_at:
        raise ValueError(f"ended_at ({rfc3339(ended_at)}) must be after started_at ({rfc3339(started_at)})")
    out = []
    start = started_at
    while start < ended_at:
        end = min(start + size, ended_at)
        out.append((start, end))
        start = end
    return out


@dataclass
class Fetched:
    """What one streamer's fetch brought back."""

    clips: list[dict]
    requests: int = 0
    pages: int = 0
    windows: int = 0
    throttled: int = 0
    retries: int = 0


@dataclass
class _Tally:
    requests: int = 0
    throttled: int = 0
    retries: int = 0


class HelixClient:
    """Calls Helix with one aiohttp session; use as ``async with HelixClient(...) as helix``."""

    def __init__(self, base_url: str, client_id: str, token: str, *, limiter: Limiter | None = None,
                 max_attempts: int = 6, backoff: float = 0.25, backoff_cap: float = 8.0, timeout: float = 30.0,
                 max_throttled: int = 50, rng: random.Random | None = None):
        if not client_id or not token:
            raise ClipsConfigError("a Helix client id and token are required "
                                   "(DOJO_HELIX_CLIENT_ID and DOJO_HELIX_TOKEN)")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.base_url = base_url.rstrip("/")
        self._headers = {"Client-Id": client_id, "Authorization": f"Bearer {token}"}
        self.limiter = limiter if limiter is not None else LocalLimiter()
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.max_throttled = max_throttled
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        #: HTTP requests sent by this client, retries included.
        self.requests = 0

    @classmethod
    def from_settings(cls, settings, limiter: Limiter | None = None) -> "HelixClient":
        settings.require_credentials()
        return cls(settings.helix_url, settings.client_id, settings.token, limiter=limiter,
                   max_attempts=settings.retries, timeout=settings.timeout)

    async def __aenter__(self) -> "HelixClient":
        self._open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # The limiter bounds what is in flight; the pool must never make a request wait after
            # it took its token (limit=0: no pool limit).
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                                  headers=self._headers)
            # aiohttp silently resends an idempotent request once when a kept-alive connection drops;
            # that resend would take no token from the limiter. We retry ourselves, through it.
            # (No public switch; aiohttp's own test client sets the same attribute.)
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one request --------------------------------------------------------------------------

    async def get(self, path: str, params: list[tuple[str, str]] | dict, *, tally: _Tally | None = None) -> dict:
        """GET ``<base_url>/<path>`` until it succeeds or fails for good; return the JSON body."""
        session = self._open()
        tally = tally if tally is not None else _Tally()
        url = f"{self.base_url}/{path.lstrip('/')}"
        failures = 0
        throttled = 0
        while True:
            status, headers, body, failure = None, None, b"", ""
            async with self.limiter.slot():
                await self.limiter.acquire(1)
                self.requests += 1
                tally.requests += 1
                try:
                    async with session.get(url, params=params) as response:
                        status, headers = response.status, response.headers
                        body = await response.read()
                except _RETRYABLE_ERRORS as exc:
                    failure = f"connection failed: {type(exc).__name__}: {exc}".rstrip(": ")
            if status is not None:
                self._observe(status, headers)
                if status == 200:
                    return _json(body, url)
                message = _message(body)
                if status == 401:
                    raise HelixAuthError(f"Helix refused the credentials (401: {message}); check "
                                         "DOJO_HELIX_CLIENT_ID and DOJO_HELIX_TOKEN: the token must be valid, "
                                         "not expired, and issued to that client id", url=url)
                if status == 429:
                    throttled += 1
                    tally.throttled += 1
                    if throttled > self.max_throttled:
                        raise HelixUnavailable(f"Helix kept answering 429 ({throttled} times) for {url}; "
                                               "lower DOJO_HELIX_RATE or wait", url=url)
                    log.info("helix 429, paused for %.2fs", getattr(self.limiter, "paused_for", 0.0))
                    continue
                if 400 <= status < 500:
                    raise HelixRequestError(f"Helix refused GET {url} with {status}: {message or 'no reason given'}",
                                            url=url, http_status=status, params=_plain(params))
                failure = f"HTTP {status}" + (f": {message}" if message else "")
            failures += 1
            if failures >= self.max_attempts:
                raise HelixUnavailable(f"GET {url} failed {failures} times; last failure: {failure}", url=url)
            tally.retries += 1
            delay = min(self.backoff_cap, self.backoff * 2 ** (failures - 1)) * self._rng.uniform(0.5, 1.0)
            log.info("helix request failed (%s), retry %d/%d in %.2fs", failure, failures,
                     self.max_attempts - 1, delay)
            await asyncio.sleep(delay)

    def _observe(self, status: int, headers) -> None:
        """Honour the rate-limit headers: 429 pauses until reset, 0 remaining pauses one token's time."""
        remaining = _number(headers.get("Ratelimit-Remaining"))
        reset = _number(headers.get("Ratelimit-Reset"))
        limit = _number(headers.get("Ratelimit-Limit"))
        now = time.time()
        if status == 429:
            # Without a usable reset, wait a second: Helix refills continuously.
            self.limiter.pause_until(max(reset or 0.0, now + 0.05) if reset else now + 1.0)
        elif remaining == 0 and reset and limit:
            self.limiter.pause_until(now + max(0.0, reset - now) / limit)

    # -- Get Clips ----------------------------------------------------------------------------

    async def clips_page(self, broadcaster_id: str, started_at: datetime, ended_at: datetime, *, first: int = 100,
                         after: str | None = None, tally: _Tally | None = None) -> tuple[list[dict], str | None]:
        """One page of Get Clips: the clips and the cursor of the next page (None at the end)."""
        params = [("broadcaster_id", str(broadcaster_id)), ("started_at", rfc3339(started_at)),
                  ("ended_at", rfc3339(ended_at)), ("first", str(first))]
        if after:
            params.append(("after", after))
        body = await self.get("clips", params, tally=tally)
        data = body.get("data")
        if not isinstance(data, list):
            raise HelixError(f"Helix answered Get Clips without a 'data' list: {str(body)[:200]}")
        cursor = (body.get("pagination") or {}).get("cursor") or None
        return data, cursor

    async def fetch_clips(self, broadcaster_id: str, started_at: datetime, ended_at: datetime, *,
                          window: timedelta = timedelta(hours=24), first: int = 100) -> Fetched:
        """Every clip of one broadcaster created in ``[started_at, ended_at)``, each once."""
        if not 1 <= first <= 100:
            raise HelixRequestError(f"first must be within 1..100 (Helix's page size limit), got {first}")
        tally = _Tally()
        seen: dict[str, dict] = {}
        spans = windows(parse_time(started_at), parse_time(ended_at), window)
        pages = 0
        for start, end in spans:
            cursor: str | None = None
            cursors: set[str] = set()
            while True:
                data, cursor = await self.clips_page(broadcaster_id, start, end, first=first, after=cursor,
                                                     tally=tally)
                pages += 1
                for clip in data:
                    seen[clip["id"]] = clip
                if not cursor or not data:
                    break
                if cursor in cursors:
                    raise HelixError(f"Helix returned the cursor {cursor!r} twice for broadcaster "
                                     f"{broadcaster_id}; stopping instead of looping")
                cursors.add(cursor)
        return Fetched(clips=list(seen.values()), requests=tally.requests, pages=pages, windows=len(spans),
                       throttled=tally.throttled, retries=tally.retries)


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def _json(body: bytes, url: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise HelixError(f"Helix answered GET {url} with a body that is not JSON: {body[:200]!r}") from None


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace")
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error") or "")
    return str(data)[:200]


def _plain(params) -> dict:
    return dict(params) if not isinstance(params, dict) else params
