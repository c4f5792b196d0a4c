"""Queue throughput and latency, side by side with plain Ray tasks, in one run.

    python bench/throughput.py [--jobs 20000]

Prints a table-ish log, then ONE JSON line last: noop_jobs_per_s (enqueue →
succeeded, durable, N no-op jobs), ray_tasks_per_s (the same N as plain Ray
tasks), dispatch_p50/p99_ms (enqueue → job starts, idle queue), event_p50/p99_ms
(progress reported → received by a WebSocket client through Serve).
"""

from __future__ import annotations

import os
import sys

# The checkout this script lives in is what it measures (a worktree's too): its root goes first on the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))

sys.path.insert(0, os.path.join(_HERE, "peers"))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from common import free_port, pct  # noqa: E402




async def bench_noop(queues, n: int) -> float:
    queue = "bench"
    await queues.ping(queue, create=True)
    start = time.perf_counter()
    for i in range(0, n, 1000):
        await queues.enqueue([{"type": "noop", "queue": queue} for _ in range(min(1000, n - i))])
    enqueued = time.perf_counter() - start
    while True:
        stats = await queues.stats(queue)
        if stats["counts"]["succeeded"] + stats["counts"]["failed"] >= n:
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    assert stats["counts"]["failed"] == 0, stats
    print(f"dojo: {n} no-op jobs durable enqueue → succeeded in {elapsed:.2f}s (enqueue {enqueued:.2f}s)",
          file=sys.stderr)
    return n / elapsed


def bench_ray(n: int) -> float:
    import ray

    @ray.remote(num_cpus=1)
    def noop():
        return None

    ray.get([noop.remote() for _ in range(100)])  # warm the workers
    start = time.perf_counter()
    ray.get([noop.remote() for _ in range(n)])
    elapsed = time.perf_counter() - start
    print(f"ray: {n} no-op tasks in {elapsed:.2f}s", file=sys.stderr)
    return n / elapsed


async def bench_dispatch(queues, samples: int) -> list[float]:
    queue = "latency"
    await queues.ping(queue, create=True)
    latencies = []
    for i in range(samples + 5):
        sent = time.time()
        [job] = await queues.enqueue([{"type": "stamp", "queue": queue}])
        while True:
            job = await queues.get(job["id"])
            if job["status"] == "succeeded":
                break
            await asyncio.sleep(0.01)
        if i >= 5:  # the first few warm the runners up
            latencies.append((job["result"]["started"] - sent) * 1000)
        await asyncio.sleep(0.02)
    return latencies


async def bench_events(url: str, token: str, count: int) -> list[float]:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    latencies = []
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/v1/jobs", json={"type": "progress", "payload": {"count": count, "pause": 0.005},
                                                  "delay": 1.0}, headers=headers) as r:
            job = await r.json()
        async with s.ws_connect(f"{url}/v1/jobs/{job['id']}/events?after=0", headers=headers) as ws:
            async for msg in ws:
                received = time.time()
                event = json.loads(msg.data)
                if event["kind"] == "progress":
                    latencies.append((received - event["data"]["sent_at"]) * 1000)
                if event["kind"] == "status" and event["data"]["status"] in ("succeeded", "failed"):
                    break
    return latencies


async def main_async(args) -> dict:
    from actors.facade import Queues
    from actors.settings import Settings
    from serve.deployment import deploy
    from serve.launcher import wait_healthy

    settings = Settings.from_env()
    queues = Queues(settings)
    noop_rate = await bench_noop(queues, args.jobs)
    dispatch = await bench_dispatch(queues, args.samples)
    print(f"dispatch p50 {pct(dispatch, 50):.2f} ms p99 {pct(dispatch, 99):.2f} ms", file=sys.stderr)
    deploy(settings)
    wait_healthy(settings)
    events = await bench_events(f"http://{settings.host}:{settings.port}", settings.api_token, args.events)
    print(f"events p50 {pct(events, 50):.2f} ms p99 {pct(events, 99):.2f} ms over {len(events)}", file=sys.stderr)
    return {"noop_jobs": args.jobs, "noop_jobs_per_s": round(noop_rate, 1),
            "dispatch_p50_ms": round(pct(dispatch, 50), 2), "dispatch_p99_ms": round(pct(dispatch, 99), 2),
            "dispatch_samples": len(dispatch),
            "event_p50_ms": round(pct(events, 50), 2), "event_p99_ms": round(pct(events, 99), 2),
            "event_samples": len(events), "sqlite_synchronous": settings.sqlite_sync}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix="dojo-bench-")
    os.environ.update({"DOJO_STATE_DIR": state, "DOJO_PORT": str(free_port()),
                       "DOJO_JOB_MODULES": "pipelines.sample"})
    import ray

    from actors.settings import NAMESPACE

    ray.init(address="local", include_dashboard=False, namespace=NAMESPACE, log_to_driver=False,
             configure_logging=False)
    ray_rate = bench_ray(args.jobs)
    result = asyncio.run(main_async(args))
    result["ray_tasks_per_s"] = round(ray_rate, 1)
    result["noop_vs_ray_tasks"] = round(result["noop_jobs_per_s"] / ray_rate, 2)
    result["cpus"] = os.cpu_count()
    ray.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
