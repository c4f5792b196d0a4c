"""Promise 3: a cancel or a timeout stops exactly one job (real Ray, real runner processes, real children).

Eight jobs share one runner process (a threaded type) or one leased batch (a
serial type). One of them is stopped; the others must succeed with their
first attempt, and the stopped one's child process must be gone.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import ray

from .support import new_queue, wait_until

pytestmark = pytest.mark.ray

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def iso_settings(settings):
    # A lease long enough that a runner starved of CPU on a busy 2-core machine is not taken for dead:
    # these tests are about stops, not about lost workers.
    return dataclasses.replace(settings, job_modules=(*settings.job_modules, "tests.integration.stoppable"),
                               lease_ttl=10.0)


def _jobs(actor, ids: list[str]) -> list[dict]:
    return ray.get([actor.get.remote(i) for i in ids])


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _run(iso_settings, job_type: str, before: list[dict], after: list[dict], block: float, how: str):
    """Enqueue ``before``, one blocking job, ``after``; stop the blocker by ``how``; return (blocker, others)."""
    name, actor = new_queue(iso_settings, "iso" + how[:1])
    blocker_spec = {"type": job_type, "queue": name, "payload": {"block": block}}
    if how == "timeout":
        blocker_spec["timeout"] = 5.0
    specs = [{"type": job_type, "queue": name, "payload": p} for p in before] + [blocker_spec] + \
            [{"type": job_type, "queue": name, "payload": p} for p in after]
    jobs = ray.get(actor.enqueue.remote(specs))
    ids = [j["id"] for j in jobs]
    blocker_id = ids[len(before)]
    started = wait_until(lambda: (ray.get(actor.get.remote(blocker_id)).get("progress") or {}).get("stage"),
                    "the blocking job to start")
    assert started in ("child", "blocking")
    if how == "cancel":
        ray.get(actor.cancel.remote(blocker_id))
    done = wait_until(lambda: (lambda js: js if all(j["status"] in FINAL for j in js) else None)(_jobs(actor, ids)),
                 "every job to finish")
    blocker = next(j for j in done if j["id"] == blocker_id)
    others = [j for j in done if j["id"] != blocker_id]
    return blocker, others


def _assert_only_the_blocker_stopped(blocker: dict, others: list[dict], how: str):
    expected = "cancelled" if how == "cancel" else "failed"
    assert blocker["status"] == expected, blocker
    if how == "timeout":
        assert blocker["error"]["type"] == "Timeout", blocker["error"]
    bad = [(j["status"], j["attempts"], j["error"]) for j in others if j["status"] != "succeeded" or j["attempts"] != 1]
    assert not bad, f"{len(bad)} innocent jobs were hurt: {bad[:3]}"
    assert all([h["outcome"] for h in j["history"]] == ["succeeded"] for j in others), \
        [j["history"] for j in others if len(j["history"]) != 1][:2]


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_stopping_one_of_eight_threaded_jobs_leaves_the_other_seven_alone(iso_settings, ray_cluster, how):
    blocker, others = _run(iso_settings, "iso_threaded_child", [{"seconds": 3}] * 3, [{"seconds": 3}] * 4,
                           block=120, how=how)
    _assert_only_the_blocker_stopped(blocker, others, how)
    pid = blocker["progress"]["pid"]
    wait_until(lambda: _gone(pid), f"the stopped job's child {pid} to be killed", 30)


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_stopping_one_job_of_a_serial_batch_leaves_the_rest_of_the_batch_alone(iso_settings, ray_cluster, how):
    blocker, others = _run(iso_settings, "iso_serial_child", [{"seconds": 0}], [{"seconds": 0}] * 30,
                           block=120, how=how)
    _assert_only_the_blocker_stopped(blocker, others, how)
    pid = blocker["progress"]["pid"]
    wait_until(lambda: _gone(pid), f"the stopped job's child {pid} to be killed", 30)


def test_a_threaded_job_that_ignores_the_stop_does_not_fail_its_neighbours(iso_settings, ray_cluster):
    blocker, others = _run(iso_settings, "iso_threaded_stubborn", [{"seconds": 4}] * 3, [{"seconds": 4}] * 4,
                           block=600, how="cancel")
    _assert_only_the_blocker_stopped(blocker, others, "cancel")


def test_a_serial_job_that_ignores_the_stop_gives_back_the_rest_of_its_batch(iso_settings, ray_cluster):
    blocker, others = _run(iso_settings, "iso_serial_stubborn", [{"seconds": 0}], [{"seconds": 0}] * 30,
                           block=600, how="cancel")
    _assert_only_the_blocker_stopped(blocker, others, "cancel")


def test_a_process_isolated_job_that_ignores_the_stop_ends_its_own_process_only(iso_settings, ray_cluster):
    blocker, others = _run(iso_settings, "iso_alone_stubborn", [{"seconds": 0}] * 2, [{"seconds": 0}] * 10,
                           block=600, how="cancel")
    _assert_only_the_blocker_stopped(blocker, others, "cancel")
    runner_pid = blocker["history"][-1]["pid"]
    assert all(h["pid"] != runner_pid for j in others for h in j["history"] if h["started_at"] > blocker["started_at"])
    wait_until(lambda: _gone(runner_pid), f"the stubborn job's runner process {runner_pid} to end", 60)
