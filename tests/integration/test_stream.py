"""One ordered stream per attempt: progress, log lines and captured output reach the job's events in the
order the job made them, all before its final status, and cost a handful of actor calls, not one each.

Real Ray, real runner processes; the call count is the actor's own (``stats()["stream_calls"]``).
"""

from __future__ import annotations

import dataclasses

import pytest
import ray

from .support import new_queue, wait_for_job

pytestmark = pytest.mark.ray

N = 500


@pytest.fixture(scope="module")
def stream_settings(settings):
    return dataclasses.replace(settings, job_modules=(*settings.job_modules, "tests.integration.streamjobs"))


def _events(actor, job_id: str) -> list[dict]:
    events, after = [], 0
    while True:
        page = ray.get(actor.events.remote(f"job:{job_id}", after, 1000))
        if not page:
            return events
        events += page
        after = page[-1]["seq"]


def _check_order(events: list[dict], n: int) -> None:
    """Every report and line of the one attempt, in emission order, then the final status last."""
    emitted = []
    for event in events:
        if event["kind"] == "progress":
            emitted.append(("progress", event["data"]["i"]))
        elif event["kind"] == "log":
            emitted += [("log", line) for line in event["data"]["lines"]]
    assert emitted == [item for i in range(n) for item in (("progress", i), ("log", f"log {i}"), ("log", f"out {i}"))]
    last_item = max(i for i, e in enumerate(events) if e["kind"] in ("progress", "log"))
    final = [i for i, e in enumerate(events) if e["kind"] == "status" and e["data"]["status"] == "succeeded"]
    assert final == [len(events) - 1] and last_item < final[0]


def test_a_jobs_progress_and_lines_arrive_in_emission_order_before_its_status_in_few_calls(stream_settings,
                                                                                         ray_cluster):
    name, actor = new_queue(stream_settings, "stream")
    before = ray.get(actor.stats.remote())["stream_calls"]
    [job] = ray.get(actor.enqueue.remote([{"type": "chatty", "queue": name, "payload": {"n": N}}]))
    wait_for_job(actor, job["id"], lambda j: j["status"] == "succeeded", "succeeded")
    _check_order(_events(actor, job["id"]), N)
    calls = ray.get(actor.stats.remote())["stream_calls"] - before
    # 500 progress reports and 1,000 lines: with a call per item that was 1,500 calls.
    assert 1 <= calls <= 50, calls


def test_attempts_sharing_a_runner_keep_their_own_order(stream_settings, ray_cluster):
    name, actor = new_queue(stream_settings, "streamt")
    jobs = ray.get(actor.enqueue.remote([{"type": "chatty-threads", "queue": name, "payload": {"n": 200}}
                                         for _ in range(4)]))
    for job in jobs:
        wait_for_job(actor, job["id"], lambda j: j["status"] == "succeeded", "succeeded")
    for job in jobs:
        _check_order(_events(actor, job["id"]), 200)


def test_progress_made_while_the_heartbeat_long_polls_arrives_at_once(stream_settings, ray_cluster):
    """The runner nudges its long-polling heartbeat (here 10 s long): the report does not wait it out."""
    name, actor = new_queue(dataclasses.replace(stream_settings, lease_ttl=30.0), "streamq")
    [job] = ray.get(actor.enqueue.remote([{"type": "quiet-then-progress", "queue": name, "payload": {"quiet": 2.0}}]))
    done = wait_for_job(actor, job["id"], lambda j: j["status"] == "succeeded", "succeeded")
    [report] = [e for e in _events(actor, job["id"]) if e["kind"] == "progress"]
    assert report["at"] - report["data"]["sent_at"] < 1.0, report
    assert done["progress"]["stage"] == "late"
