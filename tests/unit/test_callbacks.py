"""Webhooks out (actors/callbacks.py), without Ray: the spec, the outbox rows, signing, and sending to a
real aiohttp receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

from actors import callbacks
from actors.exceptions import InvalidInput
from actors.views import public

from .conftest import T0, open_store

KEY = b"k" * 32


def run_to(q, status: str, now=T0, **spec) -> dict:
    [(job, _)] = q.enqueue_many([{"type": "echo", **spec}], now)
    [lease] = q.lease("r1", None, 1, now + 1)
    if status == "succeeded":
        q.complete(lease["token"], {"ok": True}, now + 2)
    else:
        q.fail(lease["token"], {"type": "Boom", "message": "no"}, now + 2, retry=False)
    return job


@pytest.mark.parametrize("value, message", [
    ("https://x", "must be an object"),
    ({"url": "ftp://example.com/x"}, "http(s) URL"),
    ({"url": "https://"}, "http(s) URL"),
    ({"url": "https://u:p@example.com/"}, "credentials"),
    ({"url": "https://example.com/", "events": []}, "non-empty list"),
    ({"url": "https://example.com/", "events": ["done"]}, "unknown statuses ['done']"),
    ({"url": "https://example.com/", "secret": "x"}, "unknown callback fields"),
    ({"url": "https://example.com/" + "a" * 3000}, "at most 2048"),
])
def test_a_bad_callback_is_refused_at_enqueue_and_nothing_is_added(q, value, message):
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        q.enqueue_many([{"type": "echo", "callback": value}], T0)
    q.store.commit()
    assert q.store.list_jobs(limit=10) == []


def test_the_delivery_is_committed_with_the_status_that_calls_for_it(q, path):
    job = run_to(q, "succeeded", callback={"url": "https://example.com/hook"})
    assert job["callback"] == {"url": "https://example.com/hook", "events": list(callbacks.DEFAULT_EVENTS)}
    [staged] = q.take_deliveries()
    assert staged["event"] == "succeeded" and staged["job_id"] == job["id"] and staged["state"] == "pending"
    # Before the commit nothing is durable: a fresh connection sees no delivery (and no success).
    assert open_store(path).pending_deliveries() == []
    q.store.commit()
    [row] = open_store(path).pending_deliveries()
    assert row["id"] == staged["id"] and open_store(path).get_job(job["id"])["status"] == "succeeded"


def test_only_the_statuses_a_callback_names_are_delivered(q):
    run_to(q, "succeeded", callback={"url": "https://example.com/hook", "events": ["failed"]})
    failed = run_to(q, "failed", callback={"url": "https://example.com/hook", "events": ["running", "failed"]})
    run_to(q, "failed")  # no callback at all
    assert [(d["job_id"], d["event"]) for d in q.take_deliveries()] == [(failed["id"], "running"),
                                                                        (failed["id"], "failed")]


def test_signatures_verify_and_reject_tampering_and_replays():
    body = b'{"id":"j_1.3"}'
    t = int(time.time())
    header = callbacks.signature(KEY, body, t)
    assert callbacks.verify(KEY, body, header)
    assert not callbacks.verify(KEY, body + b" ", header)
    assert not callbacks.verify(b"other", body, header)
    assert not callbacks.verify(KEY, body, header, now=t + callbacks.REPLAY_WINDOW_S + 1)
    assert not callbacks.verify(KEY, body, "t=notanumber,v1=00")


def test_private_addresses_are_refused_unless_the_host_is_allowed():
    assert "not a public address" in callbacks.refusal("http://127.0.0.1:9/x", set())
    assert "not a public address" in callbacks.refusal("http://localhost:9/x", {"127.0.0.1"})
    assert "not a public address" in callbacks.refusal("http://10.1.2.3/x", set())
    assert "not a public address" in callbacks.refusal("http://169.254.169.254/latest/meta-data", set())
    assert callbacks.refusal("http://127.0.0.1:9/x", {"127.0.0.1"}) is None


class Receiver:
    """A real HTTP server answering each POST with the next status of ``answers`` (then 200)."""

    def __init__(self, answers=()):
        self.answers = list(answers)
        self.got: list[tuple[dict, bytes]] = []

    async def handle(self, request):
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    async def __aenter__(self):
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()


async def drive(sender, q, until, rounds=200):
    """Tick the sender as if time passed quickly (retries are due at once), committing what it staged."""
    for i in range(rounds):
        sender.tick(time.time() + 3600 * (i + 1))
        await asyncio.sleep(0.02)
        q.store.commit()
        if until():
            return
    raise AssertionError("the deliveries did not settle")


def sender_for(q):
    return callbacks.Sender(q.store, KEY, lambda job_id: public(q.get(job_id)), allowed={"127.0.0.1"})


async def test_a_delivery_is_signed_retried_on_5xx_and_logged(q):
    async with Receiver([500, 503]) as receiver:
        job = run_to(q, "succeeded", callback={"url": receiver.url})
        q.store.commit()
        sender = sender_for(q)
        assert len(sender.pending) == 1  # loaded from the store, as after a restart
        await drive(sender, q, lambda: not sender.pending)
        await sender.close()
    assert len(receiver.got) == 3
    headers, body = receiver.got[-1]
    assert callbacks.verify(KEY, body, headers["X-Dojo-Signature"])
    sent = json.loads(body)
    assert sent["event"] == "succeeded" and sent["job"]["id"] == job["id"] and sent["job"]["result"] == {"ok": True}
    assert {h["X-Dojo-Delivery"] for h, _ in receiver.got} == {sent["id"]}  # one id for every try
    [delivery] = q.store.deliveries_of(job["id"])
    assert delivery["state"] == "delivered" and delivery["attempts"] == 3
    assert [entry["status"] for entry in delivery["log"]] == [500, 503, 200]
    assert q.store.pending_deliveries() == []


async def test_a_4xx_ends_the_delivery_and_a_refused_host_is_never_called(q):
    async with Receiver([404]) as receiver:
        gone = run_to(q, "succeeded", callback={"url": receiver.url})
        private = run_to(q, "succeeded", callback={"url": receiver.url.replace("127.0.0.1", "localhost")})
        q.store.commit()
        sender = sender_for(q)
        sender.add(q.take_deliveries())
        await drive(sender, q, lambda: not sender.pending)
        await sender.close()
    assert len(receiver.got) == 1
    [first] = q.store.deliveries_of(gone["id"])
    assert first["state"] == "failed" and first["log"][-1]["status"] == 404
    [second] = q.store.deliveries_of(private["id"])
    assert second["state"] == "failed" and "not a public address" in second["log"][-1]["error"]


def test_deleting_a_job_deletes_its_deliveries(q):
    job = run_to(q, "succeeded", callback={"url": "https://example.com/hook"})
    q.store.commit()
    assert q.store.deliveries_of(job["id"])
    q.store.delete_job(job["id"])
    q.store.commit()
    assert q.store.deliveries_of(job["id"]) == [] and q.store.pending_deliveries() == []
