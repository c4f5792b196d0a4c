"""The queue database's schema: its tables, the search index over jobs, and which statuses are final.

Shared by the writer (``sqlite.py``) and the reads (``queries.py``); nothing here opens a database.
"""

from __future__ import annotations

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
