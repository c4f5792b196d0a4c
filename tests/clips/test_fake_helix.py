"""The fake Helix speaks Get Clips' wire format and counts what it saw."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import aiohttp
import pytest

from pipelines.clips.fake_helix import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, FakeHelix
from pipelines.clips.helix import CLIP_FIELDS

AUTH = {"Client-Id": DEFAULT_CLIENT_ID, "Authorization": f"Bearer {DEFAULT_TOKEN}"}
RANGE = {"started_at": "2024-01-01T00:00:00Z", "ended_at": "2024-01-02T00:00:00Z"}


async def get(server: FakeHelix, params: dict, headers: dict | None = AUTH) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.helix_url}/clips", params=params, headers=headers or {}) as response:
            return response.status, dict(response.headers), await response.json()


async def test_pages_have_helix_fields_and_cursor_until_the_end(fake, span):
    ids, cursor, pages = [], None, 0
    while True:
        params = {"broadcaster_id": "100001", "first": "7", **RANGE, **({"after": cursor} if cursor else {})}
        status, _, body = await get(fake, params)
        assert status == 200
        assert set(body) == {"data", "pagination"}
        for clip in body["data"]:
            assert tuple(clip) == CLIP_FIELDS
            assert clip["broadcaster_id"] == "100001"
            assert clip["url"] == f"https://clips.twitch.tv/{clip['id']}"
        ids += [c["id"] for c in body["data"]]
        pages += 1
        cursor = body["pagination"].get("cursor")
        if not cursor:
            assert body["pagination"] == {}
            break
    assert pages == 5 and len(ids) == len(set(ids)) == 30
    truth = fake.clips("100001", *span)
    assert ids == [c["id"] for c in truth]
    views = [c["view_count"] for c in truth]
    assert views == sorted(views, reverse=True)  # most viewed first, as Helix lists them


async def test_data_is_deterministic_and_bump_changes_only_views_and_titles():
    a, b, c = FakeHelix(seed=7), FakeHelix(seed=7), FakeHelix(seed=8)
    assert a.clips("100001") == b.clips("100001")
    assert {x["id"] for x in a.clips("100001")}.isdisjoint({x["id"] for x in c.clips("100001")})
    before = a.clips("100001")
    a.bump(retitle=True)
    after = a.clips("100001")
    assert [x["id"] for x in before] == [x["id"] for x in after]
    assert all(y["view_count"] > x["view_count"] and y["title"] != x["title"] for x, y in zip(before, after))


@pytest.mark.parametrize("headers, message", [
    ({}, "OAuth token is missing"),
    ({"Authorization": f"Bearer {DEFAULT_TOKEN}"}, "Client-Id header required"),
    ({"Client-Id": DEFAULT_CLIENT_ID, "Authorization": "Bearer nope"}, "Invalid OAuth token"),
    ({"Client-Id": "other", "Authorization": f"Bearer {DEFAULT_TOKEN}"}, "Client ID and OAuth token do not match"),
])
async def test_bad_credentials_get_twitch_401(fake, headers, message):
    status, _, body = await get(fake, {"broadcaster_id": "100001"}, headers=headers)
    assert status == 401
    assert body == {"error": "Unauthorized", "status": 401, "message": message}


@pytest.mark.parametrize("params, needle", [
    ({}, '"broadcaster_id"'),
    ({"broadcaster_id": "100001", "first": "0"}, '"first"'),
    ({"broadcaster_id": "100001", "first": "101"}, '"first"'),
    ({"broadcaster_id": "100001", "first": "ten"}, '"first"'),
    ({"broadcaster_id": "100001", "started_at": "yesterday"}, '"started_at"'),
    ({"broadcaster_id": "100001", "started_at": "2024-01-01"}, '"started_at"'),
    ({"broadcaster_id": "100001", "started_at": "2024-01-02T00:00:00Z", "ended_at": "2024-01-01T00:00:00Z"},
     '"ended_at"'),
    ({"broadcaster_id": "ninja"}, '"broadcaster_id"'),
    ({"broadcaster_id": "100001", "after": "garbage!"}, '"after"'),
])
async def test_bad_parameters_get_400_with_a_message(fake, params, needle):
    status, _, body = await get(fake, params)
    assert status == 400
    assert body["error"] == "Bad Request" and body["status"] == 400 and needle in body["message"]


async def test_bucket_sends_headers_answers_429_and_counts_the_excess(start_fake):
    server = await start_fake(rate=0.5, burst=3)
    answers = [await get(server, {"broadcaster_id": "100001"}) for _ in range(5)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 429, 429]
    assert [int(h["Ratelimit-Remaining"]) for _, h, _ in answers] == [2, 1, 0, 0, 0]
    assert all(h["Ratelimit-Limit"] == "3" for _, h, _ in answers)
    assert int(answers[-1][1]["Ratelimit-Reset"]) >= time.time() + 5  # 3 tokens at 0.5/s
    assert answers[-1][2]["status"] == 429
    assert server.bucket_exceeded == 2 and server.requests == 5
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/_stats") as response:
            stats = await response.json()
    assert stats["bucket_exceeded"] == 2 and stats["requests"] == 5 and stats["by_status"] == {"200": 3, "429": 2}


async def test_counts_max_in_flight_and_injects_faults(start_fake):
    server = await start_fake(latency=0.05)
    await asyncio.gather(*(get(server, {"broadcaster_id": str(100001 + i)}) for i in range(6)))
    assert server.max_in_flight == 6 and server.in_flight == 0

    failing = await start_fake(error_rate=1.0)
    status, _, body = await get(failing, {"broadcaster_id": "100001"})
    assert status in (500, 502, 503) and body["status"] == status and failing.injected_5xx == 1

    dropping = await start_fake(drop_rate=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await get(dropping, {"broadcaster_id": "100001"})
    assert dropping.dropped == dropping.requests >= 1  # aiohttp may resend a GET once on its own

    throttling = await start_fake()
    throttling.throttle_next(2)
    statuses = [(await get(throttling, {"broadcaster_id": "100001"}))[0] for _ in range(3)]
    assert statuses == [429, 429, 200] and throttling.throttled == 2 and throttling.bucket_exceeded == 0


async def test_known_broadcasters_only():
    server = FakeHelix(broadcasters={"100001": "alice"})
    assert server.clips("100002") == []
    assert {c["broadcaster_name"] for c in server.clips("100001")} == {"alice"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_runs_standalone():
    port = _free_port()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.clips.fake_helix", "--port", str(port), "--seed", "3",
                             "--rate", "50"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/helix/clips",
                                           params={"broadcaster_id": "100001"}, headers=AUTH) as response:
                        assert response.status == 200
                        assert "Ratelimit-Limit" in response.headers
                        assert len((await response.json())["data"]) == 20
                        break
                except aiohttp.ClientConnectionError:
                    assert proc.poll() is None and time.monotonic() < deadline, "fake helix did not start"
                    await asyncio.sleep(0.1)
            async with session.get(f"http://127.0.0.1:{port}/_stats") as response:
                assert (await response.json())["requests"] == 1
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
