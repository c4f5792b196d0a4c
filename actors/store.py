"""The queue's durable state: one SQLite database (WAL) per queue.

Writes are staged in memory and flushed by ``commit()`` in one transaction
(group commit): however many jobs and events changed since the last commit,
they cost one fsync. A job's row holds its whole record as JSON plus the
columns that listing filters on; events are append-only rows.
"""

from __future__ import annotations

import json
import sqlite3

import orjson
from pathlib import Path
from typing import Iterable

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    parent_id TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, id);
CREATE INDEX IF NOT EXISTS jobs_type ON jobs (type, id);
CREATE INDEX IF NOT EXISTS jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    gseq INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_stream ON events (stream, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS schedules (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, data TEXT NOT NULL);
"""

FINAL = ("succeeded", "failed", "cancelled")

def _compact(value) -> str:
    return orjson.dumps(value).decode()


def _loads(text: str):
    return orjson.loads(text)


class Store:
    """SQLite persistence for one queue. Not thread-safe: the actor is its only user."""

    def __init__(self, path: str | Path, synchronous: str = "FULL"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self._jobs: dict[str, tuple] = {}
        self._deleted: set[str] = set()
        self._events: list[tuple] = []
        self._meta: dict[str, str] = {}
        self._schedules: dict[str, str | None] = {}
        self._buckets: dict[str, str] = {}

    # -- staging -----------------------------------------------------------
    def put_job(self, record: dict) -> None:
        self._deleted.discard(record["id"])
        self._jobs[record["id"]] = (
            record["id"], record["type"], record["status"], record["created_at"],
            record["updated_at"], record.get("parent_id"), record,
        )

    def delete_job(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self._deleted.add(job_id)

    def add_event(self, event: dict) -> None:
        self._events.append(event)

    def set_meta(self, key: str, value) -> None:
        self._meta[key] = value

    def put_schedule(self, name: str, data: dict | None) -> None:
        self._schedules[name] = None if data is None else json.dumps(data)

    def put_bucket(self, name: str, data: dict) -> None:
        self._buckets[name] = json.dumps(data)

    @property
    def dirty(self) -> bool:
        return bool(self._jobs or self._deleted or self._events or self._meta or self._schedules or self._buckets)

    def commit(self) -> None:
        """Write everything staged in one transaction."""
        if not self.dirty:
            return
        jobs, self._jobs = self._jobs, {}
        deleted, self._deleted = self._deleted, set()
        events, self._events = self._events, []
        meta, self._meta = self._meta, {}
        schedules, self._schedules = self._schedules, {}
        buckets, self._buckets = self._buckets, {}
        db = self.db
        db.execute("BEGIN")
        try:
            if jobs:
                db.executemany(
                    "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?,?)",
                    [(*row[:6], _compact(row[6])) for row in jobs.values()],
                )
            if deleted:
                db.executemany("DELETE FROM jobs WHERE id=?", [(i,) for i in deleted])
                db.executemany("DELETE FROM events WHERE stream=?", [("job:" + i,) for i in deleted])
            if events:
                db.executemany(
                    "INSERT INTO events VALUES (?,?,?,?,?,?)",
                    [(e["gseq"], e["stream"], e["seq"], e["at"], e["kind"],
                      _compact(e["data"])) for e in events],
                )
            if meta:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)",
                               [(k, json.dumps(v)) for k, v in meta.items()])
            for name, data in schedules.items():
                if data is None:
                    db.execute("DELETE FROM schedules WHERE name=?", (name,))
                else:
                    db.execute("INSERT OR REPLACE INTO schedules VALUES (?,?)", (name, data))
            if buckets:
                db.executemany("INSERT OR REPLACE INTO buckets VALUES (?,?)", list(buckets.items()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- reading (callers commit first so reads see every staged write) -----
    def get_job(self, job_id: str) -> dict | None:
        staged = self._jobs.get(job_id)
        if staged is not None:
            return staged[6]
        if job_id in self._deleted:
            return None
        row = self.db.execute("SELECT data FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _loads(row[0]) if row else None

    def active_jobs(self) -> Iterable[dict]:
        placeholders = ",".join("?" * len(FINAL))
        for (data,) in self.db.execute(f"SELECT data FROM jobs WHERE status NOT IN ({placeholders})", FINAL):
            yield _loads(data)

    def list_jobs(self, *, status=None, type=None, parent_id=None, created_after=None, created_before=None,
                  before_id=None, limit=100, text=None) -> list[dict]:
        where, args = [], []
        for column, value in (("status", status), ("type", type)):
            if value:
                values = value if isinstance(value, (list, tuple)) else [value]
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                args.extend(values)
        if parent_id:
            where.append("parent_id=?")
            args.append(parent_id)
        if created_after is not None:
            where.append("created_at>=?")
            args.append(created_after)
        if created_before is not None:
            where.append("created_at<?")
            args.append(created_before)
        if before_id:
            where.append("id<?")
            args.append(before_id)
        if text:
            where.append("instr(data, ?) > 0")
            args.append(text)
        sql = "SELECT data FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [_loads(d) for (d,) in self.db.execute(sql, args)]

    def children_of(self, parent_id: str) -> list[dict]:
        """Every child row of a job, staged writes included (a flow's report is recounted from these)."""
        rows = {}
        for (data,) in self.db.execute("SELECT data FROM jobs WHERE parent_id=?", (parent_id,)):
            record = _loads(data)
            rows[record["id"]] = record
        for job_id, row in self._jobs.items():
            if row[5] == parent_id:
                rows[job_id] = row[6]
        return [r for i, r in rows.items() if i not in self._deleted]

    def count_by_status(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())

    def events_after(self, stream: str | None, after: int, limit: int = 1000) -> list[dict]:
        """Events of one stream with seq > after, or of every stream with gseq > after."""
        if stream is None:
            rows = self.db.execute(
                "SELECT gseq, stream, seq, at, kind, data FROM events WHERE gseq>? ORDER BY gseq LIMIT ?",
                (after, limit))
        else:
            rows = self.db.execute(
                "SELECT gseq, stream, seq, at, kind, data FROM events WHERE stream=? AND seq>? ORDER BY seq LIMIT ?",
                (stream, after, limit))
        return [{"gseq": g, "stream": s, "seq": q, "at": a, "kind": k, "data": _loads(d)}
                for g, s, q, a, k, d in rows]

    def last_seq(self, stream: str) -> int:
        row = self.db.execute("SELECT max(seq) FROM events WHERE stream=?", (stream,)).fetchone()
        return row[0] or 0

    def max_gseq(self) -> int:
        return self.db.execute("SELECT coalesce(max(gseq), 0) FROM events").fetchone()[0]

    def get_meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return _loads(row[0]) if row else default

    def schedules(self) -> dict[str, dict]:
        return {n: _loads(d) for n, d in self.db.execute("SELECT name, data FROM schedules")}

    def buckets(self) -> dict[str, dict]:
        return {n: _loads(d) for n, d in self.db.execute("SELECT name, data FROM buckets")}

    def close(self) -> None:
        self.db.close()
