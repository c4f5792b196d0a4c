"""Submission over HTTP, side by side with a bare FastAPI app (and Celery when its bench env is there).

    python bench/http_submit.py [--seconds 5] [--samples 100] [--ingress replica,proxy | direct]

One local dojo (Ray on this machine's CPUs, the API through Ray Serve on 127.0.0.1), aiohttp
clients with keep-alive. Each throughput phase runs for ``--seconds``; ``noop`` jobs are delayed an
hour so that nothing runs meanwhile, except in the "running" phase:

  http_single_seq_jobs_per_s          one job per POST /v1/jobs, one client, one after another
  http_single_c32_jobs_per_s          one job per POST, 32 concurrent clients
  http_single_c32_route_jobs_per_s    the same through FastAPI's route (``?via=route``), not serve/submit.py's
                                      short way: what the short way saves
  http_single_c32_running_jobs_per_s  the same while the jobs run (no delay)
  http_batch100_jobs_per_s            100 jobs per POST, one client
  client_submit_c32_jobs_per_s        serve.client.AsyncClient, 32 concurrent submit() calls, one process
  http_dispatch_p50_ms / p99          POST -> the job starts (its own clock), idle queue, one at a time
  healthz_seq_per_s / healthz_c32_per_s   GET /healthz through Serve (what the ingress costs alone)
  bare_fastapi_post_c32_per_s / bare_fastapi_get_seq_per_s   a trivial FastAPI app under uvicorn
                                      (one process, started here), the same clients
  uvicorn_dojo_app_single_seq_jobs_per_s / _c32_   dojo's own app (serve.app.create_app) under plain
                                      uvicorn in one process on the same cluster: the API without Serve
  celery_apply_async_per_s            apply_async from one process on a local Redis, when
                                      bench/.peers-venv/celery exists (bench/vs_peers.py makes it); else null
  lost                                accepted job ids missing afterwards (must be 0)

``--ingress`` lists the ingresses measured one after the other on the same cluster (the API is
deployed afresh for each; by default ``replica,proxy``): ``replica`` is DOJO_INGRESS=replica (each
replica serves DOJO_PORT itself, no proxy; the default), ``proxy`` DOJO_INGRESS=serve (Serve's
proxy). The first one's figures are the top-level keys, the others' are under ``others``, each
with its own ``lost`` check (every mode uses queues of its own). ``--ingress direct`` sets RAY_SERVE_ENABLE_DIRECT_INGRESS=1 before Ray starts (so the Serve
controller and replicas see it) and measures against the port the replica listens on itself
(Serve 2.60 still runs its proxy on DOJO_PORT; see the README's "HTTP submission").

Prints a log on stderr, then ONE JSON line last.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# The checkout this script lives in is what it measures (a worktree's too): its root goes first on the path.
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, os.path.join(_HERE, "peers"))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from common import free_port, log, pct  # noqa: E402

CLIENTS = 32
#: Ray 2.60's own defaults for the settings dojo changes (serve.deployment.SERVE_ENV).
RAY_DEFAULTS = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1",
                "RAY_SERVE_LOG_TO_STDERR": "1", "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
                "RAY_SERVE_PROXY_USE_GRPC": "0"}
TOKEN = "bench-token"
BARE_APP = """
import itertools, sys
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()
ids = itertools.count()

@app.get("/healthz")
async def healthz():
    return {"status": "ok"}

@app.post("/v1/jobs")
async def enqueue(request: Request):
    body = await request.json()
    return JSONResponse({"id": f"j_{next(ids)}", "type": body.get("type"), "status": "queued"}, status_code=201)

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


async def timed(seconds: float, clients: int, one) -> tuple[int, float]:
    """Run ``one()`` from ``clients`` loops until ``seconds`` pass; (calls that returned, elapsed)."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def loop():
        nonlocal done
        while time.perf_counter() < deadline:
            n = await one()  # not `done += await one()`: that reads `done` before the await
            done += n

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    return done, time.perf_counter() - start


class Target:
    """POST and GET against one base URL, recording the ids of accepted jobs per queue."""

    def __init__(self, session, url: str):
        self.session, self.url = session, url
        self.headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        self.accepted: dict[str, set] = {}
        self.refused = 0

    async def post(self, body, query: str = "") -> list[dict]:
        async with self.session.post(self.url + "/v1/jobs" + query, data=json.dumps(body), headers=self.headers) as r:
            text = await r.text()
            if r.status not in (200, 201):
                self.refused += 1
                raise RuntimeError(f"POST /v1/jobs answered {r.status}: {text[:500]}")
            data = json.loads(text)
        jobs = data if isinstance(data, list) else [data]
        for job in jobs:
            if "queue" in job:
                self.accepted.setdefault(job["queue"], set()).add(job["id"])
        return jobs

    async def get(self, path: str) -> dict:
        async with self.session.get(self.url + path, headers=self.headers) as r:
            data = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"GET {path} answered {r.status}: {data}")
            return data


async def rate(name: str, seconds: float, clients: int, one, unit: str = "jobs/s") -> float:
    await asyncio.gather(*(one() for _ in range(min(clients, 8))))  # warm connections and code paths
    done, elapsed = await timed(seconds, clients, one)
    value = done / elapsed
    log(f"{name}: {done} in {elapsed:.2f}s = {value:,.0f} {unit}")
    return value


async def dispatch(target: Target, samples: int, queue: str) -> list[float]:
    """POST a stamp job, poll until it finished; its ``started`` minus the send time."""
    latencies = []
    for i in range(samples + 5):
        sent = time.time()
        [job] = await target.post({"type": "stamp", "queue": queue})
        deadline = time.monotonic() + 120
        while job["status"] not in ("succeeded", "failed"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job['id']} did not finish within 120 s: {job}")
            await asyncio.sleep(0.005)
            job = await target.get(f"/v1/jobs/{job['id']}")
        if i >= 5:  # the first few start the runner
            latencies.append((job["result"]["started"] - sent) * 1000)
        await asyncio.sleep(0.02)
    return latencies


async def measure_dojo(url: str, seconds: float, samples: int, tag: str) -> dict:
    """Every phase on queues of its own, named after ``tag``, so that each run's loss check is its own."""
    import aiohttp

    from serve.client import AsyncClient

    out: dict = {}
    connector = aiohttp.TCPConnector(limit=CLIENTS * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        t = Target(session, url)
        delayed = {"type": "noop", "delay": 3600, "queue": f"http-delayed-{tag}"}

        async def single():
            await t.post(delayed)
            return 1

        async def single_routed():  # a query string: FastAPI's route instead of serve/submit.py's short way
            await t.post(delayed, "?via=route")
            return 1

        async def single_running():
            await t.post({"type": "noop", "queue": f"http-running-{tag}"})
            return 1

        async def batch100():
            return len(await t.post([delayed] * 100))

        async def healthz():
            async with session.get(url + "/healthz") as r:
                await r.read()
            return 1

        out["http_single_seq_jobs_per_s"] = await rate("POST one job, sequential", seconds, 1, single)
        out["http_single_c32_jobs_per_s"] = await rate(f"POST one job, {CLIENTS} clients", seconds, CLIENTS, single)
        out["http_single_c32_route_jobs_per_s"] = await rate(f"POST one job, {CLIENTS} clients, through FastAPI's "
                                                             "route", seconds, CLIENTS, single_routed)
        out["http_batch100_jobs_per_s"] = await rate("POST 100 jobs, sequential", seconds, 1, batch100)
        out["healthz_seq_per_s"] = await rate("GET /healthz, sequential", seconds, 1, healthz, "req/s")
        out["healthz_c32_per_s"] = await rate(f"GET /healthz, {CLIENTS} clients", seconds, CLIENTS, healthz, "req/s")

        async with AsyncClient(url, TOKEN) as client:
            async def submit():
                job = await client.submit("noop", None, delay=3600, queue=f"http-client-{tag}")
                t.accepted.setdefault(job["queue"], set()).add(job["id"])
                return 1

            out["client_submit_c32_jobs_per_s"] = await rate(f"AsyncClient.submit, {CLIENTS} concurrent", seconds,
                                                             CLIENTS, submit)
            batcher = getattr(client, "_batcher", None)
            if batcher is not None:
                log(f"  AsyncClient sent {batcher.items} jobs in {batcher.calls} requests")

        # Last of the throughput phases: the runners it starts keep the CPUs busy for a while.
        out["http_single_c32_running_jobs_per_s"] = await rate(f"POST one job, {CLIENTS} clients, jobs running",
                                                               seconds, CLIENTS, single_running)
        # Let the running phase's jobs drain so the dispatch figures are for an idle queue.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stats = await t.get(f"/v1/queues/http-running-{tag}")
            if stats["counts"].get("queued", 0) + stats["counts"].get("running", 0) == 0:
                break
            await asyncio.sleep(0.5)
        latencies = await dispatch(t, samples, f"http-latency-{tag}")
        out["http_dispatch_p50_ms"] = pct(latencies, 50)
        out["http_dispatch_p99_ms"] = pct(latencies, 99)
        log(f"dispatch over HTTP: p50 {out['http_dispatch_p50_ms']:.2f} ms p99 {out['http_dispatch_p99_ms']:.2f} ms "
            f"over {len(latencies)}")

        accepted = sum(len(ids) for ids in t.accepted.values())
        present = 0
        for queue, ids in t.accepted.items():
            counts = (await t.get(f"/v1/queues/{queue}"))["counts"]
            present += min(len(ids), sum(counts.values()))
        out["accepted"] = accepted
        out["lost"] = accepted - present
        out["refused"] = t.refused
        log(f"accepted {accepted} jobs, {out['lost']} missing afterwards, {t.refused} refused")
    return out


async def measure_bare(url: str, seconds: float) -> dict:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS * 2)) as session:
        async def post():
            async with session.post(url + "/v1/jobs", json={"type": "noop"}) as r:
                await r.read()
            return 1

        async def get():
            async with session.get(url + "/healthz") as r:
                await r.read()
            return 1

        return {"bare_fastapi_get_seq_per_s": await rate("bare FastAPI GET, sequential", seconds, 1, get, "req/s"),
                "bare_fastapi_post_c32_per_s": await rate(f"bare FastAPI POST, {CLIENTS} clients", seconds, CLIENTS,
                                                          post, "req/s")}


def _answers(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    """Whether the app ``proc`` started answers ``/healthz`` on ``port`` within ``timeout`` seconds."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return True
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                return False
            time.sleep(0.2)


def bare_fastapi(seconds: float) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)])
    try:
        if not _answers(port, proc, 60):
            raise SystemExit("the bare FastAPI app did not start")
        return asyncio.run(measure_bare(f"http://127.0.0.1:{port}", seconds))
    finally:
        proc.terminate()
        proc.wait(10)


DOJO_APP = """
import os, sys
import ray
import uvicorn
from actors.settings import NAMESPACE, Settings
from serve.app import create_app

ray.init(address=sys.argv[2], namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
uvicorn.run(create_app(Settings.from_env()), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def dojo_app_uvicorn(seconds: float) -> dict:
    """dojo's own app (create_app) under plain uvicorn in a process of its own, on the same Ray cluster
    and queue actors: what a request costs without Serve's ingress in front."""
    import ray

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.path.dirname(_HERE)}
    proc = subprocess.Popen([sys.executable, "-c", DOJO_APP, str(port), ray.get_runtime_context().gcs_address],
                            env=env, cwd=os.path.dirname(_HERE))
    try:
        if not _answers(port, proc, 120):
            log("dojo's app under uvicorn did not start; skipped")
            return {}
        return asyncio.run(measure_app(f"http://127.0.0.1:{port}", seconds))
    finally:
        proc.terminate()
        proc.wait(20)


async def measure_app(url: str, seconds: float) -> dict:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS * 2)) as session:
        t = Target(session, url)

        async def single():
            await t.post({"type": "noop", "delay": 3600, "queue": "http-uvicorn"})
            return 1

        return {"uvicorn_dojo_app_single_seq_jobs_per_s": await rate("dojo app under uvicorn: POST one job, "
                                                                     "sequential", seconds, 1, single),
                "uvicorn_dojo_app_single_c32_jobs_per_s": await rate(f"dojo app under uvicorn: POST one job, "
                                                                     f"{CLIENTS} clients", seconds, CLIENTS, single)}


CELERY_SCRIPT = """
import sys, time
sys.path.insert(0, sys.argv[2])
from celery import Celery
app = Celery("bench", broker=sys.argv[1])
task = app.signature("bench.noop")
n = int(sys.argv[3])
for _ in range(50):
    task.apply_async()
start = time.perf_counter()
for _ in range(n):
    task.apply_async()
print(n / (time.perf_counter() - start))
"""


def celery(n: int) -> tuple[float | None, str]:
    """apply_async from one process against a Redis of our own; (rate, note)."""
    python = os.path.join(_HERE, ".peers-venv", "celery", "bin", "python")
    redis = shutil.which("redis-server")
    if not os.path.exists(python) or redis is None:
        return None, "no bench/.peers-venv/celery or redis-server (bench/vs_peers.py --only celery makes them)"
    port = free_port()
    work = tempfile.mkdtemp(prefix="dojo-bench-redis-")
    server = subprocess.Popen([redis, "--port", str(port), "--bind", "127.0.0.1", "--dir", work, "--save", ""],
                              stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        done = subprocess.run([python, "-c", CELERY_SCRIPT, f"redis://127.0.0.1:{port}/0",
                               os.path.join(_HERE, "peers"), str(n)], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            return None, f"celery run failed: {done.stderr.strip()[-300:]}"
        return float(done.stdout.strip().splitlines()[-1]), "redis defaults, one process"
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def direct_ingress_url(settings) -> str:
    """The port the API's replica listens on itself (Serve's direct ingress), from the controller."""
    import ray
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        groups = ray.get(controller.get_target_groups.remote())
        ports = [t.port for g in groups for t in g.targets if t.port != settings.port]
        if ports:
            return f"http://127.0.0.1:{ports[0]}"
        time.sleep(0.5)
    raise SystemExit("direct ingress is on but no replica port was published")


INGRESS_SETTING = {"replica": "replica", "proxy": "serve", "direct": "serve"}


def measure_ingress(mode: str, seconds: float, samples: int) -> dict:
    """Deploy the API with ``mode``'s ingress on the running cluster, measure it, take it down again."""
    from ray import serve as ray_serve

    from actors.settings import Settings
    from serve.deployment import deploy
    from serve.launcher import wait_healthy

    os.environ["DOJO_INGRESS"] = INGRESS_SETTING[mode]
    settings = Settings.from_env()
    try:
        deploy(settings)
        wait_healthy(settings)
        url = direct_ingress_url(settings) if mode == "direct" else f"http://{settings.host}:{settings.port}"
        log(f"dojo API at {url} (--ingress {mode}, DOJO_INGRESS={settings.ingress})")
        out = asyncio.run(measure_dojo(url, seconds, samples, tag=mode))
    finally:
        # Serve keeps its proxy placement until it shuts down: the next mode starts it afresh.
        ray_serve.shutdown()
    return {"ingress": mode, "DOJO_INGRESS": settings.ingress, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each throughput phase")
    parser.add_argument("--samples", type=int, default=100, help="dispatch latency samples")
    parser.add_argument("--ingress", default="replica,proxy",
                        help="comma-separated, measured in this order on one cluster: replica (DOJO_INGRESS=replica, "
                             "the default), proxy (DOJO_INGRESS=serve: Serve's proxy), direct (Serve's direct "
                             "ingress; alone only). The first one's figures are the top-level keys")
    parser.add_argument("--serve-env", choices=("dojo", "ray"), default="dojo",
                        help="Ray Serve settings: dojo's (serve.deployment.SERVE_ENV) or Ray's defaults")
    parser.add_argument("--celery-jobs", type=int, default=5000)
    args = parser.parse_args()
    modes = [m.strip() for m in args.ingress.split(",") if m.strip()]
    if not modes or set(modes) - set(INGRESS_SETTING) or len(set(modes)) != len(modes):
        parser.error(f"--ingress takes distinct modes out of {', '.join(INGRESS_SETTING)}, got {args.ingress!r}")
    if "direct" in modes and len(modes) > 1:
        parser.error("--ingress direct changes how Ray starts: measure it alone")

    result: dict = {"cpus": os.cpu_count(), "seconds_per_phase": args.seconds, "clients": CLIENTS,
                    "ingress": modes[0], "serve_env": args.serve_env,
                    "load_avg_before": [round(x, 2) for x in os.getloadavg()]}
    result.update(bare_fastapi(args.seconds))
    state = tempfile.mkdtemp(prefix="dojo-bench-")
    os.environ.update({"DOJO_STATE_DIR": state, "DOJO_PORT": str(free_port()), "DOJO_JOB_MODULES": "pipelines.sample",
                       "DOJO_API_TOKEN": TOKEN, "DOJO_WORKER_TOKEN": "bench-worker", "DOJO_SECRET": "bench-secret",
                       "RAY_AUTH_MODE": "token"})
    from serve.deployment import SERVE_ENV, serve_env

    # Before Ray starts, as `dojo up` does: Serve's controller and proxy inherit this environment.
    os.environ.update(serve_env() if args.serve_env == "dojo" else {k: RAY_DEFAULTS[k] for k in SERVE_ENV})
    result["serve_env"] = {k: os.environ[k] for k in SERVE_ENV}
    if modes == ["direct"]:
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"  # Ray's processes read it when they start
    import ray

    from actors.settings import NAMESPACE, Settings

    ray.init(address="local", include_dashboard=False, namespace=NAMESPACE, log_to_driver=False,
             configure_logging=False)
    try:
        result["sqlite_synchronous"] = Settings.from_env().sqlite_sync
        first, *others = [measure_ingress(mode, args.seconds, args.samples) for mode in modes]
        result.update(first)
        if others:
            result["others"] = [{k: round(v, 2) if isinstance(v, float) else v for k, v in other.items()}
                                for other in others]
        result.update(dojo_app_uvicorn(args.seconds))
    finally:
        ray.shutdown()
        shutil.rmtree(state, ignore_errors=True)
    rate_, note = celery(args.celery_jobs)
    result["celery_apply_async_per_s"] = rate_
    result["celery_note"] = note
    if rate_:
        log(f"celery apply_async: {rate_:,.0f} /s")
    result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    bare = result["bare_fastapi_post_c32_per_s"]
    result["c32_vs_bare_fastapi_post"] = result["http_single_c32_jobs_per_s"] / bare if bare else None
    for other in result.get("others", ()):
        other["c32_vs_bare_fastapi_post"] = round(other["http_single_c32_jobs_per_s"] / bare, 3) if bare else None
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
