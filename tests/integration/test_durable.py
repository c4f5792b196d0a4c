"""Durable steps, sleeps and waits on a real cluster (actors/durable.py): a finished step never runs
again, a sleeping job holds no runner and survives a queue actor kill, a wait ends on the right message
or its timeout."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest
import ray

from .support import get_job, new_queue, wait_for_job

pytestmark = pytest.mark.ray
FINAL = ("succeeded", "failed", "cancelled", "expired")


@pytest.fixture(scope="module")
def durable_settings(settings):
    return dataclasses.replace(settings, job_modules=(*settings.job_modules, "tests.integration.durablejobs"),
                               lease_ttl=3.0)


def _runs(folder: Path, name: str) -> list[str]:
    path = folder / f"{name}.runs"
    return path.read_text().split() if path.exists() else []


def test_steps_that_finished_are_not_run_again_after_the_worker_is_killed(durable_settings, ray_cluster, tmp_path):
    name, actor = new_queue(durable_settings, "steps")
    [job] = ray.get(actor.enqueue.remote([{"type": "it_three_steps", "queue": name, "payload": {"dir": str(tmp_path)}}]))
    running = wait_for_job(actor, job["id"], lambda j: len(j.get("steps") or []) == 2 and (j.get("lease") or {}).get("pid"),
                        "committed two steps")
    os.kill(running["lease"]["pid"], signal.SIGKILL)  # the worker dies inside step 3
    done = wait_for_job(actor, job["id"], lambda j: j["status"] in FINAL, "finished")
    assert done["status"] == "succeeded", done["history"]
    assert done["attempts"] == 2 and [h["outcome"] for h in done["history"]] == ["lost", "succeeded"]
    assert _runs(tmp_path, "fetch") == ["1"] and _runs(tmp_path, "transform") == ["1"]
    assert _runs(tmp_path, "publish") == ["2"]
    assert done["result"] == {"fetch": "fetch by attempt 1", "transform": "transform by attempt 1",
                              "publish": "publish by attempt 2"}
    assert [s["name"] for s in done["steps"]] == ["fetch", "transform", "publish"]


def test_a_changed_step_list_fails_the_job_clearly(durable_settings, ray_cluster):
    name, actor = new_queue(durable_settings, "renamed")
    [job] = ray.get(actor.enqueue.remote([{"type": "it_renamed_steps", "queue": name}]))
    done = wait_for_job(actor, job["id"], lambda j: j["status"] in FINAL, "finished")
    assert done["status"] == "failed" and done["attempts"] == 2
    assert done["history"][-1]["error"]["type"] == "StepMismatch"
    assert "'uno' now but was 'one'" in done["history"][-1]["error"]["message"]


def test_a_sleep_holds_no_runner_and_survives_a_queue_actor_kill(durable_settings, ray_cluster, tmp_path):
    name, actor = new_queue(durable_settings, "sleep")
    [job] = ray.get(actor.enqueue.remote([{"type": "it_sleeper", "queue": name,
                                           "payload": {"dir": str(tmp_path), "seconds": 4}}]))
    asleep = wait_for_job(actor, job["id"], lambda j: j["status"] == "sleeping", "slept")
    assert asleep["lease"] is None and asleep["wake"]["at"] == asleep["run_at"]
    assert [h["outcome"] for h in asleep["history"]] == ["suspended"] and asleep["attempts"] == 0
    assert ray.get(actor.stats.remote())["counts"].get("running", 0) == 0
    first = ray.get(actor.ping.remote())
    os.kill(first["pid"], signal.SIGKILL)  # the queue actor dies during the sleep
    done = wait_for_job(actor, job["id"], lambda j: j["status"] in FINAL, "finished")
    assert ray.get(actor.ping.remote())["pid"] != first["pid"], "the actor was not restarted"
    assert done["status"] == "succeeded", done["history"]
    assert done["result"]["woke_at"] >= done["result"]["until"] == asleep["wake"]["at"]
    assert _runs(tmp_path, "before") == ["1"]  # replayed, not run again, after the sleep
    assert [h["outcome"] for h in done["history"]] == ["suspended", "succeeded"] and done["attempts"] == 1


def test_a_wait_ends_on_its_message_only(durable_settings, ray_cluster, tmp_path):
    name, actor = new_queue(durable_settings, "wait")
    [job] = ray.get(actor.enqueue.remote([{"type": "it_approval", "queue": name,
                                           "payload": {"dir": str(tmp_path), "timeout": 300}}]))
    waiting = wait_for_job(actor, job["id"], lambda j: j["status"] == "sleeping", "began to wait")
    assert waiting["wake"]["channel"] == "approvals" and waiting["wake"]["match"] == {"job": job["id"]}
    ray.get(actor.publish.remote("approvals", {"job": "j_someone_else", "by": "mallory"}))
    ray.get(actor.publish.remote("approved", {"job": job["id"], "by": "wrong channel"}))
    time.sleep(1.0)
    assert get_job(actor, job["id"])["status"] == "sleeping"
    ray.get(actor.publish.remote("approvals", {"job": job["id"], "by": "alice"}))
    done = wait_for_job(actor, job["id"], lambda j: j["status"] in FINAL, "finished")
    assert done["status"] == "succeeded" and done["result"]["approved"] == {"job": job["id"], "by": "alice"}
    assert _runs(tmp_path, "prepared") == ["1"]


def test_a_message_published_before_the_wait_began_counts(durable_settings, ray_cluster, tmp_path):
    name, actor = new_queue(durable_settings, "early")
    [job] = ray.get(actor.enqueue.remote([{"type": "it_approval", "queue": name, "delay": 2,
                                           "payload": {"dir": str(tmp_path), "timeout": 300}}]))
    ray.get(actor.publish.remote("approvals", {"job": job["id"], "by": "early bird"}))  # the job has not started
    done = wait_for_job(actor, job["id"], lambda j: j["status"] in FINAL, "finished")
    assert done["status"] == "succeeded" and done["result"]["approved"]["by"] == "early bird"


def test_a_wait_times_out_into_an_exception_the_job_handles(durable_settings, ray_cluster, tmp_path):
    name, actor = new_queue(durable_settings, "timeout")
    [job] = ray.get(actor.enqueue.remote([{"type": "it_approval", "queue": name,
                                           "payload": {"dir": str(tmp_path), "timeout": 1}}]))
    done = wait_for_job(actor, job["id"], lambda j: j["status"] in FINAL, "finished")
    assert done["status"] == "succeeded" and done["result"] == {"approved": None, "timed_out": True}
    assert [s["name"] for s in done["steps"]] == ["prepared", "wait#1"]
    assert done["steps"][1]["result"] == {"timeout": True}
