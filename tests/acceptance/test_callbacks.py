"""Webhooks out through the API: a job's callback reaches a real receiver on 127.0.0.1, signed, and its
deliveries are readable; bad callbacks are refused. (The session's cluster allows 127.0.0.1 only, through
DOJO_CALLBACK_HOSTS in tests/conftest.py.)"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from actors import callbacks
from tests.acceptance.test_api import get, post, wait_status
from tests.unit.test_callbacks import Receiver

pytestmark = pytest.mark.ray

QUEUE = "callbacks"


async def deliveries_settled(session, api, headers, job_id, count=1, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        status, body = await get(session, f"{api}/v1/jobs/{job_id}/deliveries", headers)
        assert status == 200, body
        done = [d for d in body["deliveries"] if d["state"] != "pending"]
        if len(done) >= count:
            return body["deliveries"]
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


async def test_a_finished_job_calls_back_signed_and_its_delivery_is_logged(api, headers, settings):
    async with Receiver([503]) as receiver, aiohttp.ClientSession() as s:
        status, job = await post(s, f"{api}/v1/jobs", {"type": "echo", "payload": {"hello": "world"}, "queue": QUEUE,
                                                       "callback": {"url": receiver.url, "events": ["succeeded"]}},
                                 headers)
        assert status == 201, job
        assert job["callback"] == {"url": receiver.url, "events": ["succeeded"]}
        done = await wait_status(s, api, headers, job["id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded"
        [delivery] = await deliveries_settled(s, api, headers, job["id"])
    assert delivery["state"] == "delivered" and [e["status"] for e in delivery["log"]] == [503, 200]
    assert len(receiver.got) == 2
    sent_headers, body = receiver.got[-1]
    assert callbacks.verify(callbacks.signing_key(settings), body, sent_headers["X-Dojo-Signature"])
    sent = json.loads(body)
    assert sent["event"] == "succeeded" and sent["id"] == delivery["id"] == sent_headers["X-Dojo-Delivery"]
    assert sent["job"]["id"] == job["id"] and sent["job"]["status"] == "succeeded"


async def test_a_callback_to_a_host_not_allowed_is_never_called(api, headers):
    async with Receiver() as receiver, aiohttp.ClientSession() as s:
        url = receiver.url.replace("127.0.0.1", "localhost")  # loopback by name: not in DOJO_CALLBACK_HOSTS
        status, job = await post(s, f"{api}/v1/jobs", {"type": "echo", "queue": QUEUE, "callback": {"url": url}},
                                 headers)
        assert status == 201, job
        [delivery] = await deliveries_settled(s, api, headers, job["id"])
    assert delivery["state"] == "failed" and "not a public address" in delivery["log"][-1]["error"]
    assert receiver.got == []


@pytest.mark.parametrize("callback", [{"url": "file:///etc/passwd"}, {"url": "https://example.com", "events": ["x"]},
                                      "https://example.com"])
async def test_a_bad_callback_is_a_422_that_enqueues_nothing(api, headers, callback):
    async with aiohttp.ClientSession() as s:
        _, before = await get(s, f"{api}/v1/jobs?queue={QUEUE}&limit=1000", headers)
        status, body = await post(s, f"{api}/v1/jobs", {"type": "echo", "queue": QUEUE, "callback": callback},
                                  headers)
        assert status == 422 and "callback" in body["message"], body
        _, after = await get(s, f"{api}/v1/jobs?queue={QUEUE}&limit=1000", headers)
    assert len(after.get("jobs", [])) == len(before.get("jobs", []))
