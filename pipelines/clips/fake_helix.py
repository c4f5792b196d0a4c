"""A local Twitch Helix "Get Clips" server for tests, the demo and the benchmark.

Over 500 lines because it is a whole server (wire format, rate limits, faults, counters, a CLI) kept
in one file so that the crawler's tests depend on one readable stand-in for Twitch.

It speaks the wire format of ``GET /helix/clips`` (the same fields, the
``{"data": [...], "pagination": {"cursor": ...}}`` envelope, Twitch's error
JSON, ``Ratelimit-*`` headers) and adds what a test needs to be sure of what
happened:

- deterministic clips from a seed: ``clips_per_broadcaster`` clips for every
  broadcaster, stable ids, ``created_at`` spread over ``span_hours`` from
  ``anchor``; :meth:`FakeHelix.bump` raises every view count (and optionally
  retitles) so a re-run has something to update;
- a token bucket (``rate`` per second, ``burst``) that answers 429 when empty
  and *counts* requests that arrived while it was empty (``bucket_exceeded``);
- faults: ``latency`` seconds per request, ``error_rate`` of 5xx answers,
  ``drop_rate`` of connections closed without an answer, and
  :meth:`FakeHelix.throttle_next` for a burst of 429s;
- counters at ``GET /_stats`` and as attributes (``requests``,
  ``bucket_exceeded``, ``max_in_flight``, ...). ``POST /_bump`` and
  ``POST /_reset_stats`` drive it from outside the process.

Run it standalone::

    python -m pipelines.clips.fake_helix --port 8787 --seed 1 --streamers 200 \\
        --rate 20 --burst 20 --latency 0.1

The bucket here is written independently of the client's limiter on purpose:
the server is the referee, it must not share the client's arithmetic.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import logging
import math
import random
import re
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import AsyncIterator

from aiohttp import web

log = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "dojo-fake-client-id"
DEFAULT_TOKEN = "dojo-fake-token"
DEFAULT_ANCHOR = datetime(2024, 1, 1, tzinfo=timezone.utc)

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

_ADJECTIVES = ("Awkward", "Brave", "Clever", "Dizzy", "Eager", "Fancy", "Gentle", "Happy", "Icy", "Jolly",
               "Kind", "Lazy", "Mighty", "Noisy", "Odd", "Proud", "Quiet", "Rapid", "Shy", "Tiny")
_ANIMALS = ("Salamander", "Otter", "Falcon", "Badger", "Koala", "Lemur", "Narwhal", "Panda", "Quokka",
            "Raven", "Sloth", "Tapir", "Walrus", "Yak", "Zebra", "Heron")
_EMOTES = ("Kappa", "PogChamp", "Kreygasm", "SwiftRage", "BibleThump", "DansGame", "FailFish", "SeemsGood",
           "NotLikeThis", "ResidentSleeper")
_TITLE_WORDS = ("clutch", "insane", "fail", "speedrun", "boss", "chat", "wins", "no way", "GG", "first try",
                "rage", "lucky", "combo", "dodge", "world record", "comeback")
_GAMES = ("509658", "21779", "32982", "27471", "516575", "33214", "491931")
_LANGUAGES = ("en", "en", "en", "ja", "de", "es", "fr", "ko")
_SLUG = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def rfc3339(moment: datetime) -> str:
    """Format a datetime the way Helix does: UTC, seconds, trailing Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fake_streamers(count: int, start: int = 100001) -> list[dict]:
    """``count`` streamers with numeric ids, as rows of a streamer table."""
    return [{"broadcaster_id": str(start + i), "login": f"streamer{start + i}"} for i in range(count)]


@dataclass(frozen=True)
class FakeHelixConfig:
    """Everything that shapes the fake server's data and behaviour."""

    seed: int = 1
    clips_per_broadcaster: int = 30
    anchor: datetime = DEFAULT_ANCHOR
    span_hours: float = 24.0
    #: broadcaster id -> login; None accepts any numeric id (named "streamer<id>").
    broadcasters: dict[str, str] | None = None
    client_id: str = DEFAULT_CLIENT_ID
    token: str = DEFAULT_TOKEN
    #: Token bucket refill in requests per second; None means no bucket.
    rate: float | None = None
    #: Bucket size; defaults to ``rate`` rounded up.
    burst: int | None = None
    latency: float = 0.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    #: Seed of the fault dice (5xx, drops); defaults to ``seed``.
    fault_seed: int | None = None

    def __post_init__(self):
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be > 0 or None, got {self.rate}")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}")
        for name in ("error_rate", "drop_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {getattr(self, name)}")
        if self.latency < 0 or self.clips_per_broadcaster < 0 or self.span_hours <= 0:
            raise ValueError("latency and clips_per_broadcaster must be >= 0, span_hours > 0")


class _Bucket:
    """The server's token bucket: continuous refill, ``burst`` tokens, full at start."""

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self) -> bool:
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def headers(self) -> dict[str, str]:
        # Ratelimit-Reset is when the bucket is full again, in whole epoch seconds (as Twitch sends it).
        full_in = (self.burst - self.tokens) / self.rate
        return {
            "Ratelimit-Limit": str(self.burst),
            "Ratelimit-Remaining": str(max(0, math.floor(self.tokens))),
            "Ratelimit-Reset": str(math.ceil(time.time() + full_in)),
        }


@dataclass
class _Clip:
    """One generated clip; view counts and titles are derived from the server's version."""

    data: dict
    created: datetime
    base_views: int
    step: int = field(default=10)


class FakeHelix:
    """The server: its data, its counters and its aiohttp application."""

    def __init__(self, config: FakeHelixConfig | None = None, **overrides):
        self.config = replace(config or FakeHelixConfig(), **overrides)
        cfg = self.config
        self.bucket = _Bucket(cfg.rate, cfg.burst or math.ceil(cfg.rate)) if cfg.rate else None
        self._dice = random.Random(cfg.fault_seed if cfg.fault_seed is not None else cfg.seed)
        self._clips: dict[str, list[_Clip]] = {}
        self.views_version = 0
        self.title_version = 0
        self._throttle_left = 0
        self._throttle_reset = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.reset_stats()
        self.app = web.Application()
        self.app.router.add_get("/helix/clips", self._get_clips)
        self.app.router.add_get("/_stats", self._stats)
        self.app.router.add_post("/_bump", self._bump)
        self.app.router.add_post("/_reset_stats", self._reset)

    # -- counters -----------------------------------------------------------------------------

    def reset_stats(self) -> None:
        """Zero the counters (the bucket and the data are kept)."""
        self.requests = 0
        self.bucket_exceeded = 0
        self.throttled = 0
        self.injected_5xx = 0
        self.dropped = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.by_status: dict[int, int] = {}

    def stats(self) -> dict:
        return {
            "requests": self.requests,
            "bucket_exceeded": self.bucket_exceeded,
            "throttled": self.throttled,
            "injected_5xx": self.injected_5xx,
            "dropped": self.dropped,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "views_version": self.views_version,
            "title_version": self.title_version,
            # Where the clips are: `dojo crawl clips --fake-helix` crawls this range by default.
            "started_at": rfc3339(self.config.anchor),
            "ended_at": rfc3339(self.config.anchor + timedelta(hours=self.config.span_hours)),
        }

    # -- data ---------------------------------------------------------------------------------

    def bump(self, views: bool = True, retitle: bool = False) -> None:
        """Change the data between runs: every view count rises, titles change if asked."""
        if views:
            self.views_version += 1
        if retitle:
            self.title_version += 1

    def throttle_next(self, count: int, reset_after: float = 1.0) -> None:
        """Answer the next ``count`` requests with 429, as if another client had drained the bucket.

        The whole burst reports one ``Ratelimit-Reset``: ``reset_after`` seconds from now, rounded up to
        a whole epoch second like Helix's header.
        """
        self._throttle_left = count
        self._throttle_reset = math.ceil(time.time() + reset_after)

    def broadcaster_name(self, broadcaster_id: str) -> str | None:
        known = self.config.broadcasters
        if known is None:
            return f"streamer{broadcaster_id}"
        return known.get(broadcaster_id)

    def _generate(self, broadcaster_id: str) -> list[_Clip]:
        cached = self._clips.get(broadcaster_id)
        if cached is not None and len(cached) == self.config.clips_per_broadcaster:
            return cached
        name = self.broadcaster_name(broadcaster_id)
        clips = [] if name is None else [
            self._make_clip(broadcaster_id, name, i) for i in range(self.config.clips_per_broadcaster)
        ]
        # Helix lists clips by view count, most viewed first; bumps add the same to all, so the order holds.
        clips.sort(key=lambda c: (-c.base_views, c.data["id"]))
        self._clips[broadcaster_id] = clips
        return clips

    def _make_clip(self, broadcaster_id: str, name: str, index: int) -> _Clip:
        cfg = self.config
        rng = random.Random(f"{cfg.seed}:{broadcaster_id}:{index}")
        slug = "".join(rng.choice(_SLUG) for _ in range(16))
        clip_id = f"{rng.choice(_ADJECTIVES)}{rng.choice(_ADJECTIVES)}{rng.choice(_ANIMALS)}{rng.choice(_EMOTES)}-{slug}"
        created = cfg.anchor + timedelta(seconds=int(rng.uniform(0, cfg.span_hours * 3600)))
        has_vod = rng.random() < 0.7
        creator = rng.randint(10_000_000, 99_999_999)
        data = {
            "id": clip_id,
            "url": f"https://clips.twitch.tv/{clip_id}",
            "embed_url": f"https://clips.twitch.tv/embed?clip={clip_id}",
            "broadcaster_id": broadcaster_id,
            "broadcaster_name": name,
            "creator_id": str(creator),
            "creator_name": f"viewer{creator % 100000}",
            "video_id": str(rng.randint(1_000_000_000, 2_999_999_999)) if has_vod else "",
            "game_id": rng.choice(_GAMES),
            "language": rng.choice(_LANGUAGES),
            "title": " ".join(rng.sample(_TITLE_WORDS, 3)),
            "view_count": 0,
            "created_at": rfc3339(created),
            "thumbnail_url": f"https://static-cdn.jtvnw.net/twitch-clips-thumbnails-prod/{clip_id}/preview-480x272.jpg",
            "duration": round(rng.uniform(5.0, 60.0), 1),
            "vod_offset": rng.randint(0, 36_000) if has_vod else None,
            "is_featured": rng.random() < 0.1,
        }
        return _Clip(data=data, created=created, base_views=rng.randint(1, 50_000))

    def _render(self, clip: _Clip) -> dict:
        data = dict(clip.data)
        data["view_count"] = clip.base_views + clip.step * self.views_version
        if self.title_version:
            data["title"] = f"{data['title']} (v{self.title_version})"
        return data

    def clips(self, broadcaster_id: str, started_at: datetime | None = None,
              ended_at: datetime | None = None) -> list[dict]:
        """The clips a correct crawl of this range must find, in Helix order (the test's ground truth)."""
        return [self._render(c) for c in self._generate(broadcaster_id) if _within(c.created, started_at, ended_at)]

    # -- HTTP ---------------------------------------------------------------------------------

    async def _get_clips(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = await self._answer(request)
        finally:
            self.in_flight -= 1
        if response is not None:
            self.by_status[response.status] = self.by_status.get(response.status, 0) + 1
            return response
        # A dropped connection: no status line ever reaches the client.
        self.dropped += 1
        request.transport.abort()
        return web.Response(status=500)

    async def _answer(self, request: web.Request) -> web.Response | None:
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        headers: dict[str, str] = {}
        if self.bucket is not None:
            took = self.bucket.take()
            headers = self.bucket.headers()
            if not took:
                self.bucket_exceeded += 1
                self.throttled += 1
                return _error(429, "Too Many Requests", "Request limit exceeded", headers)
        if self.config.latency:
            await asyncio.sleep(self.config.latency)
        if self._throttle_left > 0:
            self._throttle_left -= 1
            self.throttled += 1
            reset = self._throttle_reset
            limit = str(self.bucket.burst if self.bucket else 800)
            return _error(429, "Too Many Requests", "Request limit exceeded",
                          {"Ratelimit-Limit": limit, "Ratelimit-Remaining": "0", "Ratelimit-Reset": str(reset)})
        roll = self._dice.random()
        if roll < self.config.drop_rate:
            return None
        if roll < self.config.drop_rate + self.config.error_rate:
            self.injected_5xx += 1
            status = self._dice.choice((500, 502, 503))
            reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}[status]
            return _error(status, reason, "", headers)
        try:
            body = self._page(request.query)
        except _BadRequest as exc:
            return _error(400, "Bad Request", str(exc), headers)
        return web.json_response(body, headers=headers)

    def _check_auth(self, request: web.Request) -> web.Response | None:
        client_id = request.headers.get("Client-Id")
        auth = request.headers.get("Authorization", "")
        if not auth:
            return _error(401, "Unauthorized", "OAuth token is missing")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _error(401, "Unauthorized", "Invalid OAuth token")
        if not client_id:
            return _error(401, "Unauthorized", "Client-Id header required")
        if token != self.config.token:
            return _error(401, "Unauthorized", "Invalid OAuth token")
        if client_id != self.config.client_id:
            return _error(401, "Unauthorized", "Client ID and OAuth token do not match")
        return None

    def _page(self, query) -> dict:
        broadcaster_id = query.get("broadcaster_id")
        ids = query.getall("id", [])
        game_id = query.get("game_id")
        if sum(bool(x) for x in (broadcaster_id, ids, game_id)) != 1:
            raise _BadRequest('Exactly one of "broadcaster_id", "game_id" or "id" is required')
        first = _parse_first(query.get("first"))
        started_at = _parse_time(query, "started_at")
        ended_at = _parse_time(query, "ended_at")
        if started_at is None:
            ended_at = None  # Helix ignores ended_at without started_at.
        elif ended_at is None:
            ended_at = started_at + timedelta(days=7)
        if started_at is not None and ended_at <= started_at:
            raise _BadRequest(f'"ended_at" ({rfc3339(ended_at)}) must be after "started_at" ({rfc3339(started_at)})')
        offset = _parse_cursor(query.get("after"))
        if broadcaster_id:
            if not broadcaster_id.isdigit():
                raise _BadRequest(f'Invalid "broadcaster_id": expected a numeric user id, got {broadcaster_id!r}')
            pool = self.clips(broadcaster_id, started_at, ended_at)
        elif ids:
            wanted = set(ids)
            pool = [self._render(c) for clips in self._clips.values() for c in clips if c.data["id"] in wanted]
            first = len(pool) or 1
        else:
            pool = [self._render(c) for clips in self._clips.values() for c in clips
                    if c.data["game_id"] == game_id and _within(c.created, started_at, ended_at)]
        page = pool[offset:offset + first]
        pagination = {}
        if offset + first < len(pool):
            pagination = {"cursor": _make_cursor(offset + first)}
        return {"data": page, "pagination": pagination}

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _bump(self, request: web.Request) -> web.Response:
        self.bump(views=request.query.get("views", "1") != "0", retitle=request.query.get("retitle", "0") == "1")
        return web.json_response(self.stats())

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response(self.stats())

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 picks a free port); return the base URL (without /helix)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def helix_url(self) -> str:
        """The base URL a Helix client is configured with (``DOJO_HELIX_URL``)."""
        return f"{self.url}/helix"


@asynccontextmanager
async def serve_fake_helix(config: FakeHelixConfig | None = None, **overrides) -> AsyncIterator[FakeHelix]:
    """Start a :class:`FakeHelix` on a free loopback port for the duration of the block."""
    server = FakeHelix(config, **overrides)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class _BadRequest(Exception):
    pass


def _error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error, "status": status, "message": message}, status=status,
                             headers=headers or {})


def _within(moment: datetime, started_at: datetime | None, ended_at: datetime | None) -> bool:
    return (started_at is None or moment >= started_at) and (ended_at is None or moment < ended_at)


def _parse_first(raw: str | None) -> int:
    if raw is None:
        return 20
    try:
        first = int(raw)
    except ValueError:
        first = 0
    if not 1 <= first <= 100:
        raise _BadRequest(f'Invalid "first": expected an integer between 1 and 100, got {raw!r}')
    return first


def _parse_time(query, name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not _RFC3339.match(raw):
        raise _BadRequest(f'Invalid "{name}": expected an RFC3339 timestamp like 2024-01-01T00:00:00Z, got {raw!r}')
    try:
        return datetime.fromisoformat(raw.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise _BadRequest(f'Invalid "{name}": {raw!r} is not a valid date and time') from None


def _make_cursor(offset: int) -> str:
    raw = json.dumps({"b": None, "a": {"Cursor": str(offset)}}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _parse_cursor(raw: str | None) -> int:
    if not raw:
        return 0
    try:
        decoded = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        offset = int(decoded["a"]["Cursor"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _BadRequest(f'Invalid "after": {raw!r} is not a cursor this endpoint returned') from None
    if offset < 0:
        raise _BadRequest(f'Invalid "after": {raw!r} is not a cursor this endpoint returned')
    return offset


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.clips.fake_helix", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--clips", type=int, default=30, help="clips per broadcaster")
    p.add_argument("--streamers", type=int, default=0,
                   help="only know this many broadcasters (ids 100001...); 0 accepts any numeric id")
    p.add_argument("--anchor", default=rfc3339(DEFAULT_ANCHOR), help="start of the clips' time span (RFC3339) or 'now'")
    p.add_argument("--span-hours", type=float, default=24.0)
    p.add_argument("--rate", type=float, default=None, help="bucket refill, requests/s (default: no bucket)")
    p.add_argument("--burst", type=int, default=None)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--drop-rate", type=float, default=0.0)
    p.add_argument("--write-streamers", metavar="CSV",
                   help="also write the broadcasters it knows (--streamers, or 200) to this CSV, for --source")
    p.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    p.add_argument("--token", default=DEFAULT_TOKEN)
    return p


def config_from_args(args: argparse.Namespace) -> FakeHelixConfig:
    if args.anchor == "now":
        anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=args.span_hours)
    else:
        anchor = datetime.fromisoformat(args.anchor.replace("Z", "+00:00"))
    broadcasters = None
    if args.streamers:
        broadcasters = {s["broadcaster_id"]: s["login"] for s in fake_streamers(args.streamers)}
    return FakeHelixConfig(seed=args.seed, clips_per_broadcaster=args.clips, anchor=anchor,
                           span_hours=args.span_hours, broadcasters=broadcasters, client_id=args.client_id,
                           token=args.token, rate=args.rate, burst=args.burst, latency=args.latency,
                           error_rate=args.error_rate, drop_rate=args.drop_rate)


async def _serve_forever(config: FakeHelixConfig, host: str, port: int) -> None:
    server = FakeHelix(config)
    url = await server.start(host, port)
    print(f"fake Helix at {url}/helix  (stats: {url}/_stats)", flush=True)
    print(f"  DOJO_HELIX_URL={url}/helix DOJO_HELIX_CLIENT_ID={config.client_id} DOJO_HELIX_TOKEN={config.token}",
          flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.write_streamers:
        import csv

        with open(args.write_streamers, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["broadcaster_id", "login"])
            writer.writeheader()
            writer.writerows(fake_streamers(args.streamers or 200))
        print(f"{args.streamers or 200} streamers written to {args.write_streamers}", flush=True)
    try:
        asyncio.run(_serve_forever(config_from_args(args), args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
