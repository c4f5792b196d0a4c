"""Crawling many streamers against the fake Helix: exactly once, updates, and the server's bucket respected."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from pipelines.clips.crawl import crawl_all, crawl_streamer, time_range
from pipelines.clips.limits import LocalLimiter


def truth(server, streamers, span):
    return sorted(c["id"] for s in streamers for c in server.clips(s["broadcaster_id"], *span))


async def test_every_clip_exactly_once_despite_5xx_drops_and_429s(start_fake, client_for, db, streamers, span):
    server = await start_fake(error_rate=0.05, drop_rate=0.01, fault_seed=11)
    server.throttle_next(8, reset_after=0.1)
    people = streamers(20)
    async with client_for(server, limiter=LocalLimiter(max_in_flight=16), max_attempts=10) as helix:
        summaries = await crawl_all(people, helix=helix, db=db, started_at=span[0], ended_at=span[1],
                                    window=timedelta(hours=12), first=20)
    expected = truth(server, people, span)
    assert len(expected) == 600
    assert db.clip_ids() == expected  # a primary key: present at most once; equal: present at least once
    assert sum(s["new"] for s in summaries) == 600 and sum(s["updated"] + s["unchanged"] for s in summaries) == 0
    assert Counter(s["broadcaster_id"] for s in summaries) == Counter(p["broadcaster_id"] for p in people)
    assert server.injected_5xx > 0 and server.throttled == 8
    assert sum(s["requests"] for s in summaries) == server.requests


async def test_a_second_run_only_updates_and_a_third_changes_nothing(fake, client_for, db, streamers, span):
    people = streamers(5)
    async with client_for(fake) as helix:
        first = await crawl_all(people, helix=helix, db=db, started_at=span[0], ended_at=span[1])
        fake.bump(retitle=True)
        second = await crawl_all(people, helix=helix, db=db, started_at=span[0], ended_at=span[1])
        third = await crawl_all(people, helix=helix, db=db, started_at=span[0], ended_at=span[1])

    def total(summaries):
        return {k: sum(s[k] for s in summaries) for k in ("new", "updated", "unchanged")}

    assert total(first) == {"new": 150, "updated": 0, "unchanged": 0}
    assert total(second) == {"new": 0, "updated": 150, "unchanged": 0}
    assert total(third) == {"new": 0, "updated": 0, "unchanged": 150}
    stored = {c["id"]: c for c in db.clips()}
    assert all(stored[c["id"]]["view_count"] == c["view_count"] and stored[c["id"]]["title"] == c["title"]
               for p in people for c in fake.clips(p["broadcaster_id"]))


async def test_local_limiter_never_exceeds_the_servers_bucket(start_fake, client_for, db, streamers, span):
    server = await start_fake(rate=20, burst=5, latency=0.02)
    people = streamers(10)
    # A generous jitter allowance: on a loaded 2-core CI machine a request may reach the server late.
    limiter = LocalLimiter.under(20, 5, max_in_flight=8, jitter_s=0.3)
    async with client_for(server, limiter=limiter) as helix:
        summaries = await crawl_all(people, helix=helix, db=db, started_at=span[0], ended_at=span[1], first=20)
    assert server.bucket_exceeded == 0 and server.throttled == 0
    assert server.requests == sum(s["requests"] for s in summaries) == 20
    assert server.max_in_flight <= 8
    assert len(db.clip_ids()) == 300


async def test_without_a_limiter_the_server_counts_the_excess(start_fake, client_for, db, streamers, span):
    # The control for the test above: the referee does see a client that ignores the bucket.
    server = await start_fake(rate=25, burst=5)
    async with client_for(server, limiter=LocalLimiter(max_in_flight=16), max_throttled=500) as helix:
        await crawl_all(streamers(5), helix=helix, db=db, started_at=span[0], ended_at=span[1], first=20)
    assert server.bucket_exceeded > 0
    assert len(db.clip_ids()) == 150  # 429s were resent after the pause


async def test_crawl_streamer_returns_its_summary(fake, client_for, db, span):
    async with client_for(fake) as helix:
        summary = await crawl_streamer("100001", helix=helix, db=db, started_at="2024-01-01T00:00:00Z",
                                       ended_at="2024-01-02T00:00:00Z", first=20)
    assert {k: summary[k] for k in ("broadcaster_id", "new", "updated", "unchanged", "requests")} == {
        "broadcaster_id": "100001", "new": 30, "updated": 0, "unchanged": 0, "requests": 2}


def test_time_range_defaults_to_the_lookback_up_to_the_next_hour(span):
    from datetime import datetime, timezone

    now = datetime(2024, 1, 1, 10, 20, tzinfo=timezone.utc)
    start, end = time_range(24, now=now)
    assert end == datetime(2024, 1, 1, 11, tzinfo=timezone.utc) and end - start == timedelta(hours=24)
    assert time_range(1, "2024-01-01T00:00:00Z", "2024-01-01T05:00:00Z") == (
        span[0], span[0] + timedelta(hours=5))
