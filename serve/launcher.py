"""``dojo up`` / ``dojo down``: a local Ray head with the queue actors and the API.

``up`` is idempotent: it starts a Ray head (``ray start --head``, token auth
kept on) only if none is running, deploys or updates the Serve app, makes sure
the default queue's actor exists and waits until ``/healthz`` answers.

The Ray token follows Ray's own conventions, so Ray's CLIs find it too:
``RAY_AUTH_TOKEN`` or the file ``RAY_AUTH_TOKEN_PATH`` when set, else
``~/.ray/auth_token``. ``ray start`` does not create one (only a local
``ray.init()`` does), so on a machine that has never run Ray ``up`` makes it
with ``ray get-auth-token --generate`` before starting the head. ``dojo env``
prints what a shell exports for ``ray status``, ``ray job submit`` and
``serve status`` to reach this cluster.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
import urllib.request

# Ray 2.60 turns token auth on; its config is read at import, so say so before importing it.
os.environ.setdefault("RAY_AUTH_MODE", "token")

import ray  # noqa: E402

from actors.facade import connect, queue_actor  # noqa: E402  (connect: join the head as a driver)
from actors.settings import Settings  # noqa: E402

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def _ray_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    bin_dir = os.path.dirname(sys.executable)
    # Put this environment's bin first: `ray job submit -- python ...` runs the cluster's `python`.
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    ray_bin = os.path.join(bin_dir, "ray")
    return subprocess.run([ray_bin, *args], env=env, check=check, capture_output=True, text=True)


def ray_address() -> str:
    """The local head's address (RAY_ADDRESS overrides); never 'auto', which may find another cluster."""
    return os.environ.get("RAY_ADDRESS") or "127.0.0.1:6379"


def cluster_running() -> bool:
    return _ray_cli("status", f"--address={ray_address()}", check=False).returncode == 0


def dashboard_address() -> str:
    """Ray's job server (the dashboard), which `ray job submit` and `serve status` talk to."""
    return f"http://127.0.0.1:{os.environ.get('DOJO_RAY_DASHBOARD_PORT', '8265')}"


def ray_token_location() -> str:
    """Where this process's Ray token comes from, in Ray's order of precedence."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN environment variable"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")


def ensure_ray_token() -> str:
    """Make sure a Ray token exists (Ray's own ``get-auth-token --generate``); return where it is."""
    location = ray_token_location()
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(location):
        return location
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        # Ray would generate into ~/.ray instead, and the cluster would not use it: say so rather than guess.
        raise SystemExit(f"RAY_AUTH_TOKEN_PATH names {location}, which does not exist; create it "
                         "(for example `ray get-auth-token --generate > FILE`) or unset RAY_AUTH_TOKEN_PATH")
    result = _ray_cli("get-auth-token", "--generate", check=False)
    if result.returncode != 0 or not os.path.isfile(location):
        raise SystemExit(f"could not create a Ray token at {location}:\n{result.stderr}")
    log.info("generated a Ray token in %s", location)
    return location


def shell_exports() -> dict[str, str]:
    """What a shell sets so Ray's own CLIs reach this cluster with its token."""
    exports = {"RAY_AUTH_MODE": "token", "RAY_ADDRESS": ray_address(),
               "RAY_API_SERVER_ADDRESS": dashboard_address(), "RAY_DASHBOARD_ADDRESS": dashboard_address()}
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        exports["RAY_AUTH_TOKEN_PATH"] = os.environ["RAY_AUTH_TOKEN_PATH"]
    return exports


def head_args(num_cpus: int | None = None, extra: str | None = None) -> list[str]:
    """The ``ray start`` arguments of ``dojo up``'s head; ``extra`` is DOJO_RAY_START_ARGS."""
    # Loopback only: nothing listens beyond 127.0.0.1 unless configured (cluster.yaml does). The node's
    # address is 127.0.0.1, so Ray binds its node-local servers there; `exposed_ports` says what Ray
    # still opens on every interface.
    port = ray_address().rsplit(":", 1)[1]
    # The dashboard (on 127.0.0.1 only) is what `ray job submit` talks to.
    dashboard_port = dashboard_address().rsplit(":", 1)[1]
    extra = shlex.split(os.environ.get("DOJO_RAY_START_ARGS", "") if extra is None else extra)
    args = ["start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}", "--disable-usage-stats"]
    if not any(a.startswith("--node-ip-address") for a in extra):
        # Machines that join this head need its real address instead: DOJO_RAY_START_ARGS="--node-ip-address=<ip>".
        args.append(f"--node-ip-address={LOOPBACK}")
    if num_cpus:
        args.append(f"--num-cpus={num_cpus}")
    # DOJO_RAY_START_ARGS: more `ray start` flags (other ports, --num-gpus, --resources, ...).
    return args + extra


def start_head(num_cpus: int | None = None) -> None:
    args = head_args(num_cpus)
    # Serve's controller and proxy read their settings from the head's environment when they start.
    from .deployment import serve_env

    os.environ.update(serve_env())
    result = _ray_cli(*args, check=False)
    if result.returncode != 0:
        raise SystemExit(f"could not start a Ray head:\n{result.stdout}\n{result.stderr}")


def exposed_ports() -> list[dict]:
    """Sockets this Ray session's processes listen on beyond loopback (Ray has no flag to bind them there).

    Call after ``connect()``. Each is ``{"address", "port", "process"}``; ``dojo up`` prints them, so an
    operator knows what to firewall (README, Security).
    """
    import psutil

    session = os.path.basename(ray._private.worker._global_node.get_session_dir_path().rstrip("/"))
    pids = {int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(int(p), session)}
    out = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids and conn.laddr.ip not in ("127.0.0.1", "::1"):
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            out.add((conn.laddr.ip, conn.laddr.port, name))
    return [{"address": ip, "port": port, "process": name} for ip, port, name in sorted(out)]


def wait_healthy(settings: Settings, timeout: float = 60) -> None:
    url = f"http://{settings.host}:{settings.port}/healthz"
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.time() > deadline:
            raise SystemExit(f"the API did not answer at {url} within {timeout:.0f}s")
        time.sleep(0.3)


def up(settings: Settings, num_cpus: int | None = None) -> dict:
    from .deployment import deploy

    started = False
    token = ensure_ray_token()
    if not cluster_running():
        start_head(num_cpus)
        started = True
    connect()
    deploy(settings)
    ray.get(queue_actor("default", settings).ping.remote())
    wait_healthy(settings)
    try:
        exposed = exposed_ports()
    except Exception as exc:  # noqa: BLE001 - a report, not a reason to fail `up`
        exposed = [{"error": f"could not list Ray's sockets: {exc}"}]
    return {"url": f"http://{settings.host}:{settings.port}", "started_ray": started,
            "tokens": str(settings.tokens_path), "state_dir": settings.state_dir, "ray_token": token,
            "ray_dashboard": dashboard_address(), "ray_ports_beyond_loopback": exposed}


def down() -> None:
    """Stop the API and the Ray head at ``ray_address()`` — only that cluster, not every Ray on the machine."""
    if not cluster_running():
        return
    connect()
    session_dir = ray._private.worker._global_node.get_session_dir_path()
    try:
        from ray import serve as ray_serve

        ray_serve.shutdown()
    except Exception as exc:  # noqa: BLE001  (stopping anyway)
        log.warning("serve shutdown: %s", exc)
    ray.shutdown()
    # `ray stop` would stop every cluster of this user; end the processes of this session instead
    # (its workers exit when their raylet does).
    session = os.path.basename(session_dir.rstrip("/"))
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(int(p), session)]
    for pid in pids:
        _signal(pid, 15)
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        _signal(pid, 9)


def _cmdline_has(pid: int, needle: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return needle.encode() in fh.read() and pid != os.getpid()
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def describe(info: dict) -> str:
    return json.dumps(info, indent=2)
