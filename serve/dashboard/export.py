"""Job history as a table: one row per attempt, written to Parquet (``dojo export``).

A job that never started gives one row with ``attempt`` 0 and no outcome, so
the export accounts for every job created in the window.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    ("job_id", pa.string()), ("queue", pa.string()), ("type", pa.string()), ("status", pa.string()),
    ("attempt", pa.int32()), ("outcome", pa.string()), ("node", pa.string()), ("pid", pa.int64()),
    ("started_at", pa.timestamp("ms", tz="UTC")), ("ended_at", pa.timestamp("ms", tz="UTC")),
    ("duration_s", pa.float64()), ("error_type", pa.string()), ("error_message", pa.string()),
    ("created_at", pa.timestamp("ms", tz="UTC")), ("finished_at", pa.timestamp("ms", tz="UTC")),
    ("parent_id", pa.string()), ("priority", pa.int32()), ("max_attempts", pa.int32()), ("payload", pa.string()),
])

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: float | None = None) -> float:
    """Epoch seconds from ``1717000000``, ``2024-06-01``, ``2024-06-01T12:00`` (UTC unless given) or ``7d`` ago."""
    text = text.strip()
    now = time.time() if now is None else now
    match = _RELATIVE.match(text)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read time {text!r}; use epoch seconds, an ISO date like 2024-06-01 or "
                         "2024-06-01T12:00, or an age like 7d / 12h") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _ms(t):
    return None if t is None else datetime.fromtimestamp(t, timezone.utc)


def attempt_rows(jobs) -> list[dict]:
    """One dict per attempt of each job (API job objects, with ``history``)."""
    rows = []
    for job in jobs:
        base = {"job_id": job["id"], "queue": job.get("queue"), "type": job.get("type"), "status": job.get("status"),
                "created_at": _ms(job.get("created_at")), "finished_at": _ms(job.get("finished_at")),
                "parent_id": job.get("parent_id"), "priority": job.get("priority"),
                "max_attempts": job.get("max_attempts"), "payload": json.dumps(job.get("payload"))}
        history = job.get("history") or []
        for attempt in history:
            error = attempt.get("error") or {}
            rows.append({**base, "attempt": attempt.get("attempt"), "outcome": attempt.get("outcome"),
                         "node": attempt.get("node"), "pid": attempt.get("pid"),
                         "started_at": _ms(attempt.get("started_at")), "ended_at": _ms(attempt.get("ended_at")),
                         "duration_s": attempt.get("duration"), "error_type": error.get("type"),
                         "error_message": error.get("message")})
        if not history:
            lease = job.get("lease") or {}
            rows.append({**base, "attempt": job.get("attempts") or 0, "outcome": None, "node": lease.get("node"),
                         "pid": lease.get("pid"), "started_at": _ms(lease.get("started_at")), "ended_at": None,
                         "duration_s": None, "error_type": None, "error_message": None})
    return rows


def write_parquet(rows: list[dict], path) -> int:
    """Write rows (``attempt_rows``) to a Parquet file; returns the row count."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    pq.write_table(table, str(path))
    return table.num_rows


def collect(client, since: float | None, until: float | None, queues: list[str] | None = None) -> list[dict]:
    """Every job created in [since, until) of the given queues (default: every queue the server knows)."""
    if not queues:
        queues = [q["queue"] for q in client._call("GET", "/dashboard/api/queues", window=60)["queues"]]
    jobs = []
    for queue in queues:
        cursor = None
        while True:
            page = client._call("GET", "/v1/jobs", queue=queue, since=since, until=until, cursor=cursor, limit=500)
            jobs += page["jobs"]
            cursor = page["next_cursor"]
            if not cursor:
                break
    return jobs
