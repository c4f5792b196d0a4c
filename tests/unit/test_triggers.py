"""Triggers and hooks in the queue rules, without Ray (actors/triggers.py)."""

from __future__ import annotations

import json

import pytest

from actors import callbacks
from actors.exceptions import InvalidInput, NotFound, Unauthorized

from .conftest import T0, reopen


def put(q, name="on-approval", **data):
    data = {"channel": "approvals", "match": {"ok": True}, "job": {"type": "echo", "payload": {"why": "t"}}, **data}
    return q.triggers.put_trigger(name, data, lambda spec: q.validate(spec, T0), T0)


def made(q) -> list[dict]:
    q.store.commit()
    return [j for j in q.store.list_jobs(limit=100) if (j.get("unique_key") or "").startswith("trigger:")]


@pytest.mark.parametrize("data, message", [
    ({"channel": "bad channel!"}, "channel must be"),
    ({"job": {"type": "nope"}}, "unknown job type 'nope'"),
    ({"job": {"type": "echo", "payload": [1]}}, "payload, if any, is an object"),
    ({"job": {"type": "echo", "unique_key": "x"}}, "no unique_key"),
    ({"match": [1]}, "match must be an object"),
    ({"extra": 1}, "no other fields"),
])
def test_a_bad_trigger_is_refused_and_nothing_is_kept(q, data, message):
    with pytest.raises(Exception, match=message):
        put(q, **data)
    assert q.triggers.triggers == {} and not q.store.dirty


def test_each_matching_message_enqueues_one_job_with_the_message_even_after_a_restart(q, path):
    put(q)
    q.publish("approvals", {"ok": True, "n": 1}, T0 + 1)
    q.publish("approvals", {"ok": False, "n": 2}, T0 + 2)  # no match
    q.publish("other", {"ok": True, "n": 3}, T0 + 3)  # another channel
    [job] = made(q)
    assert job["type"] == "echo" and job["payload"] == {"why": "t", "message": {"ok": True, "n": 1}}
    q = reopen(q, path)
    assert len(made(q)) == 1  # reloading fires nothing again
    q.publish("approvals", {"ok": True, "n": 4}, T0 + 4)
    assert sorted(j["payload"]["message"]["n"] for j in made(q)) == [1, 4]
    assert q.triggers.triggers["on-approval"]["fired"] == 2
    q.triggers.delete_trigger("on-approval")
    q.publish("approvals", {"ok": True, "n": 5}, T0 + 5)
    assert len(made(q)) == 2
    with pytest.raises(NotFound):
        q.triggers.delete_trigger("on-approval")


def test_hooks_verify_their_signature_once_and_hide_their_secret(q, path):
    created = q.triggers.put_hook("review-tool", {"channel": "approvals"}, T0)
    secret = created["secret"]
    assert q.triggers.put_hook("review-tool", {"channel": "approvals2"}, T0).get("secret") is None
    body = json.dumps({"ok": True}).encode()
    header = callbacks.signature(secret.encode(), body, int(T0))
    assert q.triggers.verify("review-tool", body, header, now=T0 + 1)["channel"] == "approvals2"
    with pytest.raises(Unauthorized, match="replay"):
        q.triggers.verify("review-tool", body, header, now=T0 + 2)
    with pytest.raises(Unauthorized):
        q.triggers.verify("review-tool", body + b" ", callbacks.signature(secret.encode(), body, int(T0)), now=T0)
    with pytest.raises(Unauthorized):
        q.triggers.verify("review-tool", body, callbacks.signature(secret.encode(), body, int(T0)), now=T0 + 3600)
    with pytest.raises(Unauthorized):
        q.triggers.verify("review-tool", body, "t=1,v1=é", now=T0)
    with pytest.raises(Unauthorized, match="no such hook"):
        q.triggers.verify("nobody", body, header, now=T0)
    rotated = q.triggers.put_hook("review-tool", {"channel": "approvals", "rotate": True}, T0)["secret"]
    assert rotated != secret
    with pytest.raises(InvalidInput):
        q.triggers.put_hook("bad name!", {"channel": "approvals"}, T0)
    q.store.commit()
    assert "secret" not in json.dumps(q.triggers.view(q.triggers.hooks["review-tool"]))
