"""The queue's durable state in SQLite: one database (WAL) per queue, written by the actor alone.

Writes are staged in memory and flushed by ``commit()`` in one transaction
(group commit): however many jobs and events changed since the last commit,
they cost one fsync. A job's row holds its whole record as JSON plus the
columns that listing filters on; events are append-only rows. ``memory.py``
is its twin without a file, for the rules' unit tests.
"""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Iterable

import orjson

from .queries import _loads, select_events, select_jobs
from .staging import Staging
from .schema import _REORDER, ERROR_STATUSES, FINAL, SCHEMA, SEARCH_SCHEMA

#: Unfinished jobs whose old events event pruning remembers, to prune them once the jobs finish.
WAITING_MAX = 10_000

def _compact(value) -> str:
    return orjson.dumps(value).decode()




class Store(Staging):
    """SQLite persistence for one queue. Not thread-safe: the actor is its only user."""

    def __init__(self, path: str | Path, synchronous: str = "FULL"):
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self._ensure_search_index()

    def _ensure_search_index(self) -> None:
        """Create the search index and its triggers (the indexer fills it: a database from before it too)."""
        had = self.db.execute("SELECT 1 FROM sqlite_master WHERE name='job_text'").fetchone()
        try:
            self.db.executescript("BEGIN;" + ("" if had else _REORDER) + SEARCH_SCHEMA + "COMMIT;")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def commit(self) -> None:
        """Write everything staged in one transaction."""
        if not self.dirty:
            return
        staged = self.take()
        jobs = [(r["id"], r["type"], r["status"], r["created_at"], r["updated_at"], r.get("parent_id"), r)
                for r in staged.jobs.values()]
        deleted, events, deliveries = staged.deleted, staged.events, staged.deliveries
        db = self.db
        db.execute("BEGIN")
        try:
            if jobs:
                # An upsert, not INSERT OR REPLACE: the row keeps its rowid, which the search index uses.
                db.executemany(
                    "INSERT INTO jobs VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET type=excluded.type, "
                    "status=excluded.status, created_at=excluded.created_at, updated_at=excluded.updated_at, "
                    "parent_id=excluded.parent_id, data=excluded.data",
                    [(*row[:6], _compact(row[6])) for row in jobs],
                )
                stale = [(row[0],) for row in jobs
                         if row[2] in ERROR_STATUSES or (row[2] == "queued" and row[6].get("attempts"))]
                if stale:
                    db.executemany("INSERT OR IGNORE INTO job_text_stale SELECT rowid FROM jobs WHERE id=?", stale)
            if deleted:
                db.executemany("DELETE FROM jobs WHERE id=?", [(i,) for i in deleted])
                db.executemany("DELETE FROM events WHERE stream=?", [("job:" + i,) for i in deleted])
                db.executemany("DELETE FROM deliveries WHERE job_id=?", [(i,) for i in deleted])
            if events:
                db.executemany(
                    "INSERT INTO events VALUES (?,?,?,?,?,?)",
                    [(e["gseq"], e["stream"], e["seq"], e["at"], e["kind"],
                      _compact(e["data"])) for e in events],
                )
            if staged.meta:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)",
                               [(k, _compact(v)) for k, v in staged.meta.items()])
            for name, data in staged.schedules.items():
                if data is None:
                    db.execute("DELETE FROM schedules WHERE name=?", (name,))
                else:
                    db.execute("INSERT OR REPLACE INTO schedules VALUES (?,?)", (name, _compact(data)))
            if staged.buckets:
                db.executemany("INSERT OR REPLACE INTO buckets VALUES (?,?)",
                               [(k, _compact(v)) for k, v in staged.buckets.items()])
            if staged.controls:
                db.executemany("DELETE FROM controls WHERE kind=? AND key=?",
                               [k for k, v in staged.controls.items() if v is None])
                db.executemany("INSERT OR REPLACE INTO controls VALUES (?,?,?)",
                               [(*k, _compact(v)) for k, v in staged.controls.items() if v is not None])
            if deliveries:
                db.executemany("INSERT OR REPLACE INTO deliveries VALUES (?,?,?,?)",
                               [(d["id"], d["job_id"], int(d["state"] == "pending"), _compact(d))
                                for d in deliveries.values() if d["job_id"] not in deleted])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- reading (callers commit first so reads see every staged write) -----
    def get_job(self, job_id: str) -> dict | None:
        known, record = self.staged_job(job_id)
        if known:
            return record
        row = self.db.execute("SELECT data FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _loads(row[0]) if row else None

    def active_jobs(self) -> Iterable[dict]:
        placeholders = ",".join("?" * len(FINAL))
        for (data,) in self.db.execute(f"SELECT data FROM jobs WHERE status NOT IN ({placeholders})", FINAL):
            yield _loads(data)

    def list_jobs(self, **filters) -> list[dict]:
        """Jobs matching ``filters`` (see ``select_jobs``), read on the writer's connection."""
        return select_jobs(self.db, **filters)

    def children_of(self, parent_id: str) -> list[dict]:
        """Every child row of a job, staged writes included (a flow's report is recounted from these)."""
        rows = {}
        for (data,) in self.db.execute("SELECT data FROM jobs WHERE parent_id=?", (parent_id,)):
            record = _loads(data)
            rows[record["id"]] = record
        return self.with_staged_children(parent_id, rows)

    def count_by_status(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())

    def events_after(self, stream: str | None, after: int, limit: int = 1000) -> list[dict]:
        return select_events(self.db, stream, after, limit)

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

    def pending_deliveries(self) -> list[dict]:
        return [_loads(d) for (d,) in self.db.execute("SELECT data FROM deliveries WHERE pending = 1 ORDER BY id")]

    def deliveries_of(self, job_id: str) -> list[dict]:
        """A job's callback deliveries with their tries, oldest first (staged ones included)."""
        rows = {d["id"]: d for d in (_loads(t) for (t,) in
                                     self.db.execute("SELECT data FROM deliveries WHERE job_id=?", (job_id,)))}
        return self.with_staged_deliveries(job_id, rows)

    def controls(self, kind: str) -> dict:
        return {k: _loads(d) for k, d in self.db.execute("SELECT key, data FROM controls WHERE kind=?", (kind,))}

    def prune_events(self, before: float, limit: int = 2000) -> int:
        """Delete the events older than ``before`` of finished jobs, but each job's last; up to ``limit`` events.

        Walks the events in gseq order (time order) from a cursor kept in ``meta``, so a call costs about
        ``limit`` events whatever the table's size. A job still unfinished when the walk passes its events
        keeps them, and is remembered (up to ``WAITING_MAX`` jobs) to be pruned once it has finished;
        channel messages are kept. Its own short transaction: call it between commits. Returns how many
        events it walked (``limit``: there is more to do).
        """
        state = self.get_meta("events_pruned", {"through": 0, "waiting": []})
        db = self.db
        rows = db.execute("SELECT gseq, stream, at FROM events WHERE gseq>? ORDER BY gseq LIMIT ?",
                          (state["through"], limit)).fetchall()
        walked = [(gseq, stream) for gseq, stream, at in itertools.takewhile(lambda row: row[2] < before, rows)]
        streams = {stream for _, stream in walked if stream.startswith("job:")} | set(state["waiting"])
        if not walked and not state["waiting"]:
            return 0
        ids = [stream[4:] for stream in streams]
        statuses = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            statuses.update(db.execute(f"SELECT id, status FROM jobs WHERE id IN ({','.join('?' * len(chunk))})",
                                       chunk).fetchall())
        finished = [("job:" + i, before) for i, status in statuses.items() if status in FINAL]
        waiting = sorted("job:" + i for i, status in statuses.items() if status not in FINAL)[:WAITING_MAX]
        db.execute("BEGIN")
        try:
            db.executemany("DELETE FROM events WHERE stream=?1 AND at<?2 AND seq < "
                           "(SELECT max(seq) FROM events WHERE stream=?1)", finished)
            through = walked[-1][0] if walked else state["through"]
            db.execute("INSERT OR REPLACE INTO meta VALUES ('events_pruned', ?)",
                       (_compact({"through": through, "waiting": waiting}),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(walked)

    def close(self) -> None:
        self.db.close()
