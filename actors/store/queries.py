"""Every read of a queue's database that is more than a key lookup: job lists and search, event pages,
log pages, window statistics and the search indexer's step.

Each takes a ``sqlite3`` connection: the writer's, or a read-only one off the actor's loop
(``actors/reads.py``). Together with ``sqlite.py`` this is all of dojo's SQL for a queue.
"""

from __future__ import annotations

import heapq
import itertools
import math

import orjson

from .schema import JOB_TEXT


def _loads(text: str):
    return orjson.loads(text)


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


# -- window statistics (the dashboard's insights) ------------------------------------------------
def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (0..100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def window_stats(db, since: float, now: float, sample: int = 5000) -> dict:
    """Throughput, failure rate and run-time percentiles of jobs that ended in [since, now].

    ``db`` is the queue's sqlite3 connection. Counts come from status events;
    run times from the attempt history of at most ``sample`` recent jobs.
    """
    first = gseq_since(db, since)  # the window's events by primary-key range, not the whole table
    rows = db.execute(
        "SELECT json_extract(data, '$.status'), count(*) FROM events "
        "WHERE gseq>? AND kind='status' AND at>=? AND at<=? GROUP BY 1", (first, since, now)).fetchall()
    by_status = {s: n for s, n in rows if s}
    succeeded, failed = by_status.get("succeeded", 0), by_status.get("failed", 0)
    enqueued = db.execute(
        "SELECT count(*) FROM events WHERE gseq>? AND kind='status' AND at>=? AND at<=? AND seq=1",
        (first, since, now)).fetchone()[0]
    durations = []
    for job in recently_finished(db, since, ("succeeded", "failed"), sample):
        for attempt in job.get("history") or ():
            if attempt.get("ended_at", 0) >= since and attempt.get("duration") is not None:
                durations.append(attempt["duration"])
    ended = succeeded + failed
    hours = max(now - since, 1.0) / 3600
    return {
        "since": since, "until": now, "enqueued": enqueued, "succeeded": succeeded, "failed": failed,
        "cancelled": by_status.get("cancelled", 0), "retried": by_status.get("retrying", 0),
        "throughput_per_hour": round(ended / hours, 3),
        "failure_rate": round(failed / ended, 4) if ended else None,
        "run_p50": percentile(durations, 50), "run_p95": percentile(durations, 95),
    }


def series(db, since: float, now: float, bucket: float = 60.0) -> dict:
    """Per-bucket counts of jobs enqueued, succeeded and failed in [since, now] (for the charts)."""
    bucket = max(1.0, float(bucket))
    n = max(1, math.ceil((now - since) / bucket))
    out = {k: [0] * n for k in ("enqueued", "succeeded", "failed")}
    rows = db.execute(
        "SELECT CAST((at - ?) / ? AS INTEGER), json_extract(data, '$.status'), seq, count(*) FROM events "
        "WHERE gseq>? AND kind='status' AND at>=? AND at<=? GROUP BY 1, 2, seq=1",
        (since, bucket, gseq_since(db, since), since, now))
    for index, status, seq, count in rows:
        index = min(max(int(index), 0), n - 1)
        if seq == 1:
            out["enqueued"][index] += count
        if status in ("succeeded", "failed"):
            out[status][index] += count
    return {"since": since, "bucket": bucket, **out}
