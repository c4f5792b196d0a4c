"""Flows and restarts against real Ray: fan-out of any size, and live work that survives an actor restart."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time

import pytest
import ray

from .support import new_queue, wait_for_job

pytestmark = pytest.mark.ray

TTL = 5.0


@pytest.fixture(scope="module")
def flow_settings(settings):
    return dataclasses.replace(settings, job_modules=(*settings.job_modules, "tests.integration.flowjobs"),
                               lease_ttl=TTL)


def _wait_for(actor, job_id: str, statuses: tuple, limit: float = 180.0) -> dict:
    return wait_for_job(actor, job_id, lambda job: job["status"] in statuses, f"reached {statuses}", limit, every=0.2)


def test_a_fan_out_of_more_children_than_one_call_carries_completes(flow_settings, ray_cluster):
    name, actor = new_queue(flow_settings, "fan")
    [parent] = ray.get(actor.enqueue.remote([{"type": "it_fan_out", "queue": name, "payload": {"children": 1_500}}]))
    done = _wait_for(actor, parent["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", done["error"]
    assert done["result"] == {"children": 1_500, "succeeded": 1_500, "distinct": 1_500}
    assert done["children"]["total"] == 1_500 and done["children"]["counts"] == {"succeeded": 1_500}


def test_a_job_heartbeating_for_twice_its_ttl_across_an_actor_restart_runs_once(flow_settings, ray_cluster):
    name, actor = new_queue(flow_settings, "restart")
    [job] = ray.get(actor.enqueue.remote([{"type": "it_long", "queue": name, "payload": {"seconds": 2 * TTL + 2}}]))
    _wait_for(actor, job["id"], ("running",))
    time.sleep(TTL + 1)  # silent (heartbeats only) for longer than its TTL: the stored expiry has passed
    first = ray.get(actor.ping.remote())
    os.kill(first["pid"], signal.SIGKILL)
    done = _wait_for(actor, job["id"], ("succeeded", "failed", "cancelled"))
    assert ray.get(actor.ping.remote())["pid"] != first["pid"], "the actor was not restarted"
    assert done["status"] == "succeeded" and done["attempts"] == 1, done["history"]
    assert [h["outcome"] for h in done["history"]] == ["succeeded"], done["history"]


def test_killing_the_actor_after_each_child_enqueue_runs_the_callback_once_with_exact_counts(
        flow_settings, ray_cluster, tmp_path):
    """SIGKILL the queue actor right after each of 12 child enqueues commits (before the parent's next save)."""
    name, actor = new_queue(flow_settings, "killflow")
    log = tmp_path / "flow.jsonl"
    chunks, size = 12, 25
    [parent] = ray.get(actor.enqueue.remote([{"type": "it_fan_out_killing", "queue": name,
                                               "payload": {"chunks": chunks, "size": size, "log": str(log)}}]))
    done = _wait_for(actor, parent["id"], ("succeeded", "failed", "cancelled"), limit=240)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 2 and len(set(lines[0]["killed"])) == chunks, lines  # a fresh actor killed each time
    assert lines[1] == {"callback": chunks * size, "statuses": ["succeeded"], "distinct": chunks * size}, \
        f"the callback must run once, after every child is final: {lines[1]}, {done['children']}, {done['history']}"
    # One perform attempt and one callback attempt, neither lost nor retried.
    assert done["status"] == "succeeded", done["error"]
    assert [h["outcome"] for h in done["history"]] == ["succeeded", "succeeded"], done["history"]
    counts = done["children"]
    assert counts["total"] == counts["final"] == chunks * size and counts["counts"] == {"succeeded": chunks * size}
    rows = ray.get(actor.children.remote(parent["id"]))
    assert len(rows) == chunks * size and {r["status"] for r in rows} == {"succeeded"}
