"""Scale to zero and back with Ray's real autoscaler, on one machine (fake multi-node provider).

The module starts its own fake autoscaling cluster (``cluster.py``) on free
ports and stops exactly that cluster afterwards; the scenarios run in driver
processes (``drive.py``) because this pytest process may already be connected
to the session's plain local cluster, and one process holds one Ray
connection. Idle timeout: 10 s; at most 2 worker nodes in all (``max_workers``);
``cpu_worker``: 2 CPUs, at most 2 nodes; ``gpu_worker``: 1 CPU + 1 GPU, at most 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from .cluster import RESULT, ROOT, FakeCluster, free_port

pytestmark = pytest.mark.slow

IDLE_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    fake = FakeCluster(idle_timeout_s=IDLE_TIMEOUT_S, cpu_max=2, gpu_max=1, max_workers=2,
                       env={"DOJO_MAX_BUNDLES_PER_SHAPE": "8"})
    fake.start()
    fake.state_dir = str(tmp_path_factory.mktemp("dojo-scale-state"))
    yield fake
    fake.stop()


def drive(cluster, scenario: str, timeout: float = 280) -> dict:
    env = cluster.driver_env(DOJO_STATE_DIR=cluster.state_dir, DOJO_JOB_MODULES="tests.scale.jobs",
                             DOJO_LEASE_TTL="5", DOJO_SQLITE_SYNC="NORMAL")
    proc = subprocess.run([sys.executable, "-m", "tests.scale.drive", scenario], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    assert proc.returncode == 0 and lines, f"scenario {scenario} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1][len(RESULT):])


def test_an_empty_queue_asks_the_autoscaler_for_nothing(cluster):
    seen = drive(cluster, "empty")
    assert seen["workers"] == {}
    assert seen["requested"] in (None, [])
    assert seen["demands"].startswith("(no resource demands)"), seen["demands"]
    assert seen["aggregator"] is None  # an idle queue does not even create the aggregator


def test_a_burst_of_cpu_jobs_stays_within_max_workers_and_releases_the_nodes(cluster):
    seen = drive(cluster, "burst")
    assert seen["statuses"] == ["succeeded"] * 50
    assert seen["most_total"] <= 2, seen["most"]
    assert 1 <= len(seen["nodes_used"]) <= 2
    assert "cpu_worker" in {seen["seen"][n] for n in seen["nodes_used"]}
    assert 1 <= seen["peak_request"] <= 8  # the backlog was told, bounded by DOJO_MAX_BUNDLES_PER_SHAPE
    assert seen["requested_after"] == []
    assert seen["release_s"] <= IDLE_TIMEOUT_S + 15


def test_a_gpu_job_brings_up_a_gpu_node_which_goes_when_idle_and_comes_back(cluster):
    seen = drive(cluster, "gpu")
    assert "gpu_worker" not in seen["before"].values()
    first, second = seen["first"], seen["second"]
    assert first["status"] == "succeeded" and second["status"] == "succeeded"
    node = first["history"][-1]["node"]
    assert first["result"]["node"] == node
    assert seen["node_types"][node] == "gpu_worker"
    assert seen["release_s"] <= IDLE_TIMEOUT_S + 15
    assert seen["requested_when_idle"] == []  # nothing keeps the released node wanted
    again = second["history"][-1]["node"]
    assert again != node and seen["node_types"][again] == "gpu_worker"  # a new node, brought by the job


def test_jobs_on_a_node_that_dies_run_again_on_another_node(cluster):
    seen = drive(cluster, "kill")
    assert [j["status"] for j in seen["jobs"]] == ["succeeded"] * 4, seen["jobs"]
    assert seen["hit"]
    for job in seen["jobs"]:
        if job["id"] in seen["hit"]:
            lost, won = job["history"][0], job["history"][-1]
            assert lost["node"] == seen["victim"] and lost["outcome"] != "succeeded", job["history"]
            assert won["outcome"] == "succeeded" and won["node"] != seen["victim"]
    assert seen["running_after"] == 0  # nothing stuck


@pytest.fixture(scope="module")
def deployed(cluster, tmp_path_factory) -> dict:
    """The deploy step of cluster.yaml, `RAY_ADDRESS=<head> dojo up`, on the running autoscaling cluster."""
    port = free_port()
    env = cluster.driver_env(DOJO_STATE_DIR=str(tmp_path_factory.mktemp("dojo-up")), DOJO_PORT=str(port),
                             DOJO_JOB_MODULES="tests.scale.jobs")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "dojo"), "up"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads(proc.stdout[: proc.stdout.rindex("}") + 1])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        healthy = response.status == 200
    return {"info": info, "healthy": healthy, **drive(cluster, "placement")}


def off_head(deployed, match) -> list[dict]:
    return [a for a in deployed["actors"] if match(a) and a["node"] != deployed["head"]]


def test_dojo_up_connects_to_the_running_cluster_and_keeps_the_queue_actors_on_the_head(deployed):
    assert deployed["info"]["started_ray"] is False  # connected; did not start a Ray of its own
    assert deployed["healthy"]
    assert "queue:default" in {a["name"] for a in deployed["actors"]}
    assert off_head(deployed, lambda a: a["class"] in ("QueueService", "ScalingService")) == []
    # Not asserted: the API's Serve replica and proxy (num_cpus=0, not pinned by serve/deployment.py)
    # may land on a worker node that is up at deploy time (serve/deployment.py should pin them to the head).
