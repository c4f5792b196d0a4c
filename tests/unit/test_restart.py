"""A queue restart keeps live work (no Ray): leases restart their clock at the reload."""

import random

import pipelines.sample  # noqa: F401  (registers the sample job types)
from actors.queue import JobQueue, Limits
from actors.store import Store

T0 = 1_700_000_000.0
TTL = 10.0


def test_a_lease_silent_for_longer_than_its_ttl_survives_a_restart_while_its_worker_heartbeats(tmp_path):
    path = tmp_path / "q.sqlite3"
    q = JobQueue("default", Store(path), Limits(lease_ttl=TTL), rng=random.Random(1), now=T0)
    q.enqueue_many([{"type": "echo"}], T0)
    [lease] = q.lease("r", None, 1, T0)
    q.store.commit()
    for beat in range(1, 5):  # heartbeats extend the lease in memory; a crash keeps only the commit
        assert q.heartbeat([lease["token"]], T0 + beat * TTL / 2) == {lease["token"]: "ok"}
    q.store.close()
    restart = T0 + 2 * TTL
    q = JobQueue("default", Store(path), Limits(lease_ttl=TTL), rng=random.Random(1), now=restart)
    assert q.expire(restart + 1) == ([], [])
    assert q.heartbeat([lease["token"]], restart + TTL / 2) == {lease["token"]: "ok"}
    job = q.complete(lease["token"], "done", restart + TTL)
    assert job["status"] == "succeeded" and job["attempts"] == 1


def test_an_attempt_whose_worker_is_gone_is_still_lost_after_a_restart(tmp_path):
    path = tmp_path / "q.sqlite3"
    q = JobQueue("default", Store(path), Limits(lease_ttl=TTL), rng=random.Random(1), now=T0)
    q.enqueue_many([{"type": "echo", "max_attempts": 2}], T0)
    [lease] = q.lease("r", None, 1, T0)
    q.store.commit()
    q.store.close()
    restart = T0 + 2 * TTL
    q = JobQueue("default", Store(path), Limits(lease_ttl=TTL), rng=random.Random(1), now=restart)
    assert q.expire(restart + TTL + 1) == ([], [])  # a grace for the worker to reach the new actor
    lost, _ = q.expire(restart + 2 * TTL + 1)  # no heartbeat came after the restart
    assert [job["history"][-1]["outcome"] for job in lost] == ["lost"]
