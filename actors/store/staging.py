"""What a queue's rules stage between two commits, the same for both stores.

The rules change records in memory and stage each change here; ``take()`` hands the store's commit all
of it at once and starts afresh. A job is staged as its record (serialized at the commit, so the row
is the record as it stands then); schedules, buckets and control records are copied when staged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson


def copy(value):
    """A JSON round trip: what a stored value reads back as."""
    return orjson.loads(orjson.dumps(value))


@dataclass
class Staged:
    """One commit's worth of changes (``None`` for a schedule or control record deletes it)."""

    jobs: dict[str, dict] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    events: list[dict] = field(default_factory=list)
    meta: dict[str, object] = field(default_factory=dict)
    schedules: dict[str, dict | None] = field(default_factory=dict)
    buckets: dict[str, dict] = field(default_factory=dict)
    controls: dict[tuple[str, str], object] = field(default_factory=dict)
    deliveries: dict[str, dict] = field(default_factory=dict)


class Staging:
    """The staging half of a store: ``put_*`` and ``dirty``; the store adds ``commit`` and the reads."""

    def __init__(self):
        self.staged = Staged()

    def put_job(self, record: dict) -> None:
        self.staged.deleted.discard(record["id"])
        self.staged.jobs[record["id"]] = record

    def delete_job(self, job_id: str) -> None:
        self.staged.jobs.pop(job_id, None)
        self.staged.deleted.add(job_id)

    def add_event(self, event: dict) -> None:
        self.staged.events.append(event)

    def set_meta(self, key: str, value) -> None:
        self.staged.meta[key] = value

    def put_schedule(self, name: str, data: dict | None) -> None:
        self.staged.schedules[name] = None if data is None else copy(data)

    def put_bucket(self, name: str, data: dict) -> None:
        self.staged.buckets[name] = copy(data)

    def put_control(self, kind: str, key: str, data) -> None:
        """Stage a queue-control record (a dedup window, throttle starts); None deletes it."""
        self.staged.controls[(kind, key)] = None if data is None else copy(data)

    def put_delivery(self, delivery: dict) -> None:
        """Stage a callback delivery (actors/callbacks.py): pending until delivered or failed."""
        self.staged.deliveries[delivery["id"]] = delivery

    @property
    def dirty(self) -> bool:
        s = self.staged
        return bool(s.jobs or s.deleted or s.events or s.meta or s.schedules or s.buckets or s.controls
                    or s.deliveries)

    def take(self) -> Staged:
        """Everything staged, for the commit; staging starts afresh."""
        staged, self.staged = self.staged, Staged()
        return staged

    # -- reads that must see what is staged (the writer's own view) --------------------------------
    def staged_job(self, job_id: str) -> tuple[bool, dict | None]:
        """(known, record): a staged record, or (True, None) for a staged deletion, or (False, None)."""
        if job_id in self.staged.jobs:
            return True, self.staged.jobs[job_id]
        return job_id in self.staged.deleted, None

    def with_staged_children(self, parent_id: str, stored: dict[str, dict]) -> list[dict]:
        stored.update({i: r for i, r in self.staged.jobs.items() if r.get("parent_id") == parent_id})
        return [r for i, r in stored.items() if i not in self.staged.deleted]

    def with_staged_deliveries(self, job_id: str, stored: dict[str, dict]) -> list[dict]:
        """A job's deliveries, stored and staged, by try number."""
        stored.update({k: d for k, d in self.staged.deliveries.items() if d["job_id"] == job_id})
        return sorted(stored.values(), key=lambda d: int(d["id"].rsplit(".", 1)[1]))
