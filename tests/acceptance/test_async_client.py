"""``serve.client.AsyncClient`` method by method against Serve on 127.0.0.1 (real HTTP and WebSocket).

A dropped connection is a real one: the client goes through a TCP relay of
this module that can cut every connection it carries.
"""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from serve.client import ApiError, AsyncClient

pytestmark = pytest.mark.ray

DECK = "# 一\nNote: 非同期のテストです。\n"


class Relay:
    """A TCP relay to the API; ``cut()`` aborts every connection it carries (both ends)."""

    def __init__(self, port: int):
        self.port = port
        self.opened = 0
        self.links: set[asyncio.StreamWriter] = set()
        self.server = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader, writer) -> None:
        self.opened += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.links |= {writer, up_writer}

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}

    def cut(self) -> None:
        for writer in list(self.links):
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def client(api, settings):
    async with AsyncClient(api, settings.api_token) as c:
        yield c


async def test_submit_get_and_wait(client):
    job = await client.submit("countdown", {"steps": 2, "interval": 0.05})
    assert job["status"] == "queued" and job["type"] == "countdown"
    assert (await client.get(job["id"]))["id"] == job["id"]
    done = await client.wait(job["id"], progress=False)
    assert done["status"] == "succeeded" and done["result"] == {"steps": 2}


async def test_submit_many_and_list(client):
    jobs = await client.submit_many([{"type": "echo", "payload": {"n": i}} for i in range(3)])
    assert [j["payload"] for j in jobs] == [{"n": i} for i in range(3)]
    for job in jobs:
        await client.wait(job["id"], progress=False)
    listed = await client.list(type="echo", status="succeeded", limit=500)
    assert {j["id"] for j in jobs} <= {j["id"] for j in listed["jobs"]}


async def test_cancel_retry_delete_and_stats(client):
    job = await client.submit("countdown", {"steps": 200, "interval": 0.05})
    cancelled = await client.cancel(job["id"])
    assert cancelled["status"] == "cancelled"
    again = await client.retry(job["id"])
    assert again["status"] in ("queued", "running")
    await client.cancel(job["id"])
    assert (await client.get(job["id"]))["status"] == "cancelled"
    stats = await client.stats()
    assert isinstance(stats, dict) and stats
    await client.delete(job["id"])
    with pytest.raises(ApiError) as missing:
        await client.get(job["id"])
    assert missing.value.status == 404


async def test_errors_are_api_errors(api, client):
    with pytest.raises(ApiError) as unknown:
        await client.submit("no-such-type")
    assert unknown.value.status == 422 and "unknown job type" in str(unknown.value)
    async with AsyncClient(api, "wrong-token") as stranger:
        with pytest.raises(ApiError) as refused:
            await stranger.get("j_00000000000000000000000")
        assert refused.value.status == 401
    with pytest.raises(ApiError):
        async for _ in client.events("j_0000000000000000000000"):
            pass


async def test_events_without_follow_are_the_stored_backlog(client):
    job = await client.submit("countdown", {"steps": 2, "interval": 0.01})
    await client.wait(job["id"], progress=False)
    events = [e async for e in client.events(job["id"], follow=False)]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["data"]["status"] == "succeeded"
    later = [e async for e in client.events(job["id"], after=2, follow=False)]
    assert [e["seq"] for e in later] == [e["seq"] for e in events[2:]]


async def test_events_resume_after_a_dropped_connection(api, settings):
    relay = Relay(settings.port)
    url = await relay.start()
    try:
        async with AsyncClient(url, settings.api_token) as c:
            job = await c.submit("countdown", {"steps": 12, "interval": 0.15})
            seen = []
            async for event in c.events(job["id"]):
                seen.append(event)
                if len(seen) == 4:
                    relay.cut()  # mid-stream: the next events must come over a new connection
        assert relay.opened >= 2  # the first stream, the resumed one (the submit may share the first)
        assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1)), [e["seq"] for e in seen]
        assert seen[-1]["kind"] == "status" and seen[-1]["data"]["status"] == "succeeded"
        assert sum(e["kind"] == "progress" for e in seen) >= 12
    finally:
        await relay.close()


@pytest.mark.slow
async def test_render_and_outputs(client, tmp_path):
    (tmp_path / "deck.md").write_text(DECK, encoding="utf-8")
    job = await client.render(str(tmp_path / "deck.md"), resolution="320x180", subtitles=False)
    assert job["type"] == "render"
    done = await client.wait(job["id"], progress=False)
    assert done["status"] == "succeeded", done.get("error")
    urls = (await client.outputs(job["id"]))["urls"]
    video = urls["video"] if urls["video"].startswith("http") else client.url + urls["video"]
    with urllib.request.urlopen(video, timeout=30) as response:
        assert response.read(12)[4:8] == b"ftyp"
