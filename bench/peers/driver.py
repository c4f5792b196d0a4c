"""Runs one peer's workloads against a running Redis and prints ONE JSON line last.

Started by bench/vs_peers.py with that peer's own venv (bench/.peers-venv/<peer>), in a
process group of its own that bench/vs_peers.py kills on a timeout; the workers it starts
are its children and share that group. Every wait has a deadline.

    python driver.py --system celery --redis-url redis://127.0.0.1:PORT/0 --work DIR \
        --noop 20000 --sleep 2000 --latency 500 --kill 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import marks  # noqa: E402
from common import descendants, log, pct  # noqa: E402

SYSTEMS = ("celery", "dramatiq", "arq", "rq")
PROCESSES = 2
LATENCY_GAP_S = 0.02
WARMUP = 5


class Workers:
    """The peer's worker processes, as the peer's docs start them."""

    def __init__(self, system: str, url: str, work: str, kill_mode: bool):
        self.system, self.url, self.work, self.kill_mode = system, url, work, kill_mode
        self.procs: list[subprocess.Popen] = []
        self.starts = 0

    def commands(self) -> list[list[str]]:
        bin_dir = os.path.dirname(sys.executable)
        py = sys.executable
        if self.system == "celery":
            return [[f"{bin_dir}/celery", "-A", "celery_app", "worker", "--pool", "prefork",
                     "--concurrency", str(PROCESSES), "--loglevel", "WARNING"]]
        if self.system == "dramatiq":
            return [[f"{bin_dir}/dramatiq", "dramatiq_app", "--processes", str(PROCESSES)]]
        if self.system == "arq":
            return [[py, "arq_app.py"] for _ in range(PROCESSES)]
        if self.system == "rq":
            extra = ["--maintenance-interval", "5"] if self.kill_mode else []
            return [[f"{bin_dir}/rq", "worker", "--url", self.url, "--logging_level", "WARNING", *extra, "bench"]
                    for _ in range(PROCESSES)]
        raise SystemExit(f"unknown system {self.system}")

    def start(self) -> None:
        env = {**os.environ, "REDIS_URL": self.url, "PYTHONPATH": HERE, "PYTHONUNBUFFERED": "1"}
        if self.kill_mode:
            env["BENCH_KILL"] = "1"
        self.starts += 1
        for n, cmd in enumerate(self.commands()):
            out = open(os.path.join(self.work, f"{self.system}-worker-{self.starts}-{n}.log"), "ab")
            self.procs.append(subprocess.Popen(cmd, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL))
            out.close()

    def pids(self) -> list[int]:
        return descendants([p.pid for p in self.procs if p.poll() is None])

    def kill9(self) -> int:
        """SIGKILL every worker process (the roots and all their children) at once."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        return len(pids)

    def stop(self) -> None:
        pids = self.pids()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for pid in pids:  # whatever is left, pool children included
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs = []


# -- enqueueing, per system ----------------------------------------------------------------------
class Client:
    """Enqueues jobs with each peer's own client API (its bulk API where it has one)."""

    def __init__(self, system: str, url: str):
        import redis

        self.system, self.url = system, url
        self.redis = redis.Redis.from_url(url)
        self.loop = None
        if system == "celery":
            import celery_app as app
        elif system == "dramatiq":
            import dramatiq_app as app
        elif system == "arq":
            import arq_app as app
        else:
            import rq_app as app
        self.app = app
        if system == "rq":
            from rq import Queue

            self.queue = Queue("bench", connection=self.redis)
        if system == "arq":
            self.loop = asyncio.new_event_loop()
            self.pool = self.loop.run_until_complete(self._arq_pool())

    async def _arq_pool(self):
        from arq import create_pool

        return await create_pool(self.app.WorkerSettings.redis_settings)

    def enqueue(self, name: str, args_list: list[tuple]) -> None:
        """Enqueue ``name`` once per argument tuple."""
        if self.system == "celery":
            task = getattr(self.app, name)
            for args in args_list:
                task.apply_async(args)
        elif self.system == "dramatiq":
            actor = getattr(self.app, name)
            for args in args_list:
                actor.send(*args)
        elif self.system == "arq":
            self.loop.run_until_complete(self._arq_enqueue(name, args_list))
        else:
            from rq import Queue, Retry

            func = getattr(self.app, name)
            for start in range(0, len(args_list), 1000):
                chunk = args_list[start:start + 1000]
                self.queue.enqueue_many([Queue.prepare_data(func, args=args, retry=Retry(max=3), timeout=5,
                                                            result_ttl=0)
                                         for args in chunk])

    async def _arq_enqueue(self, name: str, args_list: list[tuple]) -> None:
        # arq's client is async: enqueue concurrently, 500 at a time.
        for start in range(0, len(args_list), 500):
            await asyncio.gather(*(self.pool.enqueue_job(name, *args) for args in args_list[start:start + 500]))

    def close(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.pool.aclose())
            self.loop.close()


def wait_count(folder: str, n: int, timeout: float, poll: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marks.count(folder) >= n:
            return True
        time.sleep(poll)
    return False


def new_folder(work: str, name: str) -> str:
    folder = os.path.join(work, f"{name}-{uuid.uuid4().hex[:6]}")
    os.makedirs(folder)
    return folder


def warm_up(client: Client, work: str, timeout: float) -> None:
    folder = new_folder(work, "warm")
    client.enqueue("mark", [(folder, i) for i in range(40)])
    if not wait_count(folder, 40, timeout):
        raise SystemExit(f"{client.system}: workers did not run the warm-up jobs in {timeout:.0f}s "
                         f"(see the worker logs in {work})")
    time.sleep(0.5)


# -- workloads -----------------------------------------------------------------------------------
def run_noop(client: Client, work: str, n: int, timeout: float) -> dict:
    folder = new_folder(work, "noop")
    args = [(folder, i) for i in range(n)]
    start = time.perf_counter()
    client.enqueue("mark", args)
    enqueued = time.perf_counter() - start
    ok = wait_count(folder, n, timeout)
    elapsed = time.perf_counter() - start
    done = marks.count(folder)
    log(f"{client.system}: {n} no-op jobs in {elapsed:.2f}s (enqueue {enqueued:.2f}s), {done} ran")
    return {"jobs": n, "enqueue_s": round(enqueued, 3), "elapsed_s": round(elapsed, 3),
            "jobs_per_s": round(done / elapsed, 1), "completed": done, "timed_out": not ok}


def run_sleep(client: Client, work: str, n: int, timeout: float) -> dict:
    folder = new_folder(work, "sleep")
    args = [(folder, i, 0.01) for i in range(n)]
    start = time.perf_counter()
    client.enqueue("nap", args)
    enqueued = time.perf_counter() - start
    ok = wait_count(folder, n, timeout)
    elapsed = time.perf_counter() - start
    done = marks.count(folder)
    log(f"{client.system}: {n} 10 ms sleeps in {elapsed:.2f}s (enqueue {enqueued:.2f}s)")
    return {"jobs": n, "enqueue_s": round(enqueued, 3), "elapsed_s": round(elapsed, 3),
            "jobs_per_s": round(done / elapsed, 1), "completed": done, "timed_out": not ok}


def run_latency(client: Client, samples: int, timeout: float) -> dict:
    key = f"bench:stamps:{uuid.uuid4().hex[:8]}"
    latencies = []
    deadline = time.monotonic() + timeout
    for i in range(samples + WARMUP):
        if time.monotonic() > deadline:
            break
        sent = time.time()
        client.enqueue("stamp", [(key, i)])
        got = client.redis.blpop([key], timeout=max(1, int(deadline - time.monotonic())))
        if got is None:
            break
        j, started = got[1].decode().split()
        assert int(j) == i, (j, i)
        if i >= WARMUP:
            latencies.append((float(started) - sent) * 1000)
        time.sleep(LATENCY_GAP_S)
    if not latencies:
        return {"samples": 0, "timed_out": True}
    log(f"{client.system}: dispatch p50 {pct(latencies, 50):.2f} ms p99 {pct(latencies, 99):.2f} ms")
    return {"samples": len(latencies), "p50_ms": round(pct(latencies, 50), 2),
            "p99_ms": round(pct(latencies, 99), 2), "timed_out": len(latencies) < samples}


def run_kill(system: str, url: str, work: str, n: int, recover_s: float, timeout: float) -> dict:
    workers = Workers(system, url, work, kill_mode=True)
    client = Client(system, url)
    try:
        workers.start()
        warm_up(client, work, 60)
        folder = new_folder(work, "kill")
        args = [(folder, i) for i in range(n)]
        errors: list[BaseException] = []

        def produce():
            try:
                client.enqueue("mark", args)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        start = time.perf_counter()
        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        if not wait_count(folder, n // 2, timeout, poll=0.001):
            raise SystemExit(f"{system}: half of the kill test's jobs did not run in {timeout:.0f}s")
        at_kill = marks.count(folder)
        killed = workers.kill9()
        log(f"{system}: killed {killed} worker processes (kill -9) with {at_kill}/{n} jobs run")
        workers.start()
        producer.join(timeout)
        if errors:
            raise errors[0]
        deadline = time.monotonic() + recover_s
        distinct = 0
        while time.monotonic() < deadline:
            distinct = len(set(marks.ids(folder)))
            if distinct >= n:
                break
            time.sleep(0.2)
        recovered = time.perf_counter() - start
        time.sleep(2.0)  # let late re-runs show up as duplicates
        seen = marks.ids(folder)
        distinct = len(set(seen))
        result = {"jobs": n, "killed_processes": killed, "run_at_kill": at_kill, "lost": n - distinct,
                  "duplicates": len(seen) - distinct, "completed": len(seen),
                  "all_done_s": round(recovered, 2) if distinct >= n else None, "recovery_wait_s": recover_s}
        log(f"{system}: kill test lost {result['lost']} ran twice {result['duplicates']}")
        return result
    finally:
        client.close()
        workers.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--noop", type=int, default=0)
    parser.add_argument("--sleep", type=int, default=0)
    parser.add_argument("--latency", type=int, default=0)
    parser.add_argument("--kill", type=int, default=0)
    parser.add_argument("--recover", type=float, default=60.0, help="seconds to wait for the kill test's jobs")
    parser.add_argument("--timeout", type=float, default=300.0, help="deadline of each workload")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    os.environ["REDIS_URL"] = args.redis_url  # the task modules read it on import
    import redis

    redis.Redis.from_url(args.redis_url).flushall()
    result: dict = {"system": args.system, "processes": PROCESSES}
    try:
        import importlib.metadata as md

        result["version"] = md.version(args.system)
    except Exception:  # noqa: BLE001
        pass
    if args.noop or args.sleep or args.latency:
        workers = Workers(args.system, args.redis_url, args.work, kill_mode=False)
        client = Client(args.system, args.redis_url)
        try:
            workers.start()
            warm_up(client, args.work, 60)
            if args.noop:
                result["noop"] = run_noop(client, args.work, args.noop, args.timeout)
            if args.sleep:
                result["sleep"] = run_sleep(client, args.work, args.sleep, args.timeout)
            if args.latency:
                result["latency"] = run_latency(client, args.latency, args.timeout)
        finally:
            client.close()
            workers.stop()
    if args.kill:
        redis.Redis.from_url(args.redis_url).flushall()
        result["kill"] = run_kill(args.system, args.redis_url, args.work, args.kill, args.recover, args.timeout)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
