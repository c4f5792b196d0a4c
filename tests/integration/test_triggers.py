"""Triggers and hooks over HTTP on a real cluster: a trigger fires once per message across a queue actor
kill; a signed webhook (no token) wakes a job waiting for approval, whose callback then reports it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp
import pytest
import ray

from actors import callbacks
from tests.integration.test_durable import durable_settings  # noqa: F401
from tests.unit.test_callbacks import Receiver

from .support import new_queue, wait_for_job

pytestmark = pytest.mark.ray
FINAL = ("succeeded", "failed", "cancelled", "expired")


async def _send(s, method, url, body=None, headers=None, raw=None):
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    for _ in range(100):  # ride out the actor's restart (503)
        async with s.request(method, url, data=data, headers={"Content-Type": "application/json", **(headers or {})}) as r:
            answer = await r.json()
            if r.status != 503:
                return r.status, answer
        await asyncio.sleep(0.2)
    raise AssertionError(f"{method} {url} kept answering 503")


async def test_a_trigger_fires_once_per_message_across_an_actor_kill(durable_settings, ray_cluster, api,  # noqa: F811
                                                                   headers):
    name, actor = new_queue(durable_settings, "trig")
    async with aiohttp.ClientSession() as s:
        status, trigger = await _send(s, "PUT", f"{api}/v1/triggers/each-order?queue={name}",
                                      {"channel": "orders", "match": {"kind": "order"},
                                       "job": {"type": "echo", "payload": {"source": "trigger"}}}, headers)
        assert status == 200, trigger
        for n in range(10):
            if n == 5:
                os.kill(ray.get(actor.ping.remote())["pid"], signal.SIGKILL)
            status, _ = await _send(s, "POST", f"{api}/v1/channels/orders/messages?queue={name}",
                                    {"kind": "order", "n": n}, headers)
            assert status == 201
        await _send(s, "POST", f"{api}/v1/channels/orders/messages?queue={name}", {"kind": "refund"}, headers)
        status, page = await _send(s, "GET", f"{api}/v1/jobs?queue={name}&limit=100", headers=headers)
    made = [j for j in page["jobs"] if j["payload"].get("source") == "trigger"]
    assert sorted(j["payload"]["message"]["n"] for j in made) == list(range(10))
    status, listed = 0, None
    async with aiohttp.ClientSession() as s:
        status, listed = await _send(s, "GET", f"{api}/v1/triggers?queue={name}", headers=headers)
    assert listed["triggers"][0]["fired"] == 10


async def test_a_signed_webhook_approves_a_waiting_job_whose_callback_reports_it(durable_settings, ray_cluster,  # noqa: F811
                                                                                api, headers, tmp_path, settings):
    name, actor = new_queue(durable_settings, "hook")
    async with Receiver() as receiver, aiohttp.ClientSession() as s:
        status, job = await _send(s, "POST", f"{api}/v1/jobs", {
            "type": "it_approval", "queue": name, "payload": {"dir": str(tmp_path), "timeout": 300},
            "callback": {"url": receiver.url, "events": ["succeeded"]}}, headers)
        assert status == 201, job
        wait_for_job(actor, job["id"], lambda j: j["status"] == "sleeping", "began to wait")
        status, hook = await _send(s, "PUT", f"{api}/v1/hooks/review-tool?queue={name}", {"channel": "approvals"},
                                   headers)
        assert status == 200 and len(hook["secret"]) == 64
        body = json.dumps({"job": job["id"], "by": "alice"}).encode()
        signed = {"X-Dojo-Signature": callbacks.signature(hook["secret"].encode(), body, int(time.time()))}
        url = f"{api}/v1/hooks/review-tool?queue={name}"
        status, answer = await _send(s, "POST", url, raw=b'{"job": "x"}', headers={"X-Dojo-Signature": "t=1,v1=00"})
        assert status == 401, answer
        status, answer = await _send(s, "POST", url, raw=body, headers=signed)  # no bearer token: the signature
        assert status == 202 and answer["channel"] == "approvals", answer
        status, answer = await _send(s, "POST", url, raw=body, headers=signed)
        assert status == 401 and "replay" in answer["message"], answer
        done = wait_for_job(actor, job["id"], lambda j: j["status"] in FINAL, "finished")
        assert done["status"] == "succeeded" and done["result"]["approved"] == {"job": job["id"], "by": "alice"}
        for _ in range(100):
            if receiver.got:
                break
            await asyncio.sleep(0.1)
    [(sent_headers, sent)] = receiver.got
    assert callbacks.verify(callbacks.signing_key(settings), sent, sent_headers["X-Dojo-Signature"])
    assert json.loads(sent)["job"]["result"]["approved"]["by"] == "alice"
