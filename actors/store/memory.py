"""``MemoryStore``: the queue store's twin without a file, for the queue rules' unit tests.

It keeps ``Store``'s contract (``tests/unit/test_store_contract.py`` runs the same checks on both):
writes are staged and become visible to a reopened store only at ``commit()``; a record read back is a
copy (a JSON round trip, as a row is); a job's staged record is what ``get_job`` answers before the
commit, as the writer's own reads do. What was committed lives in a ``MemoryDisk``, which outlives the
store: ``MemoryStore(disk)`` again is a restart that lost whatever was staged and not committed.

Not here: the search index (``text=`` matches a plain substring of the same fields) and SQLite's own
behaviour (locking, WAL snapshots) — the integration tests run the real one.
"""

from __future__ import annotations

import itertools
from typing import Iterable

import orjson

from .schema import FINAL
from .staging import Staging


class MemoryDisk:
    """What a ``MemoryStore`` committed: the tables as dicts of JSON bytes."""

    def __init__(self):
        self.jobs: dict[str, bytes] = {}  # insertion order is the rowid order SQLite keeps
        self.events: dict[int, tuple] = {}  # gseq -> (stream, seq, at, kind, data bytes)
        self.meta: dict[str, bytes] = {}
        self.schedules: dict[str, bytes] = {}
        self.buckets: dict[str, bytes] = {}
        self.controls: dict[tuple[str, str], bytes] = {}
        self.deliveries: dict[str, bytes] = {}
        self.commits = 0


class MemoryStore(Staging):
    """The ``Store`` interface over a ``MemoryDisk``. Not thread-safe, like ``Store``."""

    path = None

    def __init__(self, disk: MemoryDisk | None = None):
        super().__init__()
        self.disk = disk if disk is not None else MemoryDisk()

    def commit(self) -> None:
        """Make everything staged durable at once (serialized first: a bad value commits nothing)."""
        if not self.dirty:
            return
        staged = self.take()
        jobs = {i: orjson.dumps(r) for i, r in staged.jobs.items()}
        events = [(e["gseq"], (e["stream"], e["seq"], e["at"], e["kind"], orjson.dumps(e["data"])))
                  for e in staged.events]
        deliveries = {k: orjson.dumps(d) for k, d in staged.deliveries.items() if d["job_id"] not in staged.deleted}
        disk = self.disk
        seen = {(s, q) for s, q, *_ in disk.events.values()}
        for gseq, row in events:
            if gseq in disk.events or row[:2] in seen:
                raise ValueError(f"event {gseq} ({row[0]} #{row[1]}) is already stored")  # SQLite's UNIQUE
        disk.jobs.update(jobs)
        for job_id in staged.deleted:
            disk.jobs.pop(job_id, None)
            for gseq in [g for g, row in disk.events.items() if row[0] == "job:" + job_id]:
                del disk.events[gseq]
            for key in [k for k, d in disk.deliveries.items() if orjson.loads(d)["job_id"] == job_id]:
                del disk.deliveries[key]
        disk.events.update(events)
        disk.meta.update({k: orjson.dumps(v) for k, v in staged.meta.items()})
        for table, changes in ((disk.schedules, staged.schedules), (disk.controls, staged.controls)):
            for key, value in changes.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = orjson.dumps(value)
        disk.buckets.update({k: orjson.dumps(v) for k, v in staged.buckets.items()})
        disk.deliveries.update(deliveries)
        disk.commits += 1

    # -- reading -----------------------------------------------------------
    def get_job(self, job_id: str) -> dict | None:
        known, record = self.staged_job(job_id)
        if known:
            return record
        data = self.disk.jobs.get(job_id)
        return orjson.loads(data) if data is not None else None

    def _rows(self) -> Iterable[dict]:
        return (orjson.loads(d) for d in self.disk.jobs.values())

    def active_jobs(self) -> Iterable[dict]:
        return [r for r in self._rows() if r["status"] not in FINAL]

    def list_jobs(self, *, status=None, type=None, parent_id=None, created_after=None, created_before=None,
                  before_id=None, after_id=None, oldest_first=False, limit=100, text=None) -> list[dict]:
        """``select_jobs``'s page over the committed rows (``text``: a plain substring of the same fields)."""
        statuses = [status] if isinstance(status, str) else status
        types = [type] if isinstance(type, str) else type
        cursor = after_id if oldest_first else before_id

        def wanted(r: dict) -> bool:
            searched = "\n".join([r["id"], r["type"], r.get("parent_id") or "",
                                  orjson.dumps([r.get("unique_key"), r.get("payload"), (r.get("error") or {}).get("type"),
                                                (r.get("error") or {}).get("message")]).decode()])
            return ((not statuses or r["status"] in statuses) and (not types or r["type"] in types)
                    and (not parent_id or r.get("parent_id") == parent_id)
                    and (created_after is None or r["created_at"] >= created_after)
                    and (created_before is None or r["created_at"] < created_before)
                    and (not cursor or (r["id"] > cursor if oldest_first else r["id"] < cursor))
                    and (not text or text in searched))

        rows = sorted((r for r in self._rows() if wanted(r)), key=lambda r: r["id"], reverse=not oldest_first)
        return rows[:limit]

    def children_of(self, parent_id: str) -> list[dict]:
        return self.with_staged_children(parent_id, {r["id"]: r for r in self._rows()
                                                     if r.get("parent_id") == parent_id})

    def count_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self._rows():
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return counts

    def events_after(self, stream: str | None, after: int, limit: int = 1000) -> list[dict]:
        rows = sorted(self.disk.events.items())
        if stream is None:
            picked = [(g, row) for g, row in rows if g > after]
        else:
            picked = sorted(((g, row) for g, row in rows if row[0] == stream and row[1] > after),
                            key=lambda item: item[1][1])
        return [{"gseq": g, "stream": s, "seq": q, "at": a, "kind": k, "data": orjson.loads(d)}
                for g, (s, q, a, k, d) in itertools.islice(picked, limit)]

    def last_seq(self, stream: str) -> int:
        return max((row[1] for row in self.disk.events.values() if row[0] == stream), default=0)

    def max_gseq(self) -> int:
        return max(self.disk.events, default=0)

    def get_meta(self, key: str, default=None):
        data = self.disk.meta.get(key)
        return orjson.loads(data) if data is not None else default

    def schedules(self) -> dict[str, dict]:
        return {n: orjson.loads(d) for n, d in self.disk.schedules.items()}

    def buckets(self) -> dict[str, dict]:
        return {n: orjson.loads(d) for n, d in self.disk.buckets.items()}

    def pending_deliveries(self) -> list[dict]:
        rows = (orjson.loads(d) for _, d in sorted(self.disk.deliveries.items()))
        return [d for d in rows if d["state"] == "pending"]

    def deliveries_of(self, job_id: str) -> list[dict]:
        rows = {k: orjson.loads(d) for k, d in self.disk.deliveries.items()}
        return self.with_staged_deliveries(job_id, {k: d for k, d in rows.items() if d["job_id"] == job_id})

    def controls(self, kind: str) -> dict:
        return {k: orjson.loads(d) for (c, k), d in self.disk.controls.items() if c == kind}

    def prune_events(self, before: float, limit: int = 2000) -> int:
        """Delete the events older than ``before`` of finished jobs, but each job's last (one pass)."""
        finished = {"job:" + r["id"] for r in self._rows() if r["status"] in FINAL}
        last: dict[str, int] = {}
        for s, q, *_ in self.disk.events.values():
            last[s] = max(last.get(s, 0), q)
        old = [g for g, (s, q, a, *_) in self.disk.events.items() if s in finished and a < before and q < last[s]]
        for gseq in old[:limit]:
            del self.disk.events[gseq]
        return min(len(old), limit)

    def close(self) -> None:
        pass
