"""The queue's durable state: one SQLite database (WAL) per queue.

Writes are staged in memory and flushed by ``commit()`` in one transaction
(group commit): however many jobs and events changed since the last commit,
they cost one fsync. A job's row holds its whole record as JSON plus the
columns that listing filters on; events are append-only rows.
"""

from __future__ import annotations

import heapq
import itertools
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
DROP INDEX IF EXISTS jobs_type;
CREATE INDEX IF NOT EXISTS jobs_type_status ON jobs (type, status, id);
DROP INDEX IF EXISTS jobs_parent;
CREATE INDEX IF NOT EXISTS jobs_parent_id ON jobs (parent_id, id) WHERE parent_id IS NOT NULL;
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
CREATE TABLE IF NOT EXISTS controls (kind TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
                                     PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS deliveries (id TEXT PRIMARY KEY, job_id TEXT NOT NULL, pending INTEGER NOT NULL,
                                       data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_job ON deliveries (job_id);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (id) WHERE pending = 1;
"""

#: What a search (``text``) finds: a job's id, type, parent, unique key, payload (as JSON text) and its
#: error's type and message, as one document of a trigram index (substrings of three characters or more,
#: in any script, case-sensitive like the ``instr`` scan it replaces). A row keeps its rowid across
#: updates (the commit upserts), so its index entry (same rowid) follows it. One ``json_extract`` of four
#: paths parses the record once (the fields come as one JSON array).
_SEARCH_TEXT = """(new.id || char(10) || new.type || char(10) || coalesce(new.parent_id, '') || char(10) ||
    json_extract(new.data, '$.unique_key', '$.payload', '$.error.type', '$.error.message') || char(10))"""
#: A job's error is set or changed only in these statuses, and cleared when it is queued again after an
#: attempt; ``commit`` notes such rows in ``job_text_stale`` and the indexer (``actors/search.py``)
#: re-indexes them off the write path. Other writes (running, succeeded, progress) cost the index nothing.
ERROR_STATUSES = frozenset({"failed", "retrying", "cancelled", "expired"})
SEARCH_SCHEMA = f"""
CREATE VIRTUAL TABLE IF NOT EXISTS job_text USING fts5(body, tokenize='trigram case_sensitive 1');
CREATE VIRTUAL TABLE IF NOT EXISTS job_text_terms USING fts5vocab(job_text, 'row');
CREATE TABLE IF NOT EXISTS job_text_stale (id INTEGER PRIMARY KEY);
DROP TRIGGER IF EXISTS job_text_insert;
DROP TRIGGER IF EXISTS job_text_update;
DROP TRIGGER IF EXISTS job_text_delete;
DROP TRIGGER IF EXISTS job_text_mark;
CREATE TRIGGER IF NOT EXISTS job_text_forget AFTER DELETE ON jobs BEGIN
    DELETE FROM job_text WHERE rowid = old.rowid;
    DELETE FROM job_text_stale WHERE id = old.rowid;
END;
"""
#: A job's indexed text, computed from its row (for rows the index does not hold yet).
JOB_TEXT = _SEARCH_TEXT.replace("new.", "jobs.")
# A database from before the index: its rows are rewritten in id order (INSERT OR REPLACE had given them
# rowids in update order), then indexed. From then on a job's rowid is given once, at its first commit,
# and jobs are committed in the order their ids were made, so rowid order is id order (see select_jobs).
_REORDER = """DROP TRIGGER IF EXISTS job_text_forget;
CREATE TEMP TABLE jobs_by_id AS SELECT * FROM jobs ORDER BY id;
DELETE FROM jobs;
INSERT INTO jobs SELECT * FROM jobs_by_id ORDER BY id;
DROP TABLE jobs_by_id;
"""

FINAL = ("succeeded", "failed", "cancelled", "expired")
#: Unfinished jobs whose old events event pruning remembers, to prune them once the jobs finish.
WAITING_MAX = 10_000

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
        self._ensure_search_index()
        self._jobs: dict[str, tuple] = {}
        self._deleted: set[str] = set()
        self._events: list[tuple] = []
        self._meta: dict[str, str] = {}
        self._schedules: dict[str, str | None] = {}
        self._buckets: dict[str, str] = {}
        self._controls: dict[tuple[str, str], str | None] = {}
        self._deliveries: dict[str, dict] = {}

    def _ensure_search_index(self) -> None:
        """Create the search index and its triggers (the indexer fills it: a database from before it too)."""
        had = self.db.execute("SELECT 1 FROM sqlite_master WHERE name='job_text'").fetchone()
        try:
            self.db.executescript("BEGIN;" + ("" if had else _REORDER) + SEARCH_SCHEMA + "COMMIT;")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

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

    def put_control(self, kind: str, key: str, data) -> None:
        """Stage a queue-control record (a dedup window, throttle starts); None deletes it."""
        self._controls[(kind, key)] = None if data is None else json.dumps(data)

    def put_delivery(self, delivery: dict) -> None:
        """Stage a callback delivery (actors/callbacks.py): pending until delivered or failed."""
        self._deliveries[delivery["id"]] = delivery

    @property
    def dirty(self) -> bool:
        return bool(self._jobs or self._deleted or self._events or self._meta or self._schedules or self._buckets
                    or self._controls or self._deliveries)

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
        controls, self._controls = self._controls, {}
        deliveries, self._deliveries = self._deliveries, {}
        db = self.db
        db.execute("BEGIN")
        try:
            if jobs:
                # An upsert, not INSERT OR REPLACE: the row keeps its rowid, which the search index uses.
                db.executemany(
                    "INSERT INTO jobs VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET type=excluded.type, "
                    "status=excluded.status, created_at=excluded.created_at, updated_at=excluded.updated_at, "
                    "parent_id=excluded.parent_id, data=excluded.data",
                    [(*row[:6], _compact(row[6])) for row in jobs.values()],
                )
                stale = [(row[0],) for row in jobs.values()
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
            if controls:
                db.executemany("DELETE FROM controls WHERE kind=? AND key=?",
                               [k for k, v in controls.items() if v is None])
                db.executemany("INSERT OR REPLACE INTO controls VALUES (?,?,?)",
                               [(*k, v) for k, v in controls.items() if v is not None])
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

    def list_jobs(self, **filters) -> list[dict]:
        """Jobs matching ``filters`` (see ``select_jobs``), read on the writer's connection."""
        return select_jobs(self.db, **filters)

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
        rows.update({k: d for k, d in self._deliveries.items() if d["job_id"] == job_id})
        return sorted(rows.values(), key=lambda d: int(d["id"].rsplit(".", 1)[1]))

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
                       (json.dumps({"through": through, "waiting": waiting}),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(walked)

    def close(self) -> None:
        self.db.close()


# -- reads (any connection: the writer's, or a read-only one off the actor's loop) ---------------
#: A search that matches at most this many jobs is answered from the index alone; one that matches more
#: walks the list in page order and checks each row against the index, which stops as soon as the page
#: is full (common words fill a page fast).
RARE_MATCHES = 5000
#: A job's id carries its creation millisecond, except that the id clock holds still while the wall
#: clock steps back; an hour covers any such step, so ``created_before`` can bound the id range too.
ID_CLOCK_SLACK_MS = 3_600_000


def _id_at(ms: int) -> str:
    return f"j_{max(0, ms):011x}"


def _as_list(value) -> list | None:
    if not value:
        return None
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


#: A search of one or two characters asks the index for every three-character term that begins with
#: them (each indexed field ends with a newline, so a substring at a field's end is such a term too);
#: beyond this many terms it checks rows one by one instead.
MAX_SHORT_TERMS = 500


def _match(db, text: str) -> str | None:
    """The FTS5 query that finds ``text`` as a substring, or None when the index cannot answer it."""
    if len(text) >= 3:
        return _quote(text)  # a phrase of trigrams: with the trigram tokenizer, a substring match
    terms = [t for (t,) in db.execute("SELECT term FROM job_text_terms WHERE term >= ? AND term <= ? LIMIT ?",
                                      (text, text + "\U0010ffff", MAX_SHORT_TERMS + 1))]
    if len(terms) > MAX_SHORT_TERMS:
        return None
    return " OR ".join(_quote(t) for t in terms if t.startswith(text)) or '""'


def select_jobs(db, *, status=None, type=None, parent_id=None, created_after=None, created_before=None,
                before_id=None, after_id=None, oldest_first=False, limit=100, text=None) -> list[dict]:
    """One keyset page of jobs: newest first after cursor ``before_id``, or oldest first after ``after_id``.

    Every filter is served by an index in page order, so a page costs about the same at any table size:
    several statuses or types are read as one range per (status, type) pair (``jobs_type_status``) and
    merged; ``created_after``/``created_before`` bound the id range too (ids begin with the creation
    millisecond); ``text`` (a substring of the job's id, type, parent, unique key, payload or error) uses
    the trigram index ``job_text`` (case-sensitive; any script; see ``_search``).
    """
    statuses, types = _as_list(status), _as_list(type)
    where, args = [], []
    if parent_id:
        where.append("parent_id=?")
        args.append(parent_id)
    if created_after is not None:
        where += ["created_at>=?", "id>=?"]
        args += [created_after, _id_at(int(created_after * 1000))]
    if created_before is not None:
        where += ["created_at<?", "id<?"]
        args += [created_before, _id_at(int(created_before * 1000) + 1 + ID_CLOCK_SLACK_MS)]
    cursor = after_id if oldest_first else before_id
    if cursor:
        where.append("id>?" if oldest_first else "id<?")
        args.append(cursor)
    if text:
        if db.in_transaction:
            return _search(db, text, where, args, statuses, types, oldest_first, cursor, limit)
        db.execute("BEGIN")  # one snapshot of the index, of what it has not indexed yet, and of the rows
        try:
            return _search(db, text, where, args, statuses, types, oldest_first, cursor, limit)
        finally:
            db.execute("COMMIT")
    return _pages(db, where, args, statuses, types, oldest_first, limit)


def _search(db, text, where, args, statuses, types, oldest_first, cursor, limit) -> list[dict]:
    """``select_jobs`` with ``text``: the trigram index for the rows it holds, the rows themselves for the few
    it does not hold yet (newer than its last pass, or with a changed error: ``job_text_stale``)."""
    order = "ASC" if oldest_first else "DESC"
    indexed = db.execute("SELECT coalesce(max(id), 0) FROM job_text_content").fetchone()[0]
    # Rows newer than the index's last pass, and rows whose indexed text is stale: few, read by rowid.
    fresh = (f"(SELECT rowid AS fresh FROM jobs WHERE rowid > ? UNION SELECT id FROM job_text_stale) "
             f"CROSS JOIN jobs ON jobs.rowid=fresh WHERE instr({JOB_TEXT}, ?) > 0")
    match = _match(db, text)
    if match is None:  # too short for the index and too common to list its terms: rows checked in page order
        return _pages(db, [*where, f"instr({JOB_TEXT}, ?) > 0"], [*args, text], statuses, types, oldest_first, limit)
    for column, values in (("status", statuses), ("type", types)):
        if values:
            where = [*where, f"{column} IN ({','.join('?' * len(values))})"]
            args = [*args, *values]
    condition = " AND ".join(where) or "1"
    hits = "SELECT rowid AS hit FROM job_text WHERE job_text MATCH ? AND rowid NOT IN (SELECT id FROM job_text_stale)"
    rare = match == '""' or db.execute(
        "SELECT count(*) FROM (SELECT rowid FROM job_text WHERE job_text MATCH ? LIMIT ?)",
        (match, RARE_MATCHES + 1)).fetchone()[0] <= RARE_MATCHES
    if rare:  # few matches: read them all from the index (and the fresh rows), sort just those
        found, found_args = (f"{hits} UNION ", [match]) if match != '""' else ("", [])
        sql = (f"SELECT jobs.data FROM ({found}SELECT jobs.rowid AS hit FROM {fresh}) "
               f"CROSS JOIN jobs ON jobs.rowid=hit WHERE {condition} ORDER BY jobs.id {order} LIMIT ?")
        return [_loads(d) for (d,) in db.execute(sql, [*found_args, indexed, text, *args, limit])]
    # Many matches: walk the index in rowid order (which is id order) until the page is full, and merge
    # in the fresh rows (read the same way).
    bound, bound_args = "", []
    if cursor:
        bound = (f" AND jobs.rowid {'>' if oldest_first else '<'} "
                 f"coalesce((SELECT rowid FROM jobs WHERE id=?), {0 if oldest_first else 2 ** 63 - 1})")
        bound_args = [cursor]
    walked = db.execute(
        "SELECT jobs.rowid, jobs.data FROM job_text CROSS JOIN jobs ON jobs.rowid=job_text.rowid "
        f"WHERE job_text MATCH ? AND job_text.rowid NOT IN (SELECT id FROM job_text_stale) AND {condition}{bound} "
        f"ORDER BY job_text.rowid {order} LIMIT ?", [match, *args, *bound_args, limit]).fetchall()
    newer = db.execute(f"SELECT jobs.rowid, jobs.data FROM {fresh} AND {condition}{bound} "
                       f"ORDER BY jobs.rowid {order} LIMIT ?", [indexed, text, *args, *bound_args, limit]).fetchall()
    rows = heapq.merge(walked, newer, key=lambda row: row[0], reverse=not oldest_first)
    return [_loads(d) for _, d in itertools.islice(rows, limit)]


def index_pending(db, limit: int = 500) -> int:
    """Index up to ``limit`` jobs the search index does not hold yet, and re-index up to ``limit`` stale ones.

    Runs on a connection of its own (``actors/search.py``), in a short write transaction, off the actor's
    loop; returns how many rows it wrote (``limit`` or more: call again).
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        indexed = db.execute("SELECT coalesce(max(id), 0) FROM job_text_content").fetchone()[0]
        added = db.execute(f"INSERT INTO job_text(rowid, body) SELECT rowid, {JOB_TEXT} FROM jobs "
                           "WHERE rowid > ? ORDER BY rowid LIMIT ?", (indexed, limit)).rowcount
        stale = [(i,) for (i,) in db.execute("SELECT id FROM job_text_stale LIMIT ?", (limit,))]
        old = [row for row in stale if row[0] <= indexed]  # newer rows were just indexed as they are now
        db.executemany("DELETE FROM job_text WHERE rowid=?", old)
        db.executemany(f"INSERT INTO job_text(rowid, body) SELECT rowid, {JOB_TEXT} FROM jobs WHERE rowid=?", old)
        db.executemany("DELETE FROM job_text_stale WHERE id=?", stale)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return added + len(stale)


def _pages(db, where, args, statuses, types, oldest_first, limit) -> list[dict]:
    """One page in id order: one index range per (status, type) pair, merged."""
    order = "ASC" if oldest_first else "DESC"
    if not statuses and not types:
        return _page(db, where, args, order, limit)
    if statuses:
        pairs = [(s, t) for s in statuses for t in (types or [None])]
    else:  # a type's rows are in id order per status in ``jobs_type_status``: one range per status it has
        pairs = [(s, t) for t in types for s in _statuses_of(db, t)]
    pages = []
    for s, t in pairs:
        extra, values = [], []
        if s is not None:
            extra.append("status=?")
            values.append(s)
        if t is not None:
            extra.append("type=?")
            values.append(t)
        pages.append(_page(db, extra + where, values + args, order, limit, with_id=True))
    if len(pages) == 1:
        return [record for _, record in pages[0]]
    merged = heapq.merge(*pages, key=lambda row: row[0], reverse=not oldest_first)
    return [record for _, record in itertools.islice(merged, limit)]


def _statuses_of(db, type_name: str) -> list[str]:
    """The statuses jobs of a type have, by a few seeks in ``jobs_type_status`` (no scan)."""
    out, last = [], ""
    while True:
        (status,) = db.execute("SELECT min(status) FROM jobs WHERE type=? AND status>?", (type_name, last)).fetchone()
        if status is None:
            return out
        out.append(status)
        last = status


def _page(db, where: list[str], args: list, order: str, limit: int, with_id: bool = False) -> list:
    sql = "SELECT id, data FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + \
        f" ORDER BY id {order} LIMIT ?"
    rows = db.execute(sql, [*args, limit])
    if with_id:
        return [(i, _loads(d)) for i, d in rows]
    return [_loads(d) for _, d in rows]


def select_events(db, stream: str | None, after: int, limit: int = 1000) -> list[dict]:
    """Events of one stream with seq > after, or of every stream with gseq > after (by the primary key)."""
    if stream is None:
        rows = db.execute(
            "SELECT gseq, stream, seq, at, kind, data FROM events WHERE gseq>? ORDER BY gseq LIMIT ?",
            (after, limit))
    else:
        rows = db.execute(
            "SELECT gseq, stream, seq, at, kind, data FROM events WHERE stream=? AND seq>? ORDER BY seq LIMIT ?",
            (stream, after, limit))
    return [{"gseq": g, "stream": s, "seq": q, "at": a, "kind": k, "data": _loads(d)}
            for g, s, q, a, k, d in rows]


#: The JSON text of an event, made by SQLite (in C, with the GIL released): ``at`` with 17 significant
#: digits, ``data`` as stored (it is JSON already).
_EVENT_TEXT = ("""'{"gseq": ' || gseq || ', "stream": ' || json_quote(stream) || ', "seq": ' || seq || """
               """', "at": ' || printf('%.17g', at) || ', "kind": ' || json_quote(kind) || ', "data": ' || data || '}'""")


def select_event_texts(db, stream: str | None, after: int, limit: int = 1000) -> list[tuple]:
    """Like ``select_events``, as ``(gseq, stream, seq, kind, json_text)``: the text a follower is sent.

    The stored data is already JSON, so it is neither parsed here nor dumped again where it is sent: a
    replaying follower costs the reader a row and the replica a string per event.
    """
    if stream is None:
        return db.execute(f"SELECT gseq, stream, seq, kind, {_EVENT_TEXT} FROM events WHERE gseq>? ORDER BY gseq "
                          "LIMIT ?", (after, limit)).fetchall()
    return db.execute(f"SELECT gseq, stream, seq, kind, {_EVENT_TEXT} FROM events WHERE stream=? AND seq>? "
                      "ORDER BY seq LIMIT ?", (stream, after, limit)).fetchall()


#: How far back of its place in gseq order an event's time may be (the clock stepped back): the slack
#: of ``gseq_since``.
CLOCK_SLACK_S = 60.0


def gseq_since(db, since: float) -> int:
    """A gseq before every event at or after ``since``: where a time window's events begin.

    Events are appended as they happen, so ``at`` grows with gseq (up to clock steps, ``CLOCK_SLACK_S``);
    a binary search over the primary key finds the place in ~25 lookups, so a window reads its own
    events by range instead of the whole table.
    """
    since -= CLOCK_SLACK_S
    lo, hi = db.execute("SELECT coalesce(min(gseq), 0), coalesce(max(gseq), 0) FROM events").fetchone()
    while lo < hi:
        mid = (lo + hi) // 2
        row = db.execute("SELECT gseq, at FROM events WHERE gseq>=? ORDER BY gseq LIMIT 1", (mid,)).fetchone()
        if row is None or row[1] >= since:
            hi = mid
        else:
            lo = row[0] + 1
    return max(0, lo - 1)


def recently_finished(db, since: float, statuses: tuple, limit: int) -> list[dict]:
    """A sample of jobs in ``statuses`` that finished at or after ``since``: of the ``4 * limit`` newest jobs of
    each status (by the status index, so its cost does not grow with the table), those that finished then."""
    out = []
    for status in statuses:
        out += [_loads(d) for (d,) in db.execute(
            "SELECT data FROM (SELECT data, updated_at FROM jobs WHERE status=? ORDER BY id DESC LIMIT ?) "
            "WHERE updated_at>=?", (status, 4 * limit, since))]
    return sorted(out, key=lambda job: job.get("updated_at") or 0, reverse=True)[:limit]


def select_logs(db, job_id: str, after: int, limit: int) -> tuple[list[dict], int]:
    """A job's log events with seq > after, and the last seq of its stream."""
    stream = "job:" + job_id
    rows = db.execute("SELECT seq, at, data FROM events WHERE stream=? AND kind='log' AND seq>? ORDER BY seq "
                      "LIMIT ?", (stream, after, limit)).fetchall()
    last = db.execute("SELECT max(seq) FROM events WHERE stream=?", (stream,)).fetchone()[0] or 0
    return [{"seq": seq, "at": at, **_loads(data)} for seq, at, data in rows], last
