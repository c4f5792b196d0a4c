"""Stopping one attempt: the queue's side (interrupt, release) and the job type's isolation option (no Ray)."""

import subprocess
import sys
import threading
import time

import pytest

from actors import stopping
from actors.exceptions import ConfigError
from actors.jobs import JobType, register_type

from .conftest import T0, make_queue


@pytest.fixture
def q(path):
    return make_queue(path, now=T0)


def test_an_interrupted_attempt_is_queued_again_without_spending_an_attempt(q):
    [(job, _)] = q.enqueue_many([{"type": "echo", "max_attempts": 1}], T0)
    [lease] = q.lease("r", None, 1, T0)
    q.interrupt([lease["token"]], T0 + 1, "interrupted: a neighbour ignored its stop")
    record = q.get(job["id"])
    assert record["status"] == "queued" and record["attempts"] == 0 and record["error"] is None
    assert [h["outcome"] for h in record["history"]] == ["interrupted"]
    [again] = q.lease("r", None, 1, T0 + 2)
    assert again["attempt"] == 1
    assert q.complete(again["token"], None, T0 + 3)["status"] == "succeeded"


def test_a_cancel_requested_before_the_interrupt_wins(q):
    [(job, _)] = q.enqueue_many([{"type": "echo"}], T0)
    [lease] = q.lease("r", None, 1, T0)
    q.jobs[job["id"]]["cancel_requested"] = True
    q.interrupt([lease["token"]], T0 + 1, "interrupted")
    assert q.get(job["id"])["status"] == "cancelled"


def test_isolation_is_thread_or_process_and_process_runs_one_attempt_at_a_time():
    with pytest.raises(ConfigError, match="isolation must be"):
        register_type(JobType(name="bad-isolation", perform=lambda c, p: None, isolation="container"))
    with pytest.raises(ConfigError, match="one attempt per process"):
        register_type(JobType(name="bad-threads", perform=lambda c, p: None, isolation="process", threads=4))


def test_a_stop_kills_the_attempts_own_children_and_leaves_other_attempts_children_alone():
    stopping.install_spawn_hook()
    mine = stopping.ATTEMPTS.begin(1, threading.Event())
    child = subprocess.Popen(["sleep", "60"])
    stopping.ATTEMPTS.end(mine)
    mine.finished.clear()
    other = stopping.ATTEMPTS.begin(2, threading.Event())
    neighbour = subprocess.Popen(["sleep", "60"])
    try:
        assert stopping.stop(mine, "cancel", grace=0.01) is False  # nobody ended it: it is abandoned
        assert mine.cancelled.is_set() and child.wait(timeout=30) == -9
        assert neighbour.poll() is None, "a neighbour's child was killed"
    finally:
        stopping.ATTEMPTS.end(other)
        neighbour.kill()
        neighbour.wait()


class _Actor:
    """Just enough of the queue actor for ``runner.execute`` and a ``Heartbeat`` (no Ray)."""

    def __init__(self, leases: list[dict]):
        self.leases = leases
        self.runner_lease = self.give_back = self
        self.stream = self

    def remote(self, *args):
        return None

    def call(self, method, *args):
        leases, self.leases = self.leases, []
        return leases


def test_a_retiring_runner_finds_every_lease_reported_released_or_interrupted(monkeypatch):
    """An attempt that ended is reported in the same step: a runner that retires at that instant
    must not hand back nothing for it (its process then ends and the job, done, would be lost)."""
    from actors import runner
    from actors.heartbeat import Heartbeat
    from actors.jobs import JobType

    monkeypatch.setattr(sys, "stdout", sys.stdout)  # execute() routes the streams; pytest restores them
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    release = threading.Event()
    registry = {"quick": JobType(name="quick", perform=lambda ctx, p: "done"),
                "slow": JobType(name="slow", perform=lambda ctx, p: release.wait(30))}
    leases = [{"token": 9100 + i, "job_id": f"j{i}", "type": kind, "queue": "q", "attempt": 1, "max_attempts": 1,
               "payload": None} for i, kind in enumerate(["quick", "slow", "quick"])]
    actor = _Actor(leases)
    beat = Heartbeat(actor, "r", "quick", 1.0, actor.call)
    assert beat.lease(3, 0.0) == leases and [p["token"] for p in beat.pending] == [9100, 9101, 9102]
    assert runner.execute(actor, leases[0], registry, beat)["outcome"] == "succeeded"
    slow = threading.Thread(target=runner.execute, args=(actor, leases[1], registry, beat))
    slow.start()
    try:
        while stopping.ATTEMPTS.get(9101) is None:
            time.sleep(0.01)
        beat.retiring.set()
        assert runner.execute(actor, leases[2], registry, beat) is None  # retiring: not begun, given back
        reports, released, interrupted = beat.hand_back(drain=0.1)
    finally:
        release.set()
        slow.join()
    assert [r["token"] for r in reports] == [9100] and released == [9102] and 9101 in interrupted
