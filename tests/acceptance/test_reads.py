"""History reads through Serve with real clients: a long replay handed over to the live tail, and search."""

from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import pytest

pytestmark = pytest.mark.ray

BATCH = 500


async def post_json(session, url, body, headers):
    async with session.post(url, data=json.dumps(body), headers={**headers, "Content-Type": "application/json"}) as r:
        answer = await r.json()
        assert r.status in (200, 201), answer
        return answer


async def last_gseq(session, api, queue, headers) -> int:
    async with session.get(f"{api}/v1/queues/{queue}", headers=headers) as r:
        return (await r.json())["last_gseq"]


def delayed(queue: str, n: int, tag: str) -> list[dict]:
    """Jobs that wait a day: one event each, and nothing runs (the history is exactly what we wrote)."""
    return [{"type": "echo", "queue": queue, "delay": 86400, "payload": {"tag": tag, "n": i}} for i in range(n)]


async def test_a_follower_replaying_a_long_history_gets_every_event_once_in_order_with_those_of_its_replay(
        api, headers):
    queue = f"replay{os.getpid()}"
    async with aiohttp.ClientSession() as s:
        for _ in range(8):  # 4,000 events: several pages of history
            await post_json(s, f"{api}/v1/jobs", delayed(queue, BATCH, "before"), headers)
        before = await last_gseq(s, api, queue, headers)
        assert before >= 8 * BATCH

        got: list[int] = []
        submitted = asyncio.Event()

        async def submit_during_replay():
            while len(got) < 300:  # the follower has begun its replay
                await asyncio.sleep(0.01)
            for _ in range(4):
                await post_json(s, f"{api}/v1/jobs", delayed(queue, 100, "during"), headers)
                await asyncio.sleep(0.05)
            submitted.set()

        async def follow():
            async with s.ws_connect(f"{api}/v1/queues/{queue}/events?after=0", headers=headers) as ws:
                last = None  # the queue's last gseq once every submission is in: one request, not one per event
                while True:
                    if submitted.is_set() and last is None:
                        last = await last_gseq(s, api, queue, headers)
                    if last is not None and got and got[-1] >= last:
                        return
                    try:
                        message = await asyncio.wait_for(ws.receive(), 5)
                    except asyncio.TimeoutError:
                        continue
                    assert message.type == aiohttp.WSMsgType.TEXT, message
                    event = json.loads(message.data)
                    got.append(event["gseq"])
                    if len(got) % 500 == 0:
                        await asyncio.sleep(0.2)  # a slow reader: the replay waits for it

        submitter = asyncio.ensure_future(submit_during_replay())
        await asyncio.wait_for(follow(), 120)
        await submitter
        end = await last_gseq(s, api, queue, headers)
        assert got == list(range(1, end + 1))  # every event once, in gseq order, no gap
        assert end >= before + 400  # including the ones committed while it replayed
        # The events that came during the replay are really there, whichever way they arrived.
        async with s.get(f"{api}/v1/queues/{queue}/events", params={"after": before, "limit": 1000},
                         headers=headers) as r:
            during = (await r.json())["events"]
        assert [e["gseq"] for e in during] == list(range(before + 1, end + 1))
        assert {e["data"]["status"] for e in during} == {"scheduled"}


async def test_search_finds_payload_and_error_substrings_ascii_and_japanese(api, headers):
    queue = f"search{os.getpid()}"
    tag = f"t{os.getpid()}"
    async with aiohttp.ClientSession() as s:
        jobs = await post_json(s, f"{api}/v1/jobs", [
            {"type": "echo", "queue": queue, "delay": 86400, "payload": {"title": f"{tag} 今日の配信ハイライト"}},
            {"type": "echo", "queue": queue, "delay": 86400, "payload": {"title": f"{tag} weekly-digest"}},
        ], headers)
        failing = await post_json(s, f"{api}/v1/jobs", {"type": "flaky", "queue": queue,
                                                        "payload": {"permanent": True, "tag": tag}}, headers)

        async def search(q: str) -> list[str]:
            async with s.get(f"{api}/v1/jobs", params={"queue": queue, "q": q}, headers=headers) as r:
                body = await r.json()
                assert r.status == 200, body
                return [j["id"] for j in body["jobs"]]

        assert await search("配信ハイ") == [jobs[0]["id"]]
        assert await search("配信") == [jobs[0]["id"]]
        assert await search("ly-dig") == [jobs[1]["id"]]
        assert sorted(await search(tag)) == sorted([*(j["id"] for j in jobs), failing["id"]])
        assert await search(jobs[1]["id"][8:22]) == [jobs[1]["id"]]  # ms, counter and random part
        assert await search("no such text anywhere") == []
        for _ in range(300):  # the error is searchable once the job has failed
            if await search("told to fail perm") == [failing["id"]]:
                break
            await asyncio.sleep(0.1)
        assert await search("told to fail perm") == [failing["id"]]
        assert await search("PermanentFail") == [failing["id"]]
