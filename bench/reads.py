"""Reads never slow writes: submissions beside replaying followers and searching clients, in one run.

    python bench/reads.py [--jobs 30000] [--seconds 20] [--seeded PATH] [--reads-on-loop]

Seeds the ``default`` queue with ``--jobs`` finished jobs (``bench/seed.py``: rows written straight into
SQLite; ``--seeded`` copies a database seeded before, e.g. with 1,000,000 jobs), starts a local dojo
(Ray + Serve on 127.0.0.1) on it and measures, each phase ``--seconds`` long:

* ``alone``: one-job POSTs (``noop``) from 8 clients;
* ``followers``: the same beside 2 WebSocket followers replaying the queue's events from ``after=0``
  (``replay_events_per_s`` per follower; each checks it got every gseq once, in order);
* ``searchers``: the same beside 2 clients searching (``GET /v1/jobs?q=...``; search p50/p99);

then, alone, ``list_p50_ms`` over the list filters of the API (status, type, a time window, paging) and
``search_alone_p50_ms`` (one searching client, nothing else running); last, dispatch latency (enqueue
→ start of one ``stamp`` job at a time, from the job's record) idle and beside 2 searching clients:
``dispatch_p99_ratio`` (aim <= 2).
``--reads-on-loop`` runs the queue actor's history reads on its event loop, as before the reader
threads (the baseline to compare with).

Before the dojo starts, the same three phases run against the queue's rules and store alone, in this
process (no Ray, no HTTP: what the actor's loop itself can do), once with the reads on the loop and
once on the reader threads, side by side: ``loop_*`` figures, enqueue+commit per second from 8
writers; and the store's list and search queries themselves (``sql_*``, p50/p99 in ms). Prints a log, then ONE JSON line last. Aims on 2 cores: submit rate >= 0.7x alone beside the
followers and >= 0.8x beside the searchers, search p50 <= 50 ms.
"""

from __future__ import annotations

import os
import sys

# serve.launcher turns Ray's token auth on when imported; this bench starts its own local cluster after
# importing ray, so it keeps auth off unless told otherwise (the setting is read when ray is imported).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

# The checkout this script lives in is what it measures (a worktree's too): its root goes first on the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, os.path.join(_HERE, "peers"))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from common import free_port, log, pct  # noqa: E402

CLIENTS = 8
SEARCH_TERMS = ("order-00{:05d}", "配信者", "在庫切れ", "bad input {:d}", "切り抜き ナレ", "echo {:d}")


async def post_loop(session, url: str, headers: dict, stop: float, done: list) -> None:
    while time.monotonic() < stop:
        async with session.post(f"{url}/v1/jobs", json={"type": "noop"}, headers=headers) as response:
            if response.status >= 300:
                raise RuntimeError(f"POST /v1/jobs answered {response.status}: {await response.text()}")
            await response.read()
        done.append(time.monotonic())


async def submit(url: str, headers: dict, seconds: float) -> float:
    import aiohttp

    done: list[float] = []
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        start = time.monotonic()
        await asyncio.gather(*(post_loop(session, url, headers, stop, done) for _ in range(CLIENTS)))
    return len(done) / (time.monotonic() - start)


async def follow(url: str, headers: dict, stop: asyncio.Event, out: dict) -> None:
    """A WebSocket follower of the whole queue from after=0; checks every gseq comes once, in order."""
    import aiohttp

    last, count, start = 0, 0, time.monotonic()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/v1/queues/default/events?after=0", headers=headers,
                                      max_msg_size=0) as ws:
            while not stop.is_set():
                try:
                    message = await asyncio.wait_for(ws.receive(), 0.5)
                except asyncio.TimeoutError:
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"follower got {message.type}")
                gseq = json.loads(message.data)["gseq"]
                if gseq <= last:
                    raise RuntimeError(f"follower got gseq {gseq} after {last} (duplicate or out of order)")
                last, count = gseq, count + 1
    out.update(events=count, seconds=time.monotonic() - start, last_gseq=last)


async def search_loop(url: str, headers: dict, stop: asyncio.Event, jobs: int, latencies: list) -> None:
    import aiohttp

    rng = random.Random(len(latencies))
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            term = rng.choice(SEARCH_TERMS).format(rng.randrange(jobs))
            start = time.perf_counter()
            async with session.get(f"{url}/v1/jobs", params={"q": term, "limit": 50}, headers=headers) as response:
                body = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"search answered {response.status}: {body}")
            latencies.append((time.perf_counter() - start) * 1000)


async def dispatch_loop(url: str, headers: dict, stop: asyncio.Event, latencies: list) -> None:
    """One ``stamp`` job at a time: enqueue → start, from the job's own record (the queue's clock)."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            async with session.post(f"{url}/v1/jobs", json={"type": "stamp"}, headers=headers) as response:
                job = await response.json()
            while job.get("status") not in ("succeeded", "failed"):
                await asyncio.sleep(0.01)
                async with session.get(f"{url}/v1/jobs/{job['id']}", headers=headers) as response:
                    job = await response.json()
            latencies.append((job["started_at"] - job["created_at"]) * 1000)


async def dispatches(url: str, headers: dict, seconds: float, jobs: int, searchers: int) -> list[float]:
    """Dispatch latencies over ``seconds``, beside ``searchers`` searching clients."""
    stop, latencies = asyncio.Event(), []
    tasks = [asyncio.ensure_future(search_loop(url, headers, stop, jobs, [])) for _ in range(searchers)]
    asyncio.get_running_loop().call_later(seconds, stop.set)
    await dispatch_loop(url, headers, stop, latencies)
    await asyncio.gather(*tasks)
    return latencies


async def beside(url: str, headers: dict, seconds: float, side) -> float:
    """Submit rate while ``side(stop)`` coroutines run."""
    stop = asyncio.Event()
    tasks = side(stop)
    await asyncio.sleep(0.5)
    rate = await submit(url, headers, seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return rate


async def lists(url: str, headers: dict, rounds: int, now: float) -> list[float]:
    import aiohttp

    filters = [{}, {"status": "failed"}, {"status": "succeeded,cancelled"}, {"type": "sleep"},
               {"type": "fails", "status": "failed"}, {"since": now - 1800, "until": now - 600},
               {"until": now - 2400}, {"status": "queued,running"}]
    latencies = []
    async with aiohttp.ClientSession() as session:
        for _ in range(rounds):
            for f in filters:
                cursor = None
                for _page in range(3):
                    params = {**f, "limit": 50, **({"cursor": cursor} if cursor else {})}
                    start = time.perf_counter()
                    async with session.get(f"{url}/v1/jobs", params=params, headers=headers) as response:
                        body = await response.json()
                    latencies.append((time.perf_counter() - start) * 1000)
                    cursor = body["next_cursor"]
                    if not cursor:
                        break
    return latencies


async def loop_bench(db: Path, jobs: int, seconds: float) -> dict:
    """The actor's loop alone: 8 writers (enqueue one job, await the group commit) beside readers."""
    from actors.jobs import load_modules
    from actors.queue import JobQueue, Limits
    from actors.reads import Reader
    from actors.store import Store, select_event_texts, select_jobs

    from actors.search import SearchIndex
    from actors.store import index_pending

    store = Store(db, "NORMAL")
    while index_pending(store.db, 5000) >= 5000:  # the dojo's indexer has caught up with the seeded jobs
        pass
    search = SearchIndex(store)  # and keeps up with the new ones between commits, as in the actor
    q = JobQueue("default", store, Limits(), now=time.time(), types=load_modules(["pipelines.sample"]))
    pending: list = []

    def flush():
        store.commit()
        search.wake()
        q.take_events()
        for future in pending:
            future.set_result(None)
        pending.clear()

    async def commit():
        future = asyncio.get_running_loop().create_future()
        if not pending:
            asyncio.get_running_loop().call_soon(flush)
        pending.append(future)
        await future

    async def writer(stop, done):
        while not stop.is_set():
            q.enqueue_many([{"type": "echo", "delay": 86400}], time.time())
            await commit()
            done.append(1)
            await asyncio.sleep(0)

    async def follower(reader, stop):
        after = 0
        while not stop.is_set():
            rows = await reader.run(select_event_texts, None, after, 1000)
            after = rows[-1][0] if len(rows) == 1000 else 0
            await asyncio.sleep(0)  # the next page is the next call: other calls come between

    async def searcher(reader, stop):
        rng = random.Random(1)
        while not stop.is_set():
            await reader.run(select_jobs, text=rng.choice(SEARCH_TERMS).format(rng.randrange(jobs)), limit=51)
            await asyncio.sleep(0)

    async def ticker(stop):  # the actor's tick: the search index's batch when nothing waits to be written
        while not stop.is_set():
            if search.due(not store.dirty and not pending, time.monotonic()):
                search.step(time.monotonic())
            await asyncio.sleep(0.05)

    async def phase(reader, side) -> float:
        stop, done = asyncio.Event(), []
        tasks = [asyncio.ensure_future(side(reader, stop)) for _ in range(2)] if side else []
        tasks.append(asyncio.ensure_future(ticker(stop)))
        start = time.monotonic()
        await asyncio.gather(*(writer(stop, done) for _ in range(CLIENTS)), _stop_after(stop, seconds))
        rate = len(done) / (time.monotonic() - start)
        await asyncio.gather(*tasks)
        return rate

    out = sql_latencies(store.db, jobs)
    for mode, threads in (("on_loop", 0), ("threads", None)):
        reader = Reader(db, threads=threads)
        alone = await phase(reader, None)
        followers = await phase(reader, follower)
        searchers = await phase(reader, searcher)
        reader.close()
        log(f"loop, reads {mode}: alone {alone:.0f}/s, beside followers {followers:.0f}/s "
            f"({followers / alone:.2f}x), beside searchers {searchers:.0f}/s ({searchers / alone:.2f}x)")
        out.update({f"loop_{mode}_alone_per_s": round(alone), f"loop_{mode}_followers_ratio": round(followers / alone, 2),
                    f"loop_{mode}_searchers_ratio": round(searchers / alone, 2)})
    store.close()
    return out


def sql_latencies(db, jobs: int, rounds: int = 40) -> dict:
    """The store's list and search queries themselves (no HTTP, no Ray): p50/p99 in ms."""
    from actors.store import select_jobs

    rng, now = random.Random(2), time.time()
    lists = [{}, {"status": ["failed"]}, {"status": ["succeeded", "cancelled"]}, {"type": ["sleep"]},
             {"type": ["fails"], "status": ["failed"]}, {"created_after": now - 1800, "created_before": now - 600},
             {"created_before": now - 2400}, {"status": ["queued", "running"]}]
    timings = {"list": [], "search": []}
    for _ in range(rounds):
        for kind, cases in (("list", lists), ("search", [{"text": t.format(rng.randrange(jobs))} for t in SEARCH_TERMS])):
            for case in cases:
                cursor = None
                for _page in range(2):
                    start = time.perf_counter()
                    page = select_jobs(db, limit=51, before_id=cursor, **case)
                    timings[kind].append((time.perf_counter() - start) * 1000)
                    if len(page) < 51:
                        break
                    cursor = page[-1]["id"]
    log(f"store queries: list p50 {pct(timings['list'], 50):.2f} ms p99 {pct(timings['list'], 99):.2f} ms; "
        f"search p50 {pct(timings['search'], 50):.2f} ms p99 {pct(timings['search'], 99):.2f} ms")
    return {"sql_list_p50_ms": round(pct(timings["list"], 50), 2), "sql_list_p99_ms": round(pct(timings["list"], 99), 2),
            "sql_search_p50_ms": round(pct(timings["search"], 50), 2),
            "sql_search_p99_ms": round(pct(timings["search"], 99), 2)}


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    await asyncio.sleep(seconds)
    stop.set()


async def run(args, url: str, headers: dict) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as session:  # warm: the queue actor, a runner, the replica
        for _ in range(20):
            async with session.post(f"{url}/v1/jobs", json={"type": "noop"}, headers=headers) as r:
                await r.read()
    await asyncio.sleep(2)
    alone = await submit(url, headers, args.seconds)
    log(f"alone: {alone:.1f} jobs/s")

    replays = [{} for _ in range(2)]
    with_followers = await beside(url, headers, args.seconds, lambda stop: [
        asyncio.ensure_future(follow(url, headers, stop, out)) for out in replays])
    replay_rates = [round(r["events"] / r["seconds"], 1) for r in replays]
    log(f"beside 2 followers: {with_followers:.1f} jobs/s; followers got {[r['events'] for r in replays]} events "
        f"({replay_rates} events/s)")

    searches: list[float] = []
    with_searchers = await beside(url, headers, args.seconds, lambda stop: [
        asyncio.ensure_future(search_loop(url, headers, stop, args.jobs, searches)) for _ in range(2)])
    log(f"beside 2 searchers: {with_searchers:.1f} jobs/s; {len(searches)} searches, p50 {pct(searches, 50):.1f} ms "
        f"p99 {pct(searches, 99):.1f} ms")

    listed = await lists(url, headers, 3, time.time())
    log(f"lists: {len(listed)} pages, p50 {pct(listed, 50):.1f} ms p99 {pct(listed, 99):.1f} ms")
    alone_searches: list[float] = []  # one client, nothing else: the search itself plus one HTTP round trip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(5.0, stop.set)
    await search_loop(url, headers, stop, args.jobs, alone_searches)
    log(f"searches alone: {len(alone_searches)}, p50 {pct(alone_searches, 50):.1f} ms "
        f"p99 {pct(alone_searches, 99):.1f} ms")
    # Issue 16's measure: searches over the whole queue must not stall dispatch (p99 within 2x of idle).
    idle = await dispatches(url, headers, args.seconds, args.jobs, 0)
    searched = await dispatches(url, headers, args.seconds, args.jobs, 2)
    log(f"dispatch idle: {len(idle)} jobs, p50 {pct(idle, 50):.1f} ms p99 {pct(idle, 99):.1f} ms; beside 2 "
        f"searchers: {len(searched)} jobs, p50 {pct(searched, 50):.1f} ms p99 {pct(searched, 99):.1f} ms")
    return {
        "seeded_jobs": args.jobs, "reads": "on-loop" if args.reads_on_loop else "reader-threads",
        "submit_alone_per_s": round(alone, 1), "submit_beside_followers_per_s": round(with_followers, 1),
        "submit_beside_searchers_per_s": round(with_searchers, 1),
        "followers_ratio": round(with_followers / alone, 2), "searchers_ratio": round(with_searchers / alone, 2),
        "replay_events_per_s": replay_rates, "search_p50_ms": round(pct(searches, 50), 1),
        "search_p99_ms": round(pct(searches, 99), 1), "searches": len(searches),
        "list_p50_ms": round(pct(listed, 50), 1), "list_p99_ms": round(pct(listed, 99), 1),
        "search_alone_p50_ms": round(pct(alone_searches, 50), 1),
        "search_alone_p99_ms": round(pct(alone_searches, 99), 1),
        "dispatch_idle_p50_ms": round(pct(idle, 50), 1), "dispatch_idle_p99_ms": round(pct(idle, 99), 1),
        "dispatch_beside_searchers_p50_ms": round(pct(searched, 50), 1),
        "dispatch_beside_searchers_p99_ms": round(pct(searched, 99), 1),
        "dispatch_p99_ratio": round(pct(searched, 99) / max(pct(idle, 99), 1e-9), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30_000, help="finished jobs to seed the queue with")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--seeded", help="copy this seeded queue database instead of seeding (bench/seed.py)")
    parser.add_argument("--reads-on-loop", action="store_true", help="baseline: history reads on the actor's loop")
    parser.add_argument("--loop-only", action="store_true", help="only the in-process loop comparison (no Ray)")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="dojo-bench-reads-"))
    db = state / "queues" / "default.sqlite3"
    db.parent.mkdir(parents=True)
    if args.seeded:
        source = sqlite3.connect(args.seeded)
        source.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        source.close()
        shutil.copyfile(args.seeded, db)
        args.jobs = sqlite3.connect(db).execute("SELECT count(*) FROM jobs").fetchone()[0]
        log(f"copied {args.jobs} seeded jobs from {args.seeded}")
    else:
        import importlib.util

        spec = importlib.util.spec_from_file_location("dojo_bench_seed", os.path.join(_HERE, "seed.py"))
        seed_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(seed_module)
        seed = seed_module.seed

        log(f"seeded: {seed(db, args.jobs)}")
    loop_copy = state / "loop.sqlite3"  # the loop comparison writes jobs: into a copy, not the dojo's queue
    shutil.copyfile(db, loop_copy)
    loop = asyncio.run(loop_bench(loop_copy, args.jobs, min(args.seconds, 8.0)))
    loop_copy.unlink()
    if args.loop_only:
        shutil.rmtree(state, ignore_errors=True)
        print(json.dumps({"seeded_jobs": args.jobs, **loop, "cpus": os.cpu_count()}))
        return
    os.environ.update({"DOJO_STATE_DIR": str(state), "DOJO_PORT": str(free_port()),
                       "DOJO_JOB_MODULES": "pipelines.sample", "DOJO_API_TOKEN": "bench-token",
                       "DOJO_WORKER_TOKEN": "bench-worker", "DOJO_SECRET": "bench-secret",
                       "DOJO_READ_THREADS": "0" if args.reads_on_loop else os.environ.get("DOJO_READ_THREADS", "")})
    import ray

    from actors.settings import NAMESPACE, Settings
    from serve.deployment import deploy
    from serve.launcher import wait_healthy

    ray.init(address="local", include_dashboard=False, namespace=NAMESPACE, log_to_driver=False,
             configure_logging=False)
    try:
        settings = Settings.from_env()
        deploy(settings)
        wait_healthy(settings)
        url = f"http://{settings.host}:{settings.port}"
        result = asyncio.run(run(args, url, {"Authorization": f"Bearer {settings.api_token}"}))
        result.update(loop)
    finally:
        ray.shutdown()
        shutil.rmtree(state, ignore_errors=True)
    result["cpus"] = os.cpu_count()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
