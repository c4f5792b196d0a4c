"""A queue restart keeps live work (no Ray): leases restart their clock at the reload."""

from actors.queue import Limits

from .conftest import T0, make_queue

TTL = 10.0


def test_a_lease_silent_for_longer_than_its_ttl_survives_a_restart_while_its_worker_heartbeats(path):
    q = make_queue(path, Limits(lease_ttl=TTL), now=T0)
    q.enqueue_many([{"type": "echo"}], T0)
    [lease] = q.lease("r", None, 1, T0)
    q.store.commit()
    for beat in range(1, 5):  # heartbeats extend the lease in memory; a crash keeps only the commit
        assert q.heartbeat([lease["token"]], T0 + beat * TTL / 2) == {lease["token"]: "ok"}
    q.store.close()
    restart = T0 + 2 * TTL
    q = make_queue(path, Limits(lease_ttl=TTL), now=restart)
    assert q.expire(restart + 1) == ([], [])
    assert q.heartbeat([lease["token"]], restart + TTL / 2) == {lease["token"]: "ok"}
    job = q.complete(lease["token"], "done", restart + TTL)
    assert job["status"] == "succeeded" and job["attempts"] == 1


def test_an_attempt_whose_worker_is_gone_is_still_lost_after_a_restart(path):
    q = make_queue(path, Limits(lease_ttl=TTL), now=T0)
    q.enqueue_many([{"type": "echo", "max_attempts": 2}], T0)
    [lease] = q.lease("r", None, 1, T0)
    q.store.commit()
    q.store.close()
    restart = T0 + 2 * TTL
    q = make_queue(path, Limits(lease_ttl=TTL), now=restart)
    assert q.expire(restart + TTL + 1) == ([], [])  # a grace for the worker to reach the new actor
    lost, _ = q.expire(restart + 2 * TTL + 1)  # no heartbeat came after the restart
    assert [job["history"][-1]["outcome"] for job in lost] == ["lost"]
