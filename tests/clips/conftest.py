"""Fixtures for the clip collector: a fresh fake Helix per test, a clip database in tmp_path."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pipelines.clips.db import ClipDB
from pipelines.clips.fake_helix import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, FakeHelix, fake_streamers
from pipelines.clips.helix import HelixClient
from pipelines.clips.limits import LocalLimiter

START = datetime(2024, 1, 1, tzinfo=timezone.utc)
END = START + timedelta(hours=24)


@pytest.fixture
async def start_fake():
    """Start fake Helix servers with the given options; all are stopped after the test."""
    servers: list[FakeHelix] = []

    async def start(**options) -> FakeHelix:
        server = FakeHelix(**options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def fake(start_fake) -> FakeHelix:
    return await start_fake()


@pytest.fixture
def db(tmp_path) -> ClipDB:
    return ClipDB(tmp_path / "clips.sqlite3")


@pytest.fixture
def streamers():
    return fake_streamers


@pytest.fixture
def span():
    """The fake's default clip span: 2024-01-01T00:00Z for 24 hours."""
    return START, END


@pytest.fixture
def client_for():
    """Make a Helix client with the fake's credentials and quick backoff."""

    def make(server: FakeHelix, limiter=None, **options) -> HelixClient:
        options.setdefault("backoff", 0.01)
        return HelixClient(server.helix_url, DEFAULT_CLIENT_ID, DEFAULT_TOKEN,
                           limiter=limiter if limiter is not None else LocalLimiter(max_in_flight=16), **options)

    return make
