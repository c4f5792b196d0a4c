"""Durable sleeps and steps: what a sleeping job holds, how late it wakes, what a step costs.

    python bench/durable.py [--jobs 10000] [--seconds 1] [--step-jobs 200] [--steps 10]

On a local Ray cluster and one queue (no HTTP), in one run:

- ``--jobs`` ``durable_nap`` jobs (pipelines/sample.py), each sleeping ``--seconds`` durably then
  finishing. ``sleeping_peak``: most jobs asleep at once; ``sleeping_tasks_peak``: leases (an attempt,
  a runner's place, a Ray task) held by sleeping jobs, sampled whenever the count of sleeping jobs
  peaks (aim 0); ``runners_while_all_asleep``: runner tasks alive (idle) at a moment when every
  unfinished job was asleep, or null if that moment never came;
  ``wake_p50_s`` / ``wake_p99_s``: how long after its wake time each job's code ran again (aim p99
  <= 1 s on 2 cores).
- ``--step-jobs`` ``steps`` jobs with ``--steps`` no-op ``ctx.step`` calls each, and as many with none
  (the baseline, same type): ``step_overhead_p50_ms`` is a step's cost (aim <= 2 ms),
  ``job_with_steps_p50_ms`` / ``job_without_steps_p50_ms`` the attempts' durations.

Progress goes to stderr; the last line is one JSON object.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The checkout this script lives in is what it measures (a worktree's too): its root goes first on the path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

QUEUE = "durable"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else float("nan")


async def finished(queues, job_type: str, total: int) -> list[dict]:
    jobs, cursor = [], None
    while len(jobs) < total:
        rows = await queues.list(QUEUE, type=job_type, limit=1000, before_id=cursor)
        if not rows:
            break
        jobs += rows
        cursor = rows[-1]["id"]
    return jobs


async def sleepers(queues, n: int, seconds: float) -> dict:
    started = time.perf_counter()
    for i in range(0, n, 1000):
        await queues.enqueue([{"type": "durable_nap", "queue": QUEUE, "payload": {"seconds": seconds}}
                              for _ in range(min(1000, n - i))])
    say(f"{n} durable_nap jobs enqueued in {time.perf_counter() - started:.1f}s")
    peak, tasks_peak, polls, runners_asleep = 0, 0, 0, None
    while True:
        stats = await queues.stats(QUEUE)
        counts = stats["counts"]
        polls += 1
        asleep = counts.get("sleeping", 0)
        if asleep > peak:
            # What the sleeping jobs hold at their peak: leases (an attempt, its runner's place, its Ray task).
            peak = asleep
            rows = await queues.list(QUEUE, status="sleeping", limit=1000)
            tasks_peak = max(tasks_peak, sum(1 for j in rows if j.get("lease")))
        if asleep and not counts.get("queued", 0) and not counts.get("running", 0):
            runners_asleep = stats.get("runners")  # every unfinished job asleep: runners left (idle ones)
        done = counts.get("succeeded", 0) + counts.get("failed", 0)
        if done >= n:
            break
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - started
    jobs = [j for j in await finished(queues, "durable_nap", n) if j["status"] == "succeeded"]
    late = [j["result"]["late_s"] for j in jobs]
    say(f"all woke and finished in {elapsed:.1f}s; asleep at once {peak}; lateness p50 {pct(late, 50):.3f}s "
        f"p99 {pct(late, 99):.3f}s")
    return {"jobs": n, "sleep_s": seconds, "sleeping_peak": peak, "sleeping_tasks_peak": tasks_peak,
            "runners_while_all_asleep": runners_asleep,
            "succeeded": len(jobs), "wake_p50_s": round(pct(late, 50), 3), "wake_p99_s": round(pct(late, 99), 3),
            "sleepers_total_s": round(elapsed, 2), "stat_polls": polls}


async def stepped(queues, jobs: int, steps: int, before: int) -> dict:
    specs = [{"type": "steps", "queue": QUEUE, "payload": {"n": steps if i % 2 else 0}} for i in range(2 * jobs)]
    await queues.enqueue(specs)
    while True:
        counts = (await queues.stats(QUEUE))["counts"]
        if counts.get("succeeded", 0) + counts.get("failed", 0) >= 2 * jobs + before:
            break
        await asyncio.sleep(0.1)
    rows = [j for j in await finished(queues, "steps", 2 * jobs) if j["status"] == "succeeded"]
    with_steps = [j for j in rows if j["payload"]["n"]]
    without = [j for j in rows if not j["payload"]["n"]]
    per_step = [1000 * j["result"]["steps_s"] / steps for j in with_steps]
    duration = lambda js: [1000 * j["history"][-1]["duration"] for j in js]  # noqa: E731
    return {"step_jobs": len(with_steps), "steps_per_job": steps,
            "step_overhead_p50_ms": round(statistics.median(per_step), 3),
            "step_overhead_p99_ms": round(pct(per_step, 99), 3),
            "job_with_steps_p50_ms": round(statistics.median(duration(with_steps)), 2),
            "job_without_steps_p50_ms": round(statistics.median(duration(without)), 2)}


async def main_async(args) -> dict:
    from actors.facade import Queues
    from actors.settings import Settings

    queues = Queues(Settings.from_env())
    await queues.ping(QUEUE, create=True)
    result = await sleepers(queues, args.jobs, args.seconds)
    result.update(await stepped(queues, args.step_jobs, args.steps, before=result["succeeded"]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--step-jobs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    os.environ.update({"DOJO_STATE_DIR": tempfile.mkdtemp(prefix="dojo-bench-durable-"),
                       "DOJO_JOB_MODULES": "pipelines.sample"})
    import ray

    from actors.settings import NAMESPACE

    ray.init(address="local", include_dashboard=False, namespace=NAMESPACE, log_to_driver=False,
             configure_logging=False)
    try:
        result = asyncio.run(main_async(args))
    finally:
        ray.shutdown()
    result["cpus"] = os.cpu_count()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
