"""Flows are crash-exact (no Ray): a parent's child counts live and die with the child rows."""

import copy

import pytest

from actors.jobs import JobContext

from .conftest import T0, make_queue


@pytest.fixture
def q(path):
    return make_queue(path, now=T0)


def crash(q, path, now):
    """What a restart sees: the last commit, nothing staged after it."""
    q.store.close()
    return make_queue(path, q.limits, now=now)


def running_parent(q, **spec):
    [(parent, _)] = q.enqueue_many([{"type": "echo", **spec}], T0)
    [lease] = q.lease("r", [parent["type"]], 1, T0)
    q.store.commit()
    return parent, lease


def test_children_are_counted_in_the_same_commit_as_their_rows(q, path):
    parent, lease = running_parent(q)
    q.enqueue_many([{"type": "echo", "parent_id": parent["id"], "payload": i} for i in range(3)], T0)
    q.store.commit()  # the children are accepted; the actor dies before anything else is saved
    q = crash(q, path, T0 + 1)
    q.complete(lease["token"], None, T0 + 2)
    assert q.get(parent["id"])["status"] == "waiting"
    leases = q.lease("r", ["echo"], 10, T0 + 3)
    for child in leases[:2]:
        q.complete(child["token"], {"n": 1}, T0 + 4)
    assert q.get(parent["id"])["status"] == "waiting", "the parent finished before its last child"
    q.complete(leases[2]["token"], {"n": 1}, T0 + 5)
    record = q.get(parent["id"])
    assert record["status"] == "succeeded" and record["children"]["counts"] == {"succeeded": 3}
    assert record["children"]["sums"] == {"n": 3}


def test_reload_recounts_children_from_the_table(q, path):
    parent, lease = running_parent(q)
    q.enqueue_many([{"type": "echo", "parent_id": parent["id"]} for _ in range(3)], T0)
    leases = q.lease("r", ["echo"], 10, T0)
    q.complete(leases[0]["token"], {"n": 2}, T0 + 1)
    q.fail(leases[1]["token"], "boom", T0 + 1, retry=False)
    stale = {**q.get(parent["id"]), "children": {"total": 1, "final": 0, "counts": {}, "errors": {}, "sums": {}}}
    q.store.put_job(stale)  # a parent row that disagrees with its children's rows
    q.store.commit()
    q = crash(q, path, T0 + 2)
    report = q.get(parent["id"])["children"]
    assert (report["total"], report["final"]) == (3, 2)
    assert report["counts"] == {"succeeded": 1, "failed": 1}
    assert report["sums"] == {"n": 2} and report["errors"] == {"boom": 1}


def test_a_waiting_parent_whose_last_child_finished_before_a_crash_completes_after_it(q, path):
    parent, lease = running_parent(q)
    q.enqueue_many([{"type": "echo", "parent_id": parent["id"]}], T0)
    q.complete(lease["token"], None, T0 + 1)
    [child] = q.lease("r", ["echo"], 1, T0 + 1)
    q.store.commit()
    waiting = copy.deepcopy(q.get(parent["id"]))
    q.complete(child["token"], None, T0 + 2)
    q.store.put_job(waiting)  # the parent's own update was lost with the crash
    q.store.commit()
    q = crash(q, path, T0 + 3)
    q.promote_due(T0 + 3)
    assert q.get(parent["id"])["status"] == "succeeded"


def test_a_retried_parent_does_not_count_children_that_already_finished(q):
    parent, lease = running_parent(q, max_attempts=2)
    specs = [{"type": "echo", "parent_id": parent["id"], "unique_key": f"child-{i}"} for i in range(2)]
    first = [job["id"] for job, _ in q.enqueue_many(specs, T0)]
    for child in q.lease("r", ["echo"], 10, T0 + 1):
        q.complete(child["token"], {"clips": 10}, T0 + 2)
    q.fail(lease["token"], "crawler crashed after fan-out", T0 + 3)
    [retry] = q.lease("r", ["echo"], 1, T0 + 100)
    again = q.enqueue_many(specs, T0 + 100)
    assert [job["id"] for job, _ in again] == first and [created for _, created in again] == [False, False]
    q.complete(retry["token"], None, T0 + 101)
    record = q.get(parent["id"])
    assert record["status"] == "succeeded"
    assert record["children"]["counts"] == {"succeeded": 2} and record["children"]["sums"] == {"clips": 20}


class QueueReporter:
    """A context's reporter backed by a real JobQueue (what the runner's reporter does over Ray)."""

    def __init__(self, q, parent_id):
        self.q, self.parent_id = q, parent_id

    def enqueue(self, specs):
        return [job for job, _ in self.q.enqueue_many([{**s, "parent_id": self.parent_id} for s in specs], T0)]


def test_a_fan_out_larger_than_one_call_is_split_by_the_context(q):
    parent, lease = running_parent(q)
    ctx = JobContext(job_id=parent["id"], type="echo", queue="default", attempt=1, max_attempts=1,
                     reporter=QueueReporter(q, parent["id"]))
    children = ctx.enqueue_many([{"type": "echo", "payload": i} for i in range(2_500)])
    assert len({c["id"] for c in children}) == 2_500
    assert q.get(parent["id"])["children"]["total"] == 2_500
