"""Bulk cancel, retry and delete by filter, in plain Python: which jobs a call may change.

``POST /v1/jobs/cancel|retry|delete`` take a filter (queue, type, status,
created time range, group key) and change the matching jobs that the action
applies to, oldest first, reading at most ``limit`` jobs per call (the group
key is checked on the jobs read, so a page may change fewer than it read). The answer says how many it changed
and gives ``next_cursor`` while more may match: send it back as ``cursor`` to
go on. A call changes exactly the jobs of its page that match the filter when
it runs; one that changed meanwhile (finished, say) is counted as ``skipped``.

The statuses an action applies to are its default ``status`` filter; a status
it cannot apply to is refused (422 naming ``status``) rather than ignored.
Cancelling by filter cancels exactly the matched jobs, not their children.
"""

from __future__ import annotations

from dataclasses import dataclass

from .exceptions import InvalidInput

ACTIONS = {
    "cancel": ("queued", "scheduled", "running", "retrying", "waiting", "sleeping"),
    "retry": ("failed", "cancelled", "expired"),
    "delete": ("succeeded", "failed", "cancelled", "expired"),
}
FIELDS = {"queue", "type", "status", "created_after", "created_before", "cursor", "limit", "group"}
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000


def _names(value, field: str) -> list[str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise InvalidInput(f"{field} must be a name or a non-empty list of names, got {value!r}", field=field)
    return values


def _time(value, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{field} must be epoch seconds, got {value!r}", field=field)
    return float(value)


@dataclass(frozen=True)
class BulkFilter:
    action: str
    queue: str
    statuses: tuple[str, ...]
    types: tuple[str, ...] | None
    created_after: float | None
    created_before: float | None
    cursor: str | None
    limit: int
    groups: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, action: str, body) -> "BulkFilter":
        if action not in ACTIONS:
            raise InvalidInput(f"no bulk action {action!r}; use {sorted(ACTIONS)}", field="action")
        if not isinstance(body, dict):
            raise InvalidInput("send a filter object like {'queue': 'default', 'status': ['failed'], "
                               "'type': 'echo', 'created_after': 0, 'created_before': 1e10, 'limit': 500}")
        unknown = set(body) - FIELDS
        if unknown:
            raise InvalidInput(f"unknown filter fields {sorted(unknown)}; allowed: {sorted(FIELDS)}",
                               field=sorted(unknown)[0])
        allowed = ACTIONS[action]
        statuses = _names(body.get("status"), "status") or list(allowed)
        wrong = sorted(set(statuses) - set(allowed))
        if wrong:
            raise InvalidInput(f"{action} applies to jobs that are {list(allowed)}, not {wrong}; drop those from "
                               "status", field="status")
        limit = body.get("limit", DEFAULT_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be a whole number within 1..{MAX_LIMIT}, got {limit!r}", field="limit")
        cursor = body.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidInput(f"cursor must be the next_cursor of the previous call, got {cursor!r}", field="cursor")
        queue = body.get("queue", "default")
        if not isinstance(queue, str):
            raise InvalidInput(f"queue must be a queue name, got {queue!r}", field="queue")
        types = _names(body.get("type"), "type")
        groups = _names(body.get("group"), "group")
        return cls(action, queue, tuple(sorted(set(statuses))), tuple(types) if types else None,
                   _time(body.get("created_after"), "created_after"),
                   _time(body.get("created_before"), "created_before"), cursor, limit,
                   tuple(groups) if groups else None)

    def select(self) -> dict:
        """Keyword arguments of ``store.select_jobs`` for this call's page (oldest first, after the cursor)."""
        return {"status": list(self.statuses), "type": list(self.types) if self.types else None,
                "created_after": self.created_after, "created_before": self.created_before,
                "after_id": self.cursor, "oldest_first": True, "limit": self.limit}

    def matches(self, job: dict) -> bool:
        """Whether the job, as it is now, is still in the filtered set."""
        return (job["status"] in self.statuses and (self.types is None or job["type"] in self.types)
                and (self.created_after is None or job["created_at"] >= self.created_after)
                and (self.created_before is None or job["created_at"] < self.created_before)
                and (self.groups is None or (job.get("group") or {}).get("key") in self.groups))
