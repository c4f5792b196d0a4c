"""Scenarios against a running fake autoscaling cluster, one per process.

    RAY_ADDRESS=127.0.0.1:PORT python -m tests.scale.drive gpu

Each scenario drives a queue actor (``DOJO_JOB_MODULES=tests.scale.jobs``),
watches the nodes and the autoscaler, and prints what it saw as one JSON line (after ``RESULT``);
the tests in ``test_autoscaling.py`` judge it. A driver connects to that
cluster with ``ray.init``, which a pytest process that already holds the
session's local cluster cannot do, hence a process of its own.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")  # read when ray is imported

import ray  # noqa: E402

from actors.facade import queue_actor  # noqa: E402
from actors.scaling import SCALING_ACTOR  # noqa: E402
from actors.settings import NAMESPACE, Settings  # noqa: E402
from tests.scale.cluster import RESULT  # noqa: E402

FINAL = ("succeeded", "failed", "cancelled")


def connect() -> None:
    ray.init(address=os.environ["RAY_ADDRESS"], namespace=NAMESPACE, log_to_driver=False,
             logging_level=logging.WARNING, configure_logging=False)


def worker_nodes() -> dict[str, str]:
    """Alive worker nodes: node id -> ``gpu_worker`` / ``cpu_worker`` (by their resources)."""
    out = {}
    for node in ray.nodes():
        resources = node.get("Resources", {})
        if node["Alive"] and "node:__internal_head__" not in resources:
            out[node["NodeID"]] = "gpu_worker" if resources.get("GPU") else "cpu_worker"
    return out


def wait_for(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {predicate.__name__}")
        time.sleep(interval)


def requested_bundles():
    """What ``request_resources`` last asked the autoscaler for (None: never asked)."""
    from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return None if raw is None else json.loads(raw)


def autoscaler_demands() -> str:
    """The 'Demands' section of ``ray status``: the autoscaler's own view of what is wanted."""
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    out = subprocess.run([ray_bin, "status", f"--address={os.environ['RAY_ADDRESS']}"], capture_output=True,
                         text=True, timeout=60).stdout
    return out.split("Demands:", 1)[1].strip() if "Demands:" in out else out


def aggregator_demand() -> dict | None:
    try:
        return ray.get(ray.get_actor(SCALING_ACTOR, namespace=NAMESPACE).demand.remote())
    except ValueError:
        return None


class Queue:
    def __init__(self, name: str):
        self.actor = queue_actor(name, Settings.from_env())
        ray.get(self.actor.ping.remote())

    def enqueue(self, type_name: str, n: int = 1, **payload) -> list[str]:
        specs = [{"type": type_name, "payload": payload} for _ in range(n)]
        return [job["id"] for job in ray.get(self.actor.enqueue.remote(specs))]

    def get(self, job_id: str) -> dict:
        return ray.get(self.actor.get.remote(job_id))

    def wait(self, job_ids: list[str], timeout: float, status: tuple = FINAL) -> list[dict]:
        def done():
            jobs = ray.get([self.actor.get.remote(j) for j in job_ids])
            return jobs if all(j["status"] in status for j in jobs) else None
        done.__name__ = f"{len(job_ids)} jobs {'/'.join(status)}"
        return wait_for(done, timeout, 0.1)


class NodeWatch(threading.Thread):
    """Samples the worker nodes while a scenario runs (the most of each type at once)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.most: dict[str, int] = {}
        self.most_total = 0
        self.seen: dict[str, str] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            nodes = worker_nodes()
            self.seen.update(nodes)
            self.most_total = max(self.most_total, len(nodes))
            for kind in set(nodes.values()):
                self.most[kind] = max(self.most.get(kind, 0), sum(1 for v in nodes.values() if v == kind))
            time.sleep(0.2)


# -- scenarios -----------------------------------------------------------------
def scenario_empty() -> dict:
    """A queue with nothing to do asks the autoscaler for nothing."""
    Queue("idle")
    time.sleep(3)  # several scans and ticks of the actor, a few autoscaler rounds
    return {"workers": worker_nodes(), "requested": requested_bundles(), "demands": autoscaler_demands(),
            "aggregator": aggregator_demand()}


def scenario_gpu() -> dict:
    """Cold start of a GPU node for one job, its release when idle, and the next cold start."""
    queue = Queue("gpu")
    wait_for(lambda: not worker_nodes(), 120, 0.5)
    before = worker_nodes()
    started = time.monotonic()
    [first_id] = queue.enqueue("scale_gpu", seconds=0.5)
    first = queue.wait([first_id], 90)[0]
    cold_s = time.monotonic() - started
    nodes_after_run = worker_nodes()
    node = first["history"][-1]["node"]
    done_at = time.monotonic()
    wait_for(lambda: node not in worker_nodes(), 120, 0.5)
    release_s = time.monotonic() - done_at
    requested_when_idle = requested_bundles()
    [second_id] = queue.enqueue("scale_gpu", seconds=0.2)
    second = queue.wait([second_id], 90)[0]
    return {"before": before, "first": first, "second": second, "cold_s": cold_s, "release_s": release_s,
            "node_types": {**nodes_after_run, **worker_nodes()}, "requested_when_idle": requested_when_idle}


def scenario_burst() -> dict:
    """50 CPU jobs at once on a type capped at two nodes; the nodes go once the work is done."""
    queue = Queue("burst")
    wait_for(lambda: not worker_nodes(), 120, 0.5)  # a node left by another scenario would muddle the count
    watch = NodeWatch()
    watch.start()
    ids = queue.enqueue("scale_cpu", 50, seconds=0.3)
    peak_request = []

    def sample_request():
        while not watch.stop.is_set():
            peak_request.append(len(requested_bundles() or []))
            time.sleep(0.5)

    threading.Thread(target=sample_request, daemon=True).start()
    jobs = queue.wait(ids, 180)
    done_at = time.monotonic()
    wait_for(lambda: "cpu_worker" not in worker_nodes().values(), 120, 0.5)
    release_s = time.monotonic() - done_at
    watch.stop.set()
    return {"statuses": [j["status"] for j in jobs], "nodes_used": sorted({j["history"][-1]["node"] for j in jobs}),
            "most": watch.most, "most_total": watch.most_total, "seen": watch.seen, "release_s": release_s, "peak_request": max(peak_request),
            "requested_after": requested_bundles()}


def _raylet_pid(node_id: str) -> int:
    """The fake node's raylet: the fake provider gives each node its id through the raylet's environment."""
    needle = f"RAY_OVERRIDE_NODE_ID_FOR_TESTING={node_id}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if b"raylet" not in Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]:
                    continue
                if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    return int(entry)
            except OSError:
                continue
    raise LookupError(f"no raylet for node {node_id}")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def scenario_kill() -> dict:
    """A node running jobs disappears (its raylet and every process under it): they run again elsewhere.

    Four 12 s jobs spread over two worker nodes; one node is killed mid-run. (The fake provider keeps
    listing a node killed behind its back as "pending", so the autoscaler will not replace it as a
    cloud would; the jobs rerun on the surviving node.)
    """
    queue = Queue("kill")
    seconds = 12
    ids = queue.enqueue("scale_cpu", 4, seconds=seconds)

    def running_on_two_nodes():
        jobs = [queue.get(j) for j in ids]
        nodes = {(j.get("lease") or {}).get("node") for j in jobs if j["status"] == "running"} - {None}
        return jobs if len(nodes) >= 2 else None

    jobs = wait_for(running_on_two_nodes, 90)
    # The node whose jobs started last: the other node's may already be near their end (its node came
    # up first), and a job that finished before the kill was never hit.
    running = [j for j in jobs if j["status"] == "running" and j["lease"].get("node")]
    victim = max(running, key=lambda j: j.get("started_at") or 0)["lease"]["node"]
    time.sleep(1.0)  # well into the attempts
    # Hit: the victim's jobs that will still be running when the kill lands (not one about to finish).
    hit = [j["id"] for j in jobs if j["status"] == "running" and j["lease"]["node"] == victim
           and (j["lease"].get("started_at") or j.get("started_at") or time.time()) + seconds > time.time() + 2]
    for pid in _descendants(_raylet_pid(victim)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed_at = time.monotonic()
    final = queue.wait(ids, 150)
    recovered_s = time.monotonic() - killed_at
    stats = ray.get(queue.actor.stats.remote())
    return {"victim": victim, "hit": hit, "jobs": final, "recovered_s": recovered_s, "running_after": stats["running"]}


def scenario_placement() -> dict:
    """Where dojo's own actors live after `dojo up` on the cluster: the head, all of them."""
    head = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"]][0]
    actors = [{"name": a.get("Name"), "class": a.get("ActorClassName"), "node": a["Address"]["NodeID"]}
              for a in ray._private.state.actors().values() if a["State"] == "ALIVE"]
    return {"head": head, "actors": actors, "workers": worker_nodes()}


SCENARIOS = {"placement": scenario_placement, "empty": scenario_empty, "gpu": scenario_gpu, "burst": scenario_burst, "kill": scenario_kill}


def main() -> None:
    connect()
    try:
        result = SCENARIOS[sys.argv[1]]()
    finally:
        sys.stdout.flush()
    print(RESULT + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
