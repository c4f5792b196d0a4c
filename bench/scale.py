"""Cold start and idle release on Ray's fake multi-node autoscaler, against plain Ray in the same run.

    python bench/scale.py [--idle-timeout 10] [--rounds 2]

Starts its own fake autoscaling cluster (tests/scale/cluster.py: a head with no
CPUs, ``cpu_worker`` and ``gpu_worker`` scaling from zero) on free ports and
stops exactly it at the end. Each round, from zero worker nodes:

* ``autoscaler_node_start_s``: a plain Ray task needing one GPU is submitted;
  time until it runs on the new ``gpu_worker`` node (the autoscaler alone).
* wait until that node is released, then ``cold_start_s``: a dojo job needing
  one GPU is enqueued; time until it is running on a new node (its progress
  event carries the moment it started).
* ``idle_release_s``: that job's end → its node removed.

Prints a log, then ONE JSON line last: medians over the rounds of
``cold_start_s``, ``autoscaler_node_start_s``, ``cold_overhead_s``
(their difference), ``idle_release_s``, and ``idle_timeout_s``. Aims:
cold_overhead_s <= 1.0, idle_release_s <= idle_timeout_s + 10.
"""

from __future__ import annotations

import os
import sys

# The checkout this script lives in is what it measures (a worktree's too): its root goes first on the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

from tests.scale.cluster import RESULT, ROOT, FakeCluster  # noqa: E402

# The measuring half runs as a driver of the fake cluster, in its own process (see DRIVER below).
DRIVER = r'''
import json, logging, os, statistics, sys, time
os.environ.setdefault("RAY_AUTH_MODE", "token")
import ray
from actors.facade import queue_actor
from actors.settings import NAMESPACE, Settings
from tests.scale.cluster import RESULT
from tests.scale.drive import worker_nodes, wait_for

ray.init(address=os.environ["RAY_ADDRESS"], namespace=NAMESPACE, log_to_driver=False,
         logging_level=logging.WARNING, configure_logging=False)
rounds = int(sys.argv[1])


@ray.remote(num_cpus=1, num_gpus=1)
def plain():
    return time.time(), ray.get_runtime_context().get_node_id()


def released(node):
    wait_for(lambda: node not in worker_nodes(), 180, 0.1)
    return time.time()


actor = queue_actor("bench", Settings.from_env())
ray.get(actor.ping.remote())
out = {"autoscaler_node_start_s": [], "cold_start_s": [], "idle_release_s": []}
for round_ in range(rounds):
    wait_for(lambda: not worker_nodes(), 180, 0.2)
    t0 = time.time()
    ran_at, node = ray.get(plain.remote())
    out["autoscaler_node_start_s"].append(ran_at - t0)
    released(node)
    wait_for(lambda: not worker_nodes(), 180, 0.2)
    t0 = time.time()
    [job] = ray.get(actor.enqueue.remote([{"type": "scale_gpu", "payload": {"seconds": 0.2}}]))
    def finished():
        j = ray.get(actor.get.remote(job["id"]))
        return j if j["status"] in ("succeeded", "failed") else None
    done = wait_for(finished, 180, 0.05)
    attempt = done["history"][-1]
    out["cold_start_s"].append(attempt["started_at"] - t0)
    out["idle_release_s"].append(released(attempt["node"]) - attempt["ended_at"])
    print(f"round {round_ + 1}: plain task {out['autoscaler_node_start_s'][-1]:.2f}s, "
          f"dojo job {out['cold_start_s'][-1]:.2f}s, released {out['idle_release_s'][-1]:.2f}s after",
          file=sys.stderr, flush=True)
print(RESULT + json.dumps(out))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle-timeout", type=float, default=10.0, help="seconds (idle_timeout_minutes * 60)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cluster = FakeCluster(idle_timeout_s=args.idle_timeout, cpu_max=2, gpu_max=1)
    print(f"starting a fake autoscaling cluster at {cluster.address} (idle timeout {args.idle_timeout:g}s)",
          file=sys.stderr)
    cluster.start()
    try:
        env = cluster.driver_env(DOJO_STATE_DIR=tempfile.mkdtemp(prefix="dojo-bench-scale-"),
                                 DOJO_JOB_MODULES="tests.scale.jobs", DOJO_SQLITE_SYNC="NORMAL")
        proc = subprocess.run([sys.executable, "-c", DRIVER, str(args.rounds)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, timeout=600)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"the benchmark driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
        raw = json.loads(lines[-1][len(RESULT):])
    finally:
        cluster.stop()
    cold = statistics.median(raw["cold_start_s"])
    node_start = statistics.median(raw["autoscaler_node_start_s"])
    result = {
        "cold_start_s": round(cold, 3),
        "autoscaler_node_start_s": round(node_start, 3),
        "cold_overhead_s": round(cold - node_start, 3),
        "idle_release_s": round(statistics.median(raw["idle_release_s"]), 3),
        "idle_timeout_s": args.idle_timeout,
        "rounds": args.rounds,
        "samples": raw,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
