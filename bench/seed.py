"""Seed a queue's database with finished jobs, fast (rows written straight into SQLite in big batches).

    python bench/seed.py PATH --jobs 1000000

Rows look like the ones the queue writes (the same columns, record fields and events: queued, running,
and the final status), so the store's reads and indexes see what a long-lived queue holds. Ids are the
queue's own format, one millisecond apart, ending ``seconds_ago`` before now.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.store import Store  # noqa: E402

TYPES = ("noop", "noop", "noop", "sleep", "countdown", "fails")
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "動画", "字幕", "配信者", "切り抜き", "ナレーション")


def job_row(i: int, ms: int, suffix: str, queue: str, rng: random.Random) -> tuple[tuple, list[tuple]]:
    job_id = f"j_{ms:011x}{0:05x}{i & 0xffff:04x}{suffix}"
    type_name = TYPES[i % len(TYPES)]
    status = "failed" if type_name == "fails" else ("cancelled" if i % 97 == 0 else "succeeded")
    created = ms / 1000
    started, finished = created + 0.01, created + 0.02
    payload = {"order": f"order-{i:07d}", "note": f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i}"}
    error = {"type": "ValueError", "message": f"bad input {i}: 在庫切れ", "traceback": None} \
        if status == "failed" else None
    record = {
        "id": job_id, "queue": queue, "type": type_name, "payload": payload, "status": status, "priority": 0,
        "run_at": created, "created_at": created, "updated_at": finished, "started_at": started,
        "finished_at": finished, "attempts": 1, "max_attempts": 1, "budget": 0,
        "backoff": {"kind": "exponential", "base": 1.0, "max": 300.0}, "timeout": 60.0, "unique_key": None,
        "concurrency_key": None, "concurrency_limit": None, "resources": {}, "result": {"ok": True},
        "result_key": None, "error": error, "progress": None, "parent_id": None, "phase": "perform",
        "children": None, "lease": None, "cancel_requested": False,
        "history": [{"attempt": 1, "token": i, "node": "n1", "pid": 1, "started_at": started, "ended_at": finished,
                     "duration": 0.01, "outcome": status, "error": error}],
    }
    row = (job_id, type_name, status, created, finished, None, orjson.dumps(record).decode())
    stream = "job:" + job_id
    base = {"job_id": job_id, "type": type_name}
    events = [(stream, 1, created, "status", {**base, "status": "queued", "attempt": 0}),
              (stream, 2, started, "status", {**base, "status": "running", "attempt": 1}),
              (stream, 3, finished, "status", {**base, "status": status, "attempt": 1})]
    return row, events


def seed(path: str | Path, jobs: int, queue: str = "default", seconds_ago: float = 3600.0, batch: int = 20_000,
         seed_value: int = 1) -> dict:
    """Append ``jobs`` finished jobs (and their events) to the queue database at ``path``."""
    store = Store(path, "OFF")
    db = store.db
    db.execute("PRAGMA cache_size=-200000")
    rng = random.Random(seed_value)
    suffix = "" if queue == "default" else "." + queue
    gseq = store.max_gseq()
    start_ms = int((time.time() - seconds_ago) * 1000) - jobs
    t0 = time.perf_counter()
    for lo in range(0, jobs, batch):
        rows, events = [], []
        for i in range(lo, min(jobs, lo + batch)):
            row, evs = job_row(i, start_ms + i, suffix, queue, rng)
            rows.append(row)
            for stream, seq, at, kind, data in evs:
                gseq += 1
                events.append((gseq, stream, seq, at, kind, orjson.dumps(data).decode()))
        db.execute("BEGIN")
        db.executemany("INSERT INTO jobs VALUES (?,?,?,?,?,?,?)", rows)
        db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?)", events)
        db.execute("COMMIT")
    store.close()
    return {"jobs": jobs, "events": gseq, "seconds": round(time.perf_counter() - t0, 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--queue", default="default")
    args = parser.parse_args()
    print(seed(args.path, args.jobs, args.queue))
