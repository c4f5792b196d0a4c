"""A Ray head of its own with its dashboard and job server, token auth, and dojo's API deployed on it.

The session's shared test cluster (tests/conftest.py) has no dashboard, so no
job server: ``ray job submit`` needs one. This head runs in its own process
session on free ports (like tests/scale/cluster.py) and ``stop()`` kills that
process group only; never ``ray stop``, which would stop every Ray on the
machine. Its environment carries dojo's settings (a fresh state dir), so the
drivers Ray's job server starts, the queue actor and the API all share them.
Used by tests/batch and bench/batch.py.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayHead:
    """``start()``, submit with ``jobs`` (a JobSubmissionClient), always ``stop()``."""

    def __init__(self, num_cpus: int = 4):
        self.tmp = Path(tempfile.mkdtemp(prefix="dojo-batch-"))
        self.port, self.dashboard_port, self.api_port = free_port(), free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.token = secrets.token_hex(32)
        self.api_token = "batch-api-" + secrets.token_hex(8)
        self.num_cpus = num_cpus
        dojo = {
            "DOJO_STATE_DIR": str(self.tmp / "state"),
            "DOJO_HOST": "127.0.0.1",
            "DOJO_PORT": str(self.api_port),
            "DOJO_API_TOKEN": self.api_token,
            "DOJO_WORKER_TOKEN": "batch-worker-" + secrets.token_hex(8),
            "DOJO_SECRET": secrets.token_hex(16),
            "DOJO_LEASE_TTL": "5",
            "DOJO_SQLITE_SYNC": "NORMAL",
            "DOJO_URL_TTL": "600",
        }
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DOJO_", "RAY_"))},
            **dojo,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            # Two cores shared with other test sessions: Ray's startup waits must allow a slow agent.
            "RAY_agent_register_timeout_ms": "180000",
            "RAY_raylet_start_wait_time_s": "180",
            "RAY_worker_register_timeout_seconds": "180",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            # As in an activated virtual environment: the entrypoint's `python` is this interpreter.
            "PATH": os.pathsep.join(filter(None, [os.path.dirname(sys.executable), os.environ.get("PATH")])),
        }
        self._leader: int | None = None
        self.jobs = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 180) -> "RayHead":
        ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        cmd = [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
               f"--num-cpus={self.num_cpus}", "--num-gpus=0", "--include-dashboard=true",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}", "--disable-usage-stats",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
               f"--runtime-env-agent-port={free_port()}", f"--temp-dir={self.tmp / 'ray'}", "--block"]
        log = open(self.tmp / "head.log", "w")
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(self.tmp))
        self._leader = proc.pid
        deadline = time.time() + timeout
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"ray start exited {proc.returncode}:\n{(self.tmp / 'head.log').read_text()}")
                if self._job_server_up():
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"no job server in {timeout}s:\n{(self.tmp / 'head.log').read_text()}")
                time.sleep(0.5)
            from ray.job_submission import JobSubmissionClient

            self.jobs = JobSubmissionClient(self.dashboard, headers={"Authorization": f"Bearer {self.token}"})
            self._deploy_api(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _job_server_up(self) -> bool:
        request = urllib.request.Request(f"{self.dashboard}/api/version",
                                         headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def _deploy_api(self, deadline: float) -> None:
        """dojo's API on this head, as ``dojo up`` deploys it (a driver that exits once it serves)."""
        code = ("import ray\nfrom actors.settings import NAMESPACE, Settings\nfrom serve.deployment import deploy\n"
                "from serve.launcher import wait_healthy\ns = Settings.from_env()\n"
                "ray.init(address='auto', namespace=NAMESPACE, log_to_driver=False)\ndeploy(s)\nwait_healthy(s, 120)\n")
        for attempt in range(3):
            # The job server can answer before the head's raylet registered ("No node info found"): retry.
            done = subprocess.run([sys.executable, "-c", code], env={**self.env, "RAY_ADDRESS": self.address},
                                  cwd=str(ROOT), capture_output=True, text=True,
                                  timeout=max(120, deadline - time.time()))
            if not done.returncode:
                return
            time.sleep(2)
        raise RuntimeError(f"deploying the API failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")

    def stop(self) -> None:
        if self._leader is None:
            return
        try:
            os.killpg(self._leader, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # Workers and agents that left the group are found by this head's GCS address.
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if self.address in cmdline or str(self.tmp) in cmdline:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._leader = None

    # -- helpers for tests -----------------------------------------------------
    def call(self, method: str, path: str, body=None) -> dict:
        """The dojo API of this head, with its admin token."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.api}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.api_token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def children(self, batch_id: str) -> list[dict]:
        """The batch's render jobs (a child's record names its parent)."""
        jobs = self.call("GET", f"/v1/jobs?type=render&q={batch_id}&limit=500")["jobs"]
        return [j for j in jobs if j.get("parent_id") == batch_id]
