"""One streamer's crawl as a plain async function, and an in-process fan-out.

``crawl_streamer`` is the whole of a ``clips.streamer`` job's work: fetch every
clip of the range (cursor, windows, rate limits, retries are the client's job)
and upsert them in one transaction. It needs neither Ray nor the queue, so
tests, the benchmark and a one-off script call it directly.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Callable

from .db import ClipDB
from .helix import HelixClient, parse_time, rfc3339

log = logging.getLogger(__name__)


def time_range(lookback_hours: float, started_at: str | datetime | None = None,
               ended_at: str | datetime | None = None, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The range a crawl covers: explicit times, else the last ``lookback_hours`` up to the current hour's end.

    Rounding up to the hour gives every child of one crawl the same range, and a
    rerun within the same hour the same range too.
    """
    if ended_at is not None:
        end = parse_time(ended_at)
    else:
        now = now or datetime.now(timezone.utc)
        end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = parse_time(started_at) if started_at is not None else end - timedelta(hours=lookback_hours)
    if end <= start:
        raise ValueError(f"ended_at ({rfc3339(end)}) must be after started_at ({rfc3339(start)})")
    return start, end


async def crawl_streamer(broadcaster_id: str, *, helix: HelixClient, db: ClipDB, started_at: str | datetime,
                         ended_at: str | datetime, window: timedelta = timedelta(hours=24), first: int = 100,
                         progress: Callable[..., None] | None = None) -> dict:
    """Fetch one streamer's clips of ``[started_at, ended_at)`` and upsert them; return a summary.

    The summary is ``{"broadcaster_id", "new", "updated", "unchanged", "requests", "clips", "pages",
    "retries", "throttled"}``. Running it twice for the same data reports everything unchanged.
    """
    fetched = await helix.fetch_clips(str(broadcaster_id), parse_time(started_at), parse_time(ended_at),
                                      window=window, first=first)
    if progress is not None:
        progress(0.9, stage="upsert", message=f"{len(fetched.clips)} clips fetched in {fetched.requests} requests")
    counts = await asyncio.to_thread(db.upsert_clips, fetched.clips)
    summary = {"broadcaster_id": str(broadcaster_id), **counts.to_dict(), "requests": fetched.requests,
               "clips": len(fetched.clips), "pages": fetched.pages, "retries": fetched.retries,
               "throttled": fetched.throttled}
    log.info("crawled streamer %s: %d new, %d updated, %d unchanged, %d requests", broadcaster_id,
             counts.new, counts.updated, counts.unchanged, fetched.requests,
             extra={"broadcaster_id": str(broadcaster_id)})
    return summary


async def crawl_all(streamers: list[dict], *, helix: HelixClient, db: ClipDB, started_at: str | datetime,
                    ended_at: str | datetime, window: timedelta = timedelta(hours=24), first: int = 100,
                    concurrency: int | None = None) -> list[dict]:
    """Crawl many streamers in this process; at most ``concurrency`` at once (None: all at once).

    The shared limiter inside ``helix`` bounds requests; ``concurrency`` bounds
    streamers (``1`` is the seed system's sequential crawl).
    """
    gate = asyncio.Semaphore(concurrency) if concurrency else None

    async def one(streamer: dict) -> dict:
        if gate is None:
            return await crawl_streamer(streamer["broadcaster_id"], helix=helix, db=db, started_at=started_at,
                                        ended_at=ended_at, window=window, first=first)
        async with gate:
            return await crawl_streamer(streamer["broadcaster_id"], helix=helix, db=db, started_at=started_at,
                                        ended_at=ended_at, window=window, first=first)

    return list(await asyncio.gather(*(one(s) for s in streamers)))
