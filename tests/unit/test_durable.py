"""Durable steps, sleeps and waits in the queue rules, without Ray (actors/durable.py)."""

from __future__ import annotations

import pytest

from actors.durable import Steps, StepMismatch, matches
from actors.exceptions import InvalidInput, StaleLease
from actors.queue import Limits

from .conftest import T0, reopen


@pytest.fixture
def limits():
    return Limits(lease_ttl=10, max_result_bytes=100)


def started(q, now=T0, **spec):
    [(job, _)] = q.enqueue_many([{"type": "echo", **spec}], now)
    [lease] = q.lease("r1", None, 1, now)
    return job, lease


def test_steps_are_recorded_once_in_order_and_fenced(q):
    job, lease = started(q, max_attempts=3, backoff={"strategy": "fixed", "delay": 1, "jitter": 0})
    q.record_step(lease["token"], job["id"], 0, "a", {"x": 1}, T0 + 1)
    q.record_step(lease["token"], job["id"], 0, "a", {"x": 1}, T0 + 1)  # a repeated report
    with pytest.raises(InvalidInput, match="position 2"):
        q.record_step(lease["token"], job["id"], 2, "c", None, T0 + 1)
    with pytest.raises(InvalidInput, match="step 'big'"):
        q.record_step(lease["token"], job["id"], 1, "big", "x" * 200, T0 + 1)
    with pytest.raises(StaleLease):
        q.record_step(lease["token"] + 99, job["id"], 1, "b", None, T0 + 1)
    assert [s["name"] for s in q.get(job["id"])["steps"]] == ["a"]
    q.fail(lease["token"], "boom", T0 + 2)
    [again] = q.lease("r1", None, 1, T0 + 100)
    assert again["steps"][0]["result"] == {"x": 1}  # the next attempt replays it


def test_a_sleep_spends_no_attempt_holds_no_lease_and_wakes_on_time_after_a_restart(q, path):
    job, lease = started(q)
    q.suspend(lease["token"], job["id"], T0 + 30, None, T0 + 1)
    asleep = q.get(job["id"])
    assert asleep["status"] == "sleeping" and asleep["lease"] is None and asleep["attempts"] == 0
    assert asleep["history"][-1]["outcome"] == "suspended"
    q = reopen(q, path, now=T0 + 50)
    assert q.lease("r1", None, 1, T0 + 29) == []
    [woken] = q.lease("r1", None, 1, T0 + 30)
    assert woken["job_id"] == job["id"] and woken["attempt"] == 1 and q.get(job["id"])["wake"] is None


def wait(q, job, lease, match, until=T0 + 100):
    return q.suspend(lease["token"], job["id"], until,
                     {"channel": "approvals", "match": match, "step": "wait#1", "index": 0}, T0 + 1)


def test_a_wait_wakes_on_a_matching_message_only_and_across_a_restart(q, path):
    job, lease = started(q)
    wait(q, job, lease, {"job": job["id"]})
    q = reopen(q, path, now=T0 + 50)
    q.publish("approvals", {"job": "other"}, T0 + 60)
    q.publish("other-channel", {"job": job["id"]}, T0 + 60)
    assert q.get(job["id"])["status"] == "sleeping"
    q.publish("approvals", {"job": job["id"], "by": "alice"}, T0 + 61)
    resumed = q.get(job["id"])
    assert resumed["status"] == "queued" and resumed["steps"][-1]["name"] == "wait#1"
    assert resumed["steps"][-1]["result"]["message"] == {"job": job["id"], "by": "alice"}
    q.publish("approvals", {"job": job["id"], "by": "bob"}, T0 + 62)  # a later message changes nothing
    assert len(q.get(job["id"])["steps"]) == 1


def test_a_message_since_the_job_was_created_ends_a_wait_at_once(q):
    [(job, _)] = q.enqueue_many([{"type": "echo"}], T0)
    q.publish("approvals", {"job": job["id"]}, T0 + 0.5)
    [lease] = q.lease("r1", None, 1, T0 + 1)
    q.store.commit()
    wait(q, job, lease, {"job": job["id"]})
    assert q.get(job["id"])["status"] == "queued"


def test_a_wait_times_out_into_a_recorded_timeout_and_a_sleeping_job_can_be_cancelled(q):
    job, lease = started(q)
    wait(q, job, lease, {"job": job["id"]}, until=T0 + 10)
    q.promote_due(T0 + 10)
    timed_out = q.get(job["id"])
    assert timed_out["status"] == "queued" and timed_out["steps"][-1]["result"] == {"timeout": True}
    [again] = q.lease("r1", None, 1, T0 + 10)
    assert again["job_id"] == job["id"] and again["steps"] == timed_out["steps"]
    other, lease2 = started(q, now=T0 + 11)
    wait(q, other, lease2, {})
    q.cancel(other["id"], T0 + 12)
    q.publish("approvals", {"anything": 1}, T0 + 13)
    assert q.get(other["id"])["status"] == "cancelled"


def test_the_step_log_replays_by_position():
    steps = Steps([{"name": "a", "result": 1}, {"name": "b", "result": 2}])
    assert steps.next("a") == (0, {"name": "a", "result": 1})
    with pytest.raises(StepMismatch, match="'c' now but was 'b'"):
        steps.next("c")
    fresh = Steps([{"name": "a", "result": 1}])
    fresh.next("a")
    with pytest.raises(ValueError, match="unique"):
        fresh.next("a")
    assert matches({"a": 1, "b": 2}, {"a": 1}) and not matches({"a": 2}, {"a": 1}) and matches("x", None)
    assert not matches("x", {"a": 1})
