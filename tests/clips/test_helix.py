"""The Helix client against the fake server over real HTTP."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from pipelines.clips.exceptions import ClipsConfigError, HelixAuthError, HelixRequestError, HelixUnavailable
from pipelines.clips.helix import HelixClient, windows
from pipelines.clips.limits import LocalLimiter


def ids(clips):
    return sorted(c["id"] for c in clips)


async def test_follows_the_cursor(fake, client_for, span):
    async with client_for(fake) as helix:
        fetched = await helix.fetch_clips("100001", *span, first=7)
    assert ids(fetched.clips) == ids(fake.clips("100001", *span))
    assert len(fetched.clips) == 30 and fetched.pages == fetched.requests == 5 == fake.requests


def test_windows_split_a_range():
    from datetime import datetime, timezone

    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert windows(start, start + timedelta(hours=10), timedelta(hours=4)) == [
        (start, start + timedelta(hours=4)),
        (start + timedelta(hours=4), start + timedelta(hours=8)),
        (start + timedelta(hours=8), start + timedelta(hours=10)),
    ]
    with pytest.raises(ValueError):
        windows(start, start, timedelta(hours=1))


async def test_windows_find_every_clip_once(fake, client_for, span):
    start, end = span
    async with client_for(fake) as helix:
        fetched = await helix.fetch_clips("100001", start - timedelta(hours=6), end + timedelta(hours=6),
                                          window=timedelta(hours=5), first=4)
    assert fetched.windows == 8
    assert ids(fetched.clips) == ids(fake.clips("100001"))
    assert fetched.requests > fetched.windows  # several pages in some windows


async def test_bad_credentials_raise_a_clear_error_without_retrying(fake, client_for):
    async with HelixClient(fake.helix_url, "dojo-fake-client-id", "expired", limiter=LocalLimiter()) as helix:
        with pytest.raises(HelixAuthError) as info:
            await helix.clips_page("100001", *fake_span(fake))
    message = str(info.value)
    assert "Invalid OAuth token" in message and "DOJO_HELIX_TOKEN" in message
    assert not info.value.retryable and fake.requests == 1
    with pytest.raises(ClipsConfigError, match="DOJO_HELIX_CLIENT_ID"):
        HelixClient(fake.helix_url, "", "token")


def fake_span(server):
    return server.config.anchor, server.config.anchor + timedelta(hours=server.config.span_hours)


async def test_bad_parameters_raise_helix_message(fake, client_for):
    async with client_for(fake) as helix:
        with pytest.raises(HelixRequestError, match='Invalid "broadcaster_id"') as info:
            await helix.clips_page("ninja", *fake_span(fake))
        assert info.value.context["http_status"] == 400 and not info.value.retryable
        with pytest.raises(HelixRequestError, match='Invalid "first"'):
            await helix.clips_page("100001", *fake_span(fake), first=500)
        with pytest.raises(HelixRequestError, match="1..100"):
            await helix.fetch_clips("100001", *fake_span(fake), first=0)
    assert fake.requests == 2


async def test_retries_5xx_and_dropped_connections(start_fake, client_for):
    server = await start_fake(error_rate=0.25, drop_rate=0.15, fault_seed=3)
    async with client_for(server, max_attempts=20) as helix:
        fetched = await helix.fetch_clips("100001", *fake_span(server), first=3)
    assert ids(fetched.clips) == ids(server.clips("100001"))
    assert server.injected_5xx > 0 and server.dropped > 0
    assert fetched.retries == server.injected_5xx + server.dropped
    assert fetched.requests == server.requests == fetched.pages + fetched.retries


async def test_gives_up_after_max_attempts(start_fake, client_for):
    server = await start_fake(error_rate=1.0)
    async with client_for(server, max_attempts=3) as helix:
        with pytest.raises(HelixUnavailable, match="failed 3 times; last failure: HTTP 5"):
            await helix.clips_page("100001", *fake_span(server))
    assert server.requests == 3


async def test_429_pauses_until_reset_and_resends(fake, client_for):
    fake.throttle_next(3, reset_after=0.2)
    limiter = LocalLimiter(max_in_flight=4)
    async with client_for(fake, limiter=limiter) as helix:
        t0 = time.monotonic()
        fetched = await helix.fetch_clips("100001", *fake_span(fake), first=100)
    assert len(fetched.clips) == 30 and fetched.throttled == 3 and fetched.retries == 0
    # Ratelimit-Reset is whole seconds: the pause lasts until the next whole second at least.
    assert time.monotonic() - t0 >= 0.2
    assert fake.bucket_exceeded == 0


async def test_zero_remaining_pauses_one_token(fake, client_for):
    limiter = LocalLimiter()
    helix = client_for(fake, limiter=limiter)
    helix._observe(200, {"Ratelimit-Limit": "20", "Ratelimit-Remaining": "0", "Ratelimit-Reset": str(time.time() + 2)})
    assert 0.05 < limiter.paused_for <= 0.1
    helix._observe(200, {"Ratelimit-Limit": "20", "Ratelimit-Remaining": "5", "Ratelimit-Reset": str(time.time() + 9)})
    assert limiter.paused_for <= 0.1
