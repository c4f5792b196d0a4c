"""dojo side by side with Celery, Dramatiq, arq and RQ on Redis: same machine, same run.

    python bench/vs_peers.py [--quick] [--only dojo,celery,...] [--no-normal]
    make bench-peers

Workloads (each system with 2 worker processes):
  noop     N no-op jobs enqueued while the workers run: enqueue time, jobs/s to the last one done
  sleep    M jobs that sleep 10 ms: time to the last one done
  latency  enqueue -> job starts on an idle system, one job at a time (20 ms apart), p50 / p99
  http     (dojo only) noop and latency again on the user's path: one POST /v1/jobs per job through
           Ray Serve from 32 concurrent clients (the facade rows send 1,000 specs per actor call)
  kill     N no-op jobs that append their number to a per-process file; kill -9 every worker
           process when half have run, restart the workers, count jobs lost and jobs run twice

The peers run in their own venvs (bench/.peers-venv/<peer>, created on first use, never dojo
dependencies) against a Redis server from Debian's packages on 127.0.0.1, started here twice:
"default" (Redis's built-in defaults) and "durable" (appendonly yes, appendfsync everysec).
noop, sleep and latency run against both; the kill test (a worker crash: Redis stays up) runs
against the durable one. Each peer's settings are in its module in bench/peers/ with the reason
for each. dojo runs on a local Ray with 2 CPUs and no Redis; its SQLite `synchronous` setting is
FULL by default (reported as dojo) and NORMAL too (dojo_normal) unless --no-normal.

Prints a table, then ONE JSON line last: the figures per system and Redis config, and for dojo
`ratio_vs_best_peer` per workload (dojo / best peer for throughput, best peer / dojo for times
and latency: > 1 means dojo is ahead), against the durable and the default Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS_DIR = os.path.join(HERE, "peers")
sys.path.insert(0, PEERS_DIR)
from common import descendants, free_port, log, pct  # noqa: E402
VENVS = os.path.join(HERE, ".peers-venv")
# The checkout this script lives in is what it measures (a worktree's too): its root goes first on the path.
sys.path.insert(0, ROOT)

PEERS = {"celery": "celery[redis]", "dramatiq": "dramatiq[redis]", "arq": "arq", "rq": "rq"}
SYSTEMS = ("dojo", *PEERS)
REDIS_CONFIGS = {"default": [], "durable": ["--appendonly", "yes", "--appendfsync", "everysec"]}
#: RQ forks a work horse per job (~50-100 jobs/s here): its noop and kill runs are capped at this.
RQ_CAP = 2000
#: How long after the kill the kill test waits for every job (RQ notices abandoned jobs after 65 s).
RECOVER_S = {"dojo": 90.0, "celery": 90.0, "dramatiq": 90.0, "arq": 150.0, "rq": 150.0}
LATENCY_GAP_S = 0.02
WARMUP = 5




# -- processes: everything started here ends here ------------------------------------------------
def become_subreaper() -> None:
    """Orphans of our children (Ray's daemons, pool workers) re-parent to us, so cleanup finds them."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def below_me() -> list[int]:
    """Every process this one started, and theirs."""
    return descendants([os.getpid()])[1:]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


#: Processes kill_descendants leaves alone (the Redis server in use).
KEEP: set[int] = set()


def kill_descendants(grace: float = 5.0) -> None:
    """TERM, then KILL, every process below this one (but KEEP); reap them."""
    pids = [p for p in below_me() if p not in KEEP]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") and _alive(p) for p in pids):
            time.sleep(0.1)
        pids = [p for p in below_me() if p not in KEEP]
        if not pids:
            break
    _reap()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_child(cmd: list[str], timeout: float, env: dict | None = None, cwd: str = ROOT) -> dict | None:
    """Run a driver in its own process group; its last stdout line is a JSON object."""
    log("$ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=None, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"timed out after {timeout:.0f}s: {cmd[1:3]}")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        kill_descendants(1.0)
        return None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _reap()  # killed workers' children re-parent to us (subreaper): no zombies left about
    lines = [line for line in out.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        log(f"failed (exit {proc.returncode}): {cmd[1:3]}")
        return None
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        log(f"no JSON from {cmd[1:3]}: {lines[-1][:200]}")
        return None


# -- setup ---------------------------------------------------------------------------------------
def ensure_redis() -> str:
    path = shutil.which("redis-server")
    if path is None:
        log("redis-server is missing: installing Debian's redis-server")
        subprocess.run(["apt-get", "update"], check=True, timeout=600, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "redis-server"], check=True, timeout=600,
                       stdout=subprocess.DEVNULL)
        path = shutil.which("redis-server")
    if path is None:
        raise SystemExit("redis-server is not installed and could not be installed")
    # Debian starts a system-wide Redis on install; the bench uses only its own servers.
    return path


def ensure_peer(peer: str) -> str:
    """The peer's venv (bench/.peers-venv/<peer>), one per peer: arq pins redis<6, kombu >=6.4."""
    python = os.path.join(VENVS, peer, "bin", "python")
    stamp = os.path.join(VENVS, peer, ".installed")
    if not os.path.exists(stamp):
        log(f"installing {PEERS[peer]} into {os.path.relpath(os.path.dirname(os.path.dirname(python)), ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", os.path.join(VENVS, peer)], check=True, timeout=300)
        subprocess.run([python, "-m", "pip", "install", "-q", PEERS[peer]], check=True, timeout=900)
        open(stamp, "w").close()
    return python


class Redis:
    """A redis-server of our own on 127.0.0.1 and a free port, in a temporary folder."""

    def __init__(self, binary: str, config: str, work: str):
        self.config = config
        self.port = free_port()
        self.dir = os.path.join(work, f"redis-{config}")
        os.makedirs(self.dir)
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
               "--daemonize", "no", "--protected-mode", "yes", *REDIS_CONFIGS[config]]
        self.log = open(os.path.join(self.dir, "redis.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        KEEP.add(self.proc.pid)
        deadline = time.monotonic() + 20
        while self.command("PING") != "+PONG":
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise SystemExit(f"redis-server ({config}) did not start; see {self.dir}/redis.log")
            time.sleep(0.05)
        info = self.command("INFO persistence") or ""
        self.aof = "aof_enabled:1" in info
        self.version = (self.command("INFO server") or "").split("redis_version:")[-1].split()[0]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, text: str) -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(text.encode() + b"\r\n")
                data = sock.recv(65536)
                if data.startswith(b"$"):
                    size = int(data[1:data.index(b"\r\n")])
                    while len(data) < size:
                        more = sock.recv(65536)
                        if not more:
                            break
                        data += more
                    return data.split(b"\r\n", 1)[1].decode(errors="replace")
                return data.decode(errors="replace").strip()
        except OSError:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.command("SHUTDOWN NOSAVE")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        KEEP.discard(self.proc.pid)
        self.log.close()


# -- dojo (runs in a child process of its own: `vs_peers.py --dojo-child ...`) ------------------------
def _ray_runner_pids() -> list[int]:
    """This bench's Ray worker processes that run dojo runner tasks (not the queue actor)."""
    return [pid for pid in below_me()
            if "ray::dojo:" in cmdline(pid) or "ray::run_jobs" in cmdline(pid)]


async def _dojo_wait(queues, queue: str, n: int, timeout: float, poll: float = 0.05) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stats = await queues.stats(queue)
        counts = stats["counts"]
        if counts["succeeded"] + counts["failed"] >= n or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(poll)


async def _dojo_enqueue(queues, specs: list[dict]) -> None:
    for i in range(0, len(specs), 1000):
        await queues.enqueue(specs[i:i + 1000])


async def _dojo_warm(queues, queue: str) -> None:
    await queues.ping(queue, create=True)
    await _dojo_enqueue(queues, [{"type": "noop", "queue": queue} for _ in range(40)])
    counts = await _dojo_wait(queues, queue, 40, 60)
    if counts["succeeded"] < 40:
        raise SystemExit(f"dojo: warm-up jobs did not run: {counts}")


async def dojo_noop(queues, queue: str, n: int, timeout: float) -> dict:
    await _dojo_warm(queues, queue)
    base = (await queues.stats(queue))["counts"]["succeeded"]
    start = time.perf_counter()
    await _dojo_enqueue(queues, [{"type": "noop", "queue": queue} for _ in range(n)])
    enqueued = time.perf_counter() - start
    counts = await _dojo_wait(queues, queue, n + base, timeout)
    elapsed = time.perf_counter() - start
    done = counts["succeeded"] - base
    log(f"dojo[{queue}]: {n} no-op jobs in {elapsed:.2f}s (enqueue {enqueued:.2f}s)")
    return {"jobs": n, "enqueue_s": round(enqueued, 3), "elapsed_s": round(elapsed, 3),
            "jobs_per_s": round(done / elapsed, 1), "completed": done, "failed": counts["failed"],
            "timed_out": done < n}


async def dojo_sleep(queues, queue: str, n: int, timeout: float) -> dict:
    await _dojo_warm(queues, queue)
    stats = (await queues.stats(queue))["counts"]
    base = stats["succeeded"] + stats["failed"]
    start = time.perf_counter()
    # `nap` is dojo's I/O-bound sample: a runner runs 8 at once on threads (as Dramatiq's default).
    await _dojo_enqueue(queues, [{"type": "nap", "queue": queue, "payload": {"seconds": 0.01}}
                                 for _ in range(n)])
    enqueued = time.perf_counter() - start
    counts = await _dojo_wait(queues, queue, n + base, timeout)
    elapsed = time.perf_counter() - start
    done = counts["succeeded"] + counts["failed"] - base
    log(f"dojo[{queue}]: {n} 10 ms sleeps in {elapsed:.2f}s (enqueue {enqueued:.2f}s)")
    return {"jobs": n, "enqueue_s": round(enqueued, 3), "elapsed_s": round(elapsed, 3),
            "jobs_per_s": round(done / elapsed, 1), "completed": done, "timed_out": done < n}


async def dojo_latency(queues, queue: str, samples: int, timeout: float) -> dict:
    await queues.ping(queue, create=True)
    latencies: list[float] = []
    deadline = time.monotonic() + timeout
    for i in range(samples + WARMUP):
        if time.monotonic() > deadline:
            break
        sent = time.time()
        [job] = await queues.enqueue([{"type": "stamp", "queue": queue}])
        while time.monotonic() < deadline:
            job = await queues.get(job["id"])
            if job["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.002)
        if job["status"] != "succeeded":
            break
        if i >= WARMUP:
            latencies.append((job["result"]["started"] - sent) * 1000)
        await asyncio.sleep(LATENCY_GAP_S)
    if not latencies:
        return {"samples": 0, "timed_out": True}
    log(f"dojo[{queue}]: dispatch p50 {pct(latencies, 50):.2f} ms p99 {pct(latencies, 99):.2f} ms")
    return {"samples": len(latencies), "p50_ms": round(pct(latencies, 50), 2),
            "p99_ms": round(pct(latencies, 99), 2), "timed_out": len(latencies) < samples}


async def dojo_http(settings, queue: str, n: int, samples: int, timeout: float, clients: int = 32) -> dict:
    """The user's path: each job its own POST /v1/jobs through Ray Serve, from ``clients`` concurrent
    aiohttp clients (noop: enqueue time and jobs/s to the last one done), then POST -> start latency."""
    import aiohttp

    from serve.deployment import deploy
    from serve.launcher import wait_healthy

    deploy(settings)
    wait_healthy(settings)
    url = f"http://{settings.host}:{settings.port}"
    headers = {"Authorization": f"Bearer {settings.api_token}"}
    out: dict = {"clients": clients}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients * 2), headers=headers) as s:
        async def post(spec: dict) -> dict:
            async with s.post(f"{url}/v1/jobs", json=spec) as r:
                body = await r.json(content_type=None)
                if r.status not in (200, 201):
                    raise SystemExit(f"dojo HTTP: POST /v1/jobs answered {r.status}: {body}")
                return body

        async def stats() -> dict:
            async with s.get(f"{url}/v1/queues/{queue}") as r:
                return (await r.json())["counts"]

        await asyncio.gather(*(post({"type": "noop", "queue": queue}) for _ in range(40)))  # warm
        deadline = time.monotonic() + timeout
        while (await stats())["succeeded"] < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        base = (await stats())["succeeded"]
        todo = iter(range(n))

        async def client() -> None:
            for _ in todo:
                await post({"type": "noop", "queue": queue})

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        enqueued = time.perf_counter() - start
        while (counts := await stats())["succeeded"] + counts["failed"] < n + base and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - start
        done = counts["succeeded"] - base
        log(f"dojo HTTP[{queue}]: {n} no-op jobs, one POST each from {clients} clients, in {elapsed:.2f}s "
            f"(enqueue {enqueued:.2f}s)")
        out["noop"] = {"jobs": n, "enqueue_s": round(enqueued, 3), "elapsed_s": round(elapsed, 3),
                       "jobs_per_s": round(done / elapsed, 1), "completed": done, "failed": counts["failed"],
                       "timed_out": done < n}
        latencies: list[float] = []
        for i in range(samples + WARMUP):
            if time.monotonic() > deadline:
                break
            sent = time.time()
            job = await post({"type": "stamp", "queue": queue})
            while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
                async with s.get(f"{url}/v1/jobs/{job['id']}") as r:
                    job = await r.json()
            if job["status"] != "succeeded":
                break
            if i >= WARMUP:
                latencies.append((job["result"]["started"] - sent) * 1000)
            await asyncio.sleep(LATENCY_GAP_S)
        if latencies:
            log(f"dojo HTTP[{queue}]: dispatch p50 {pct(latencies, 50):.2f} ms p99 {pct(latencies, 99):.2f} ms")
            out["latency"] = {"samples": len(latencies), "p50_ms": round(pct(latencies, 50), 2),
                              "p99_ms": round(pct(latencies, 99), 2), "timed_out": len(latencies) < samples}
    return out


async def dojo_kill(queues, queue: str, n: int, work: str, recover_s: float, timeout: float) -> dict:
    import marks

    await queues.ping(queue, create=True)
    folder = os.path.join(work, f"dojo-kill-{queue}")
    os.makedirs(folder)
    specs = [{"type": "bench_mark", "queue": queue, "payload": {"dir": folder, "i": i}} for i in range(n)]
    start = time.perf_counter()
    producer = asyncio.get_running_loop().create_task(_dojo_enqueue(queues, specs))
    deadline = time.monotonic() + timeout
    while marks.count(folder) < n // 2:
        if time.monotonic() > deadline:
            producer.cancel()
            raise SystemExit(f"dojo: half of the kill test's jobs did not run in {timeout:.0f}s")
        await asyncio.sleep(0.001)
    at_kill = marks.count(folder)
    pids = _ray_runner_pids()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    log(f"dojo[{queue}]: killed {len(pids)} Ray worker processes running runner tasks with {at_kill}/{n} run")
    # Restarting is dojo's job: Ray starts new workers for the runners the queue actor launches.
    await asyncio.wait_for(producer, timeout)
    counts = await _dojo_wait(queues, queue, n, recover_s, poll=0.2)
    all_done = time.perf_counter() - start
    await asyncio.sleep(2.0)  # late re-runs would show up as duplicates
    seen = marks.ids(folder)
    distinct = len(set(seen))
    counts = (await queues.stats(queue))["counts"]
    result = {"jobs": n, "killed_processes": len(pids), "run_at_kill": at_kill, "lost": n - distinct,
              "duplicates": len(seen) - distinct, "completed": len(seen),
              "all_done_s": round(all_done, 2) if distinct >= n else None, "recovery_wait_s": recover_s,
              "jobs_failed": counts["failed"], "jobs_succeeded": counts["succeeded"]}
    log(f"dojo[{queue}]: kill test lost {result['lost']} ran twice {result['duplicates']} "
        f"(dojo says {counts['succeeded']} succeeded, {counts['failed']} failed)")
    return result


def dojo_child(args) -> None:
    """One dojo run on a fresh local Ray (2 CPUs); prints its JSON last."""
    become_subreaper()
    os.makedirs(args.work, exist_ok=True)
    state = tempfile.mkdtemp(prefix="dojo-peers-", dir=args.work)
    os.environ.update({"DOJO_STATE_DIR": state, "DOJO_PORT": str(free_port()),
                       "DOJO_JOB_MODULES": "pipelines.sample,dojo_bench_jobs", "DOJO_LEASE_TTL": "5"})
    # The kill test's job type and its file marks live in bench/peers/; Ray's workers inherit this.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (PEERS_DIR, ROOT, os.environ.get("PYTHONPATH")) if p)
    sys.path.insert(0, PEERS_DIR)
    import ray

    from actors.facade import Queues
    from actors.settings import NAMESPACE, Settings

    result: dict = {"system": "dojo", "cpus": 2, "ray": ray.__version__}
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False,
             configure_logging=False)
    try:
        async def body():
            base = Settings.from_env()
            for sync in args.syncs.split(","):
                settings = dataclasses.replace(base, sqlite_sync=sync)
                queues = Queues(settings)
                tag = sync.lower()
                out = result.setdefault(sync, {"sqlite_synchronous": sync, "lease_ttl_s": settings.lease_ttl})
                if args.noop:
                    out["noop"] = await dojo_noop(queues, f"noop-{tag}", args.noop, args.timeout)
                if args.sleep:
                    out["sleep"] = await dojo_sleep(queues, f"sleep-{tag}", args.sleep, args.timeout)
                if args.latency:
                    out["latency"] = await dojo_latency(queues, f"latency-{tag}", args.latency, args.timeout)
                if args.http and sync == args.syncs.split(",")[0]:
                    out["http"] = await dojo_http(settings, f"http-{tag}", args.noop, args.latency, args.timeout)
                if args.kill and sync == args.syncs.split(",")[0]:
                    out["kill"] = await dojo_kill(queues, f"kill-{tag}", args.kill, args.work,
                                                  RECOVER_S["dojo"], args.timeout)

        asyncio.run(body())
    finally:
        ray.shutdown()
    print(json.dumps(result), flush=True)


# -- the run -------------------------------------------------------------------------------------
def sizes(args) -> dict:
    if args.quick:
        base = {"noop": 2000, "sleep": 200, "latency": 50, "kill": 2000}
    else:
        base = {"noop": 20_000, "sleep": 2000, "latency": 500, "kill": 20_000}
    for key in base:
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    return base


def run_dojo(args, n: dict, work: str) -> dict | None:
    syncs = "FULL" if args.no_normal else "FULL,NORMAL"
    cmd = [sys.executable, os.path.abspath(__file__), "--dojo-child", "--work", work, "--syncs", syncs,
           "--noop", str(n["noop"]), "--sleep", str(n["sleep"]), "--latency", str(n["latency"]),
           "--kill", str(n["kill"]), "--timeout", str(args.timeout)] + ([] if args.http else ["--no-http"])
    return run_child(cmd, timeout=args.timeout * 6 + 300)


def run_peer(peer: str, redis: Redis, args, n: dict, work: str, kill: bool) -> dict | None:
    python = ensure_peer(peer)
    cap = RQ_CAP if peer == "rq" and not args.quick else None
    noop = min(n["noop"], cap) if cap else n["noop"]
    kill_n = (min(n["kill"], cap) if cap else n["kill"]) if kill else 0
    folder = os.path.join(work, f"{peer}-{redis.config}")
    cmd = [python, os.path.join(PEERS_DIR, "driver.py"), "--system", peer, "--redis-url", redis.url,
           "--work", folder, "--noop", str(noop), "--sleep", str(n["sleep"]), "--latency", str(n["latency"]),
           "--kill", str(kill_n), "--recover", str(RECOVER_S[peer]), "--timeout", str(args.timeout)]
    out = run_child(cmd, timeout=args.timeout * 4 + RECOVER_S[peer] + 180, cwd=PEERS_DIR)
    if out is not None:
        out["redis"] = redis.config
    return out


def best(values: list[tuple[str, float]], higher: bool):
    values = [(k, v) for k, v in values if v is not None]
    if not values:
        return None, None
    return (max if higher else min)(values, key=lambda kv: kv[1])


def summarize(results: dict) -> dict:
    """ratio_vs_best_peer for each dojo variant against each Redis config (> 1 = dojo ahead)."""
    metrics = {  # name -> (getter, higher is better)
        "noop_jobs_per_s": (lambda r: r.get("noop", {}).get("jobs_per_s"), True),
        "noop_enqueue_jobs_per_s": (lambda r: (r["noop"]["jobs"] / r["noop"]["enqueue_s"])
                                    if r.get("noop", {}).get("enqueue_s") else None, True),
        "sleep_elapsed_s": (lambda r: r.get("sleep", {}).get("elapsed_s"), False),
        "dispatch_p50_ms": (lambda r: r.get("latency", {}).get("p50_ms"), False),
        "dispatch_p99_ms": (lambda r: r.get("latency", {}).get("p99_ms"), False),
    }
    ratios: dict = {}
    for variant in ("dojo", "dojo_normal"):
        if variant not in results:
            continue
        mine = results[variant]
        for config in REDIS_CONFIGS:
            peers = {p: results[p][config] for p in PEERS if p in results and config in results[p]}
            if not peers:
                continue
            table = ratios.setdefault(variant, {}).setdefault(config, {})
            for name, (get, higher) in metrics.items():
                try:
                    value = get(mine)
                except (KeyError, TypeError, ZeroDivisionError):
                    value = None
                peer_vals = []
                for p, r in peers.items():
                    try:
                        peer_vals.append((p, get(r)))
                    except (KeyError, TypeError, ZeroDivisionError):
                        pass
                who, top = best(peer_vals, higher)
                if value is None or top is None or value == 0 or top == 0:
                    continue
                table[name] = {"ratio": round(value / top if higher else top / value, 2), "best_peer": who,
                               "best_peer_value": round(top, 2), "dojo_value": round(value, 2)}
    # dojo's HTTP path (one POST per job) against the same peer figures.
    http = results.get("dojo", {}).get("http") or {}
    for config, table in ratios.get("dojo", {}).items():
        peers = {p: results[p][config] for p in PEERS if p in results and config in results[p]}
        for name, value, peer_key, key, higher in (
                ("http_noop_jobs_per_s", (http.get("noop") or {}).get("jobs_per_s"), "noop", "jobs_per_s", True),
                ("http_dispatch_p50_ms", (http.get("latency") or {}).get("p50_ms"), "latency", "p50_ms", False)):
            who, top = best([(p, (r.get(peer_key) or {}).get(key)) for p, r in peers.items()], higher)
            if value and top:
                table[name] = {"ratio": round(value / top if higher else top / value, 2), "best_peer": who,
                               "best_peer_value": round(top, 2), "dojo_value": round(value, 2)}
    return ratios


def print_table(results: dict) -> None:
    rows = []
    head = ("system", "redis / store", "noop jobs/s", "enqueue s", "sleep s", "p50 ms", "p99 ms",
            "kill: lost", "dup", "kill n")
    for system, configs in results.items():
        if system.startswith("dojo"):
            http = configs.get("http")
            configs = {"SQLite " + configs.get("sqlite_synchronous", "?") + " (facade)": configs}
            if http:
                configs["SQLite FULL (HTTP, 1 job/POST)"] = {"noop": http.get("noop"), "latency": http.get("latency")}
        for config, r in configs.items():
            if not isinstance(r, dict):
                continue
            noop, sleep, lat, kill = (r.get(k) or {} for k in ("noop", "sleep", "latency", "kill"))
            rows.append((system, config,
                         f"{noop.get('jobs_per_s', '-')}" + (f" ({noop['jobs']})" if noop else ""),
                         f"{noop.get('enqueue_s', '-')}", f"{sleep.get('elapsed_s', '-')}",
                         f"{lat.get('p50_ms', '-')}", f"{lat.get('p99_ms', '-')}",
                         f"{kill.get('lost', '-')}", f"{kill.get('duplicates', '-')}", f"{kill.get('jobs', '-')}"))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in (head, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 / 200 / 50 / 2,000 jobs: a smoke run")
    parser.add_argument("--only", default=",".join(SYSTEMS), help="systems to run, e.g. dojo,celery")
    parser.add_argument("--no-normal", action="store_true", help="skip dojo with DOJO_SQLITE_SYNC=NORMAL")
    parser.add_argument("--no-kill", action="store_true", help="skip the kill test")
    parser.add_argument("--noop", type=int, help="no-op jobs (workload 1)")
    parser.add_argument("--sleep", type=int, help="10 ms jobs (workload 2)")
    parser.add_argument("--latency", type=int, help="latency samples (workload 3)")
    parser.add_argument("--kill", type=int, help="jobs in the kill test (workload 4)")
    parser.add_argument("--timeout", type=float, default=300.0, help="deadline of each workload, seconds")
    parser.add_argument("--dojo-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--syncs", default="FULL", help=argparse.SUPPRESS)
    parser.add_argument("--no-http", dest="http", action="store_false",
                        help="skip dojo's HTTP path (one POST /v1/jobs per job through Ray Serve)")
    args = parser.parse_args()
    if args.dojo_child:
        return dojo_child(args)

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SYSTEMS]
    if unknown:
        raise SystemExit(f"--only: unknown systems {unknown}; pick from {','.join(SYSTEMS)}")
    n = sizes(args)
    if args.no_kill:
        n["kill"] = 0
    become_subreaper()
    work = tempfile.mkdtemp(prefix="dojo-bench-peers-")
    results: dict = {}
    started = time.time()
    load_before = os.getloadavg()
    try:
        if "dojo" in only:
            out = run_dojo(args, n, os.path.join(work, "dojo"))
            if out:
                results["dojo"] = out.get("FULL", {})
                if "NORMAL" in out:
                    results["dojo_normal"] = out["NORMAL"]
        peers = [p for p in PEERS if p in only]
        if peers:
            binary = ensure_redis()
            for p in peers:
                ensure_peer(p)
            for config in REDIS_CONFIGS:
                redis = Redis(binary, config, work)
                try:
                    log(f"redis {redis.version} ({config}, appendonly {'yes' if redis.aof else 'no'}) "
                        f"on 127.0.0.1:{redis.port}")
                    for p in peers:
                        kill = config == "durable" and n["kill"] > 0
                        out = run_peer(p, redis, args, n, work, kill)
                        if out:
                            results.setdefault(p, {})[config] = out
                finally:
                    redis.stop()
    finally:
        kill_descendants()
        shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    summary = {
        "workloads": {"noop": n["noop"], "sleep": n["sleep"], "sleep_s": 0.01, "latency_samples": n["latency"],
                      "kill": n["kill"], "rq_capped_at": None if args.quick else RQ_CAP},
        "worker_processes": 2, "cpus": os.cpu_count(), "quick": args.quick,
        "load_avg_before": [round(x, 2) for x in load_before], "load_avg_after":
            [round(x, 2) for x in os.getloadavg()], "wall_s": round(time.time() - started, 1),
        "redis_configs": {"default": "redis-server built-in defaults (RDB snapshots, no AOF)",
                          "durable": "appendonly yes, appendfsync everysec"},
        "dojo_store": "SQLite WAL, synchronous FULL (dojo) / NORMAL (dojo_normal); no Redis",
        "kill_test_on": "durable Redis (the workers are killed, not Redis); dojo with synchronous FULL",
        "results": results,
        "ratio_vs_best_peer": summarize(results),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
