"""Two Ray nodes on one machine whose disks differ, the way two machines' do.

The head (``ray start --head --num-cpus=0``: queue actors, Serve, storage, no
jobs) sees the real state dir. Each worker node's ``ray start`` runs inside
its own mount namespace (``unshare --mount``) with a tmpfs mounted over that
same state dir, so every process on the worker sees an empty directory where
the head keeps its files — as on a second machine. A job that reads or writes
"the state dir" on a worker node therefore touches a disk the head never sees.

Like ``tests/scale/cluster.py``, each node runs in its own process session on
free ports and ``stop()`` kills exactly those process groups (never
``ray stop``, which would end every other Ray on the machine). Token auth
stays on: every process gets the cluster's ``RAY_AUTH_TOKEN``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.scale.cluster import _pids_mentioning, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def can_isolate_disks() -> str | None:
    """None if this machine can give a node its own view of a directory, else why not."""
    if shutil.which("unshare") is None:
        return "unshare(1) is missing"
    probe = Path(tempfile.mkdtemp(prefix="dojo-unshare-"))
    (probe / "seen").write_text("x")
    try:
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               f"mount -t tmpfs none {probe} && test ! -e {probe}/seen"],
                              capture_output=True, text=True)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return None if done.returncode == 0 else f"unshare --mount with tmpfs failed (root needed): {done.stderr}"


class TwoNodeCluster:
    """``start()``, then ``add_worker()``; drivers use ``env``; always ``stop()``."""

    def __init__(self, worker_cpus: int = 2, env: dict[str, str] | None = None, head_cpus: int = 0):
        self.tmp = Path(tempfile.mkdtemp(prefix="dojo-multinode-"))
        self.state_dir = self.tmp / "state"
        self.state_dir.mkdir()
        self.port = free_port()
        self.api_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.worker_cpus = worker_cpus
        self.head_cpus = head_cpus  # 0: the head runs no jobs (as in cluster.yaml); >0: a one-node baseline
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DOJO_", "RAY_"))},
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_ADDRESS": self.address,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
            # A loaded machine may take a while to start a node's agent; Ray's raylet aborts after 30 s.
            "RAY_agent_register_timeout_ms": "180000",
            # A dead node is noticed within seconds (the kill test waits on it).
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
            "DOJO_STATE_DIR": str(self.state_dir),
            "DOJO_PORT": str(self.api_port),
            "DOJO_API_TOKEN": "multinode-api-token",
            "DOJO_WORKER_TOKEN": "multinode-worker-token",
            "DOJO_SECRET": "multinode-secret",
            "DOJO_SQLITE_SYNC": "NORMAL",
            "DOJO_LEASE_TTL": "5",
            **(env or {}),
        }
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.workers: dict[str, int] = {}  # name -> process group leader
        self._head: int | None = None
        self._procs: list[subprocess.Popen] = []

    def _ports(self) -> list[str]:
        return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]

    def _spawn(self, name: str, argv: list[str]) -> int:
        log = open(self.tmp / f"{name}.log", "w")
        env = self.env
        if name != "head":
            # As on a second machine: no dojo settings, tokens or secrets; what a job needs comes through Ray.
            env = {k: v for k, v in self.env.items() if not k.startswith("DOJO_")}
        # A new session: the node's raylet, workers and ffmpeg children stay in this group, and only they.
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(ROOT))
        self._procs.append(proc)
        log.close()  # the child holds its own copy
        return proc.pid

    def _wait_started(self, leader: int, name: str, timeout: float) -> None:
        # `ray start` prints this once its node has registered with the GCS (no driver needed to ask).
        log = self.tmp / f"{name}.log"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if "Ray runtime started" in log.read_text():
                return
            if _zombie(leader):
                raise RuntimeError(f"{name} exited:\n{log.read_text()[-4000:]}")
            time.sleep(0.3)
        raise RuntimeError(f"{name} did not start in {timeout}s:\n{log.read_text()[-4000:]}")

    def node_ids(self) -> dict[str, str]:
        """Alive nodes' ids by name: 'head', or the worker name given to ``add_worker``."""
        code = ("import json, ray; ray.init(address='%s', logging_level='ERROR');"
                "print(json.dumps([[n['NodeID'], list(n['Resources'])] for n in ray.nodes() if n['Alive']]))"
                % self.address)
        done = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, check=True)
        ids = {}
        for node_id, resources in json.loads(done.stdout.strip().splitlines()[-1]):
            names = [r for r in resources if r in self.workers or r == "node:__internal_head__"]
            for name in names:
                ids["head" if name.startswith("node:") else name] = node_id
        return ids

    def _start_node(self, name: str, argv, timeout: float, attempts: int = 3) -> int:
        # Ray gives a node 30 s to register with the GCS; on a loaded CI machine that can pass: try again.
        for attempt in range(attempts):
            leader = self._spawn(name, argv())
            try:
                self._wait_started(leader, name, timeout)
                return leader
            except RuntimeError:
                _killpg(leader)
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def start(self, timeout: float = 90) -> "TwoNodeCluster":
        self._head = self._start_node("head", lambda: [
            str(BIN / "ray"), "start", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.head_cpus}", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
            f"--ray-client-server-port={free_port()}", f"--temp-dir={self.tmp / 'ray'}", *self._ports(), "--block"],
            timeout)
        return self

    def add_worker(self, name: str = "worker", timeout: float = 90) -> None:
        """A worker node with ``worker_cpus`` CPUs that sees an empty tmpfs at the head's state dir."""
        def argv() -> list[str]:
            ray_start = " ".join([str(BIN / "ray"), "start", f"--address={self.address}",
                                  "--node-ip-address=127.0.0.1", f"--num-cpus={self.worker_cpus}", "--num-gpus=0",
                                  "--disable-usage-stats", f'--resources=\'{{"{name}": 1}}\'', *self._ports(),
                                  "--block"])
            script = f"mount -t tmpfs dojo-{name} {self.state_dir} && exec {ray_start}"
            return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]

        self.workers[name] = self._start_node(name, argv, timeout)

    def kill_worker(self, name: str) -> None:
        _killpg(self.workers.pop(name))

    def deploy(self, timeout: float = 120) -> None:
        """The API on the head, deployed from a driver process (what ``dojo up`` does after ``ray start``)."""
        code = ("import ray; from actors.settings import NAMESPACE, Settings; from serve.deployment import deploy;"
                "from serve.launcher import wait_healthy; from actors.facade import queue_actor;"
                f"ray.init(address='{self.address}', namespace=NAMESPACE, logging_level='ERROR');"
                "s = Settings.from_env(); deploy(s); ray.get(queue_actor('default', s).ping.remote());"
                f"wait_healthy(s, {timeout})")
        done = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True,
                              timeout=timeout + 30, cwd=str(ROOT))
        if done.returncode != 0:
            raise RuntimeError(f"deploy failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        with urllib.request.urlopen(self.url + "/healthz", timeout=10) as response:
            assert response.status == 200

    def stop(self) -> None:
        for leader in [*self.workers.values(), self._head]:
            if leader is not None:
                _killpg(leader)
        self.workers.clear()
        self._head = None
        for proc in self._procs:
            proc.wait(timeout=30)
        for pid in _pids_mentioning(f"127.0.0.1:{self.port}"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # The worker nodes' tmpfs mounts vanish with their namespaces; the rest is ours to remove.
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['DOJO_API_TOKEN']}"}


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _killpg(leader: int) -> None:
    try:
        os.killpg(leader, signal.SIGKILL)
    except ProcessLookupError:
        pass
