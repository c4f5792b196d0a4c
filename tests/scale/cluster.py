"""A Ray cluster on one machine whose worker "nodes" the real autoscaler starts and stops.

It is Ray's fake multi-node provider (``provider.type: fake_multinode``), the
same machinery ``ray.cluster_utils.AutoscalingCluster`` drives, started with
our own config dict (the wheel lacks the example YAML that class reads) and
scoped to this cluster: ``AutoscalingCluster.start()`` and ``shutdown()`` run
``ray stop --force``, which would also stop every other Ray on the machine
(a developer's ``dojo up``, a parallel test session). Here the head runs in
its own process session on free ports, and ``stop()`` kills exactly that
process group (the fake worker nodes are its descendants).

The node types mirror ``cluster.yaml``: a head with no CPUs (queue actors
and Serve only), ``cpu_worker`` and ``gpu_worker`` scaling from zero.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAD_TYPE = "ray.head.default"  # the fake provider's fixed name for the head's type
#: Marks a driver's result line (Ray may print a dead node's log tail to stdout too).
RESULT = "DRIVE-RESULT "


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def autoscaler_config(port: int, *, idle_timeout_s: float = 10, cpu_max: int = 2, gpu_max: int = 1,
                      max_workers: int | None = None, cpu_per_node: int = 2) -> dict:
    """A complete fake_multinode cluster config (the monitor reads every key, so none may be missing)."""
    return {
        "cluster_name": f"dojo-fake-{port}",
        "max_workers": cpu_max + gpu_max if max_workers is None else max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": f"127.0.0.1:{port}",  # not the default 6379, which `dojo up` may hold
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            HEAD_TYPE: {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": cpu_per_node}, "node_config": {},
                           "min_workers": 0, "max_workers": cpu_max},
            "gpu_worker": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {},
                           "min_workers": 0, "max_workers": gpu_max},
        },
        "head_node_type": HEAD_TYPE,
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


class FakeCluster:
    """Start with ``start()``, connect drivers to ``address``, always ``stop()``."""

    def __init__(self, *, idle_timeout_s: float = 10, cpu_max: int = 2, gpu_max: int = 1,
                 max_workers: int | None = None, env: dict[str, str] | None = None):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.idle_timeout_s = idle_timeout_s
        self.config = autoscaler_config(self.port, idle_timeout_s=idle_timeout_s, cpu_max=cpu_max, gpu_max=gpu_max,
                                        max_workers=max_workers)
        self.tmp = Path(tempfile.mkdtemp(prefix="dojo-scale-"))
        self.env = {
            **os.environ,
            "RAY_FAKE_CLUSTER": "1",
            "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            # A fast autoscaler loop and prompt detection of a dead node keep the tests short.
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "10",
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
            **(env or {}),
        }
        self._leader: int | None = None

    def start(self, timeout: float = 90) -> "FakeCluster":
        config_path = self.tmp / "autoscaler.json"
        config_path.write_text(json.dumps(self.config))
        ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        cmd = [ray_bin, "start", "--head", f"--autoscaling-config={config_path}", "--node-ip-address=127.0.0.1",
               f"--port={self.port}", "--num-cpus=0", "--num-gpus=0", "--include-dashboard=false",
               "--disable-usage-stats", f"--ray-client-server-port={free_port()}",
               f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
               f"--temp-dir={self.tmp / 'ray'}", "--block"]
        log = open(self.tmp / "head.log", "w")
        # --block keeps `ray start` as the leader of a new session: every process of this cluster
        # (head, autoscaler, fake worker nodes, their workers) stays in its group, and only those.
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(ROOT))
        self._leader = proc.pid
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited {proc.returncode}:\n{(self.tmp / 'head.log').read_text()}")
            if "Ray runtime started" in (self.tmp / "head.log").read_text():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the fake cluster did not start in {timeout}s:\n{(self.tmp / 'head.log').read_text()}")

    def stop(self) -> None:
        if self._leader is None:
            return
        try:
            os.killpg(self._leader, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # Fake worker nodes and Ray workers that left the group (none expected) are found by our GCS port.
        for pid in _pids_mentioning(f"127.0.0.1:{self.port}"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._leader = None

    def driver_env(self, **extra: str) -> dict[str, str]:
        """Environment for a driver process of this cluster."""
        return {**self.env, "RAY_ADDRESS": self.address, **extra}


def _pids_mentioning(needle: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found
