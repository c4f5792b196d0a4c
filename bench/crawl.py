"""Benchmark of the clip crawl (issue 4): rate-limited, unlimited and sequential, one JSON line at the end.

200 streamers x 30 clips fetched with ``first=20`` (2 pages each, 400 requests)
against the local fake Helix with 100 ms latency:

- limited: the server's bucket is 20 requests/s, burst 20, so the least
  possible time is ``rate_limit_bound_s = (requests - burst) / rate``;
- unlimited: no bucket, at most 32 requests in flight:
  ``latency_bound_s = requests * latency / 32``;
- sequential: the seed system (one worker, one request at a time).

Each scenario gets a fresh server and database. ``duplicates`` counts clips
inserted more than once and streamers reported more than once; ``missing``
counts clips the server has that the database lacks; ``bucket_exceeded`` is
counted by the server. Aims: those three 0, ``limited_over_bound <= 1.10``,
``speedup_vs_sequential >= 10``.

By default the limited and unlimited runs go through dojo: a ``clips.crawl``
parent on a local Ray fans out one ``clips.streamer`` child per streamer, and
the children share the queue actor's bucket and in-flight places. The cluster
is warm, as a running one is: every scenario's queue actor is up and a small
crawl has run before anything is timed. ``--via in-process`` runs the same
crawl steps (:data:`Crawler`) in one asyncio process instead; the sequential
baseline always runs in-process.

    .venv/bin/python bench/crawl.py                # the full run (~75 s)
    .venv/bin/python bench/crawl.py --timeline     # plus each run's milestones, from the queue's events
    .venv/bin/python bench/crawl.py --streamers 40 # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable

# The checkout this script lives in is what it measures (a worktree's too): its root goes first on the path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
else:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.clips.crawl import crawl_all  # noqa: E402
from pipelines.clips.db import ClipDB  # noqa: E402
from pipelines.clips.fake_helix import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, FakeHelix, fake_streamers  # noqa: E402
from pipelines.clips.helix import HelixClient  # noqa: E402
from pipelines.clips.limits import LocalLimiter  # noqa: E402

#: The crawl step: given the streamers, crawl them all and return one summary per streamer.
Crawler = Callable[[list[dict]], Awaitable[list[dict]]]


@dataclass(frozen=True)
class Scenario:
    name: str
    server: dict  # FakeHelix options on top of the data options
    limiter: Callable[[], LocalLimiter]
    concurrency: int | None  # streamers at once; None: all


def in_process_crawler(server: FakeHelix, db: ClipDB, limiter: LocalLimiter, *, first: int,
                       concurrency: int | None) -> tuple[Crawler, Callable[[], Awaitable[None]]]:
    """Crawl with ``crawl_streamer`` in this process's event loop; returns (crawl, close)."""
    helix = HelixClient(server.helix_url, DEFAULT_CLIENT_ID, DEFAULT_TOKEN, limiter=limiter, max_attempts=8)
    start = server.config.anchor
    end = start + timedelta(hours=server.config.span_hours)

    async def crawl(streamers: list[dict]) -> list[dict]:
        return await crawl_all(streamers, helix=helix, db=db, started_at=start, ended_at=end,
                               window=end - start, first=first, concurrency=concurrency)

    return crawl, helix.close


class DojoCrawl:
    """The crawl as dojo runs it: a ``clips.crawl`` parent on a local Ray fans out one child per
    streamer; children share the queue actor's token bucket and in-flight slots."""

    def __init__(self):
        import os

        import ray

        from actors.settings import NAMESPACE

        os.environ.setdefault("DOJO_STATE_DIR", tempfile.mkdtemp(prefix="dojo-bench-crawl-state-"))
        os.environ["DOJO_JOB_MODULES"] = "pipelines.sample,pipelines.clips.jobs"
        if not ray.is_initialized():
            ray.init(address="local", include_dashboard=False, namespace=NAMESPACE, log_to_driver=False,
                     configure_logging=False)
        self.actors: dict[str, tuple[str, Any]] = {}

    def open_queue(self, name: str, db_path: Path, limited: bool, args) -> None:
        """Start the queue actor of one scenario, its jobs pointed at ``db_path`` and the scenario's limits.

        A queue's actor is always up in production, so every scenario's actor starts before the
        warm-up, unmeasured; the warm-up then leaves Ray's worker pool as a running cluster has it.
        """
        import os

        import ray

        from actors.facade import queue_actor
        from actors.settings import Settings

        # Unlimited means no bucket at all: left unset, the setting falls back to Helix's default
        # 800 requests/minute, which would cap the "unlimited" run at 13 requests/s.
        os.environ.update({"DOJO_CLIPS_DB": str(db_path),
                           "DOJO_HELIX_LIMITER": os.environ.get("BENCH_LIMITER", "shared"),
                           "DOJO_HELIX_MAX_IN_FLIGHT": str(args.max_in_flight),
                           "DOJO_CLIPS_PAGE_SIZE": str(args.first), "DOJO_HELIX_BURST": str(args.burst),
                           "DOJO_HELIX_RATE": str(args.rate) if limited else "off"})
        queue = f"crawl-{name}-{os.getpid()}"
        actor = queue_actor(queue, Settings.from_env())  # its jobs get the environment above
        ray.get(actor.ping.remote())
        self.actors[name] = (queue, actor)

    def crawler(self, server: FakeHelix, db: ClipDB, scenario: "Scenario", args) -> tuple[Crawler, Callable]:
        import csv

        from actors.facade import Queues
        from actors.settings import Settings

        queue, actor = self.actors[scenario.name]
        queues = Queues(Settings.from_env())
        start = server.config.anchor
        end = start + timedelta(hours=server.config.span_hours)

        async def crawl(streamers: list[dict]) -> list[dict]:
            source = Path(db.path).with_suffix(".csv")
            with open(source, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=["broadcaster_id", "login"])
                writer.writeheader()
                writer.writerows(streamers)
            submitted = time.time()
            [parent] = await queues.enqueue([{"type": "clips.crawl", "queue": queue, "payload": {
                "source": str(source), "helix_url": server.url, "first": args.first,
                "started_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "ended_at": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "window_hours": (end - start).total_seconds() / 3600}}])
            while True:
                job = await queues.get(parent["id"])
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.05)
            assert job["status"] == "succeeded", job
            if args.timeline:
                print(f"{scenario.name:>10}  timeline: {await timeline(actor, submitted)}", file=sys.stderr, flush=True)
            children = await actor.children.remote(parent["id"])
            return [c["result"] for c in children if c["status"] == "succeeded"]

        async def close() -> None:
            return None

        return crawl, close


async def timeline(actor, since: float) -> str:
    """Seconds from submission to the flow's milestones, read from the queue's own event log."""
    events, after = [], 0
    while True:
        batch = await actor.events.remote(None, after, 1000)
        events += batch
        if len(batch) < 1000:
            break
        after = batch[-1]["gseq"]
    marks: dict[str, list[float]] = {}
    for event in events:
        data = event["data"]
        if event["kind"] == "status" and event["at"] >= since:
            role = "child" if data.get("type") == "clips.streamer" else "parent"
            marks.setdefault(f"{role} {data['status']}", []).append(round(event["at"] - since, 2))
    parts = [f"{name} {min(at)}" + (f"..{max(at)}" if len(at) > 1 else "") for name, at in marks.items()]
    return ", ".join(parts)


async def run(scenario: Scenario, streamers: list[dict], data: dict, first: int, workdir: Path,
              dojo: "DojoCrawl | None" = None, args=None) -> dict:
    server = FakeHelix(**data, **scenario.server)
    await server.start()
    try:
        db = ClipDB(workdir / f"{scenario.name}.sqlite3")
        if dojo is not None and scenario.name != "sequential":
            crawl, close = dojo.crawler(server, db, scenario, args)
        else:
            crawl, close = in_process_crawler(server, db, scenario.limiter(), first=first,
                                              concurrency=scenario.concurrency)
        try:
            t0 = time.perf_counter()
            summaries = await crawl(streamers)
            wall = time.perf_counter() - t0
        finally:
            await close()
        expected = {c["id"] for s in streamers for c in server.clips(s["broadcaster_id"])}
        stored = set(db.clip_ids())
        reported = [s["broadcaster_id"] for s in summaries]
        duplicates = (sum(s["new"] for s in summaries) - len(stored)) + (len(reported) - len(set(reported)))
        result = {"wall_s": round(wall, 3), "requests": server.requests, "clips": len(stored),
                  "duplicates": duplicates, "missing": len(expected - stored),
                  "bucket_exceeded": server.bucket_exceeded, "throttled": server.throttled,
                  "max_in_flight": server.max_in_flight}
        print(f"{scenario.name:>10}: {json.dumps(result)}", flush=True)
        return result
    finally:
        await server.stop()


async def main(args: argparse.Namespace) -> dict:
    streamers = fake_streamers(args.streamers)
    data = {"seed": args.seed, "clips_per_broadcaster": args.clips, "latency": args.latency,
            "broadcasters": {s["broadcaster_id"]: s["login"] for s in streamers}}
    scenarios = {
        "limited": Scenario("limited", {"rate": args.rate, "burst": args.burst},
                            lambda: LocalLimiter.under(args.rate, args.burst, args.max_in_flight), None),
        "unlimited": Scenario("unlimited", {}, lambda: LocalLimiter(max_in_flight=args.max_in_flight), None),
        "sequential": Scenario("sequential", {}, lambda: LocalLimiter(max_in_flight=1), 1),
    }
    dojo = DojoCrawl() if args.via == "dojo" else None
    with tempfile.TemporaryDirectory(prefix="dojo-bench-crawl-") as tmp:
        if dojo is not None:  # start the runner processes once, unmeasured (a warm cluster, as in production)
            for name in ("warmup", "limited", "unlimited"):
                dojo.open_queue(name, Path(tmp) / f"{name}.sqlite3", name == "limited", args)
            await run(Scenario("warmup", {}, lambda: None, None), streamers[:20], data, args.first, Path(tmp),
                      dojo, args)
        results = {name: await run(s, streamers, data, args.first, Path(tmp), dojo, args)
                   for name, s in scenarios.items()}
    requests = results["limited"]["requests"]
    rate_bound = (requests - args.burst) / args.rate
    latency_bound = results["unlimited"]["requests"] * args.latency / args.max_in_flight
    return {
        "streamers": args.streamers,
        "requests": requests,
        "limited_wall_s": results["limited"]["wall_s"],
        "rate_limit_bound_s": round(rate_bound, 3),
        "limited_over_bound": round(results["limited"]["wall_s"] / rate_bound, 3),
        "unlimited_wall_s": results["unlimited"]["wall_s"],
        "latency_bound_s": round(latency_bound, 3),
        "sequential_wall_s": results["sequential"]["wall_s"],
        "speedup_vs_sequential": round(results["sequential"]["wall_s"] / results["unlimited"]["wall_s"], 2),
        "duplicates": sum(r["duplicates"] for r in results.values()),
        "missing": sum(r["missing"] for r in results.values()),
        "bucket_exceeded": sum(r["bucket_exceeded"] for r in results.values()),
        "unlimited_max_in_flight": results["unlimited"]["max_in_flight"],
        "mode": ("dojo: clips.crawl flow on local Ray, shared bucket and slots in the queue actor; "
                 "sequential baseline in-process" if dojo else "in-process asyncio, LocalLimiter"),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--streamers", type=int, default=200)
    p.add_argument("--clips", type=int, default=30)
    p.add_argument("--first", type=int, default=20)
    p.add_argument("--latency", type=float, default=0.1)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--burst", type=int, default=20)
    p.add_argument("--max-in-flight", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeline", action="store_true",
                   help="print each dojo run's milestones (parent and children states, seconds after submit)")
    p.add_argument("--via", choices=["dojo", "in-process"], default="dojo",
                   help="crawl through dojo's queue (default) or in one asyncio process")
    return p


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parser().parse_args()))), flush=True)
