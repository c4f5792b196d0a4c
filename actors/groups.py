"""Fair shares inside a queue, in plain Python: ready jobs taken in turns between group keys.

A job spec's ``group: {"key": "tenant-7", "limit": 2}`` puts the job in a
group (a tenant, a broadcaster). Within each lane (job type and resources),
every group with ready jobs gets a turn in rotation, so one tenant's 10,000
waiting jobs do not hold back another tenant's first job; within a group jobs
go by priority, then age. Jobs without a group share one turn as if they were
one group. ``limit`` caps how many jobs of the group run at once (the cap of
the group's latest job applies).

``Lane`` stands where a lane's heap stood; ``JobQueue`` counts each group's
running jobs and tells ``Lane.pop`` which groups are full.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Callable

from .exceptions import InvalidInput

KEY_MAX = 200
MAX_LIMIT = 100_000


def parse(spec: dict) -> dict | None:
    """The spec's ``group``, checked: ``{"key": str, "limit": int | None}``; InvalidInput names the field."""
    value = spec.get("group")
    if value is None:
        return None
    if not isinstance(value, dict) or "key" not in value or set(value) - {"key", "limit"}:
        raise InvalidInput(f"group must be an object {{'key': 'tenant-7', 'limit': 2}} ('limit' optional), "
                           f"got {value!r}", field="group")
    key = value["key"]
    if not isinstance(key, str) or not key or len(key) > KEY_MAX:
        raise InvalidInput(f"group.key must be a non-empty string of at most {KEY_MAX} characters",
                           field="group.key")
    limit = value.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT):
        raise InvalidInput(f"group.limit must be a whole number within 1..{MAX_LIMIT}, got {limit!r}",
                           field="group.limit")
    return {"key": key, "limit": limit}


class Lane:
    """The ready jobs of one lane: a heap of entries per group, taken in turns."""

    __slots__ = ("heaps", "turns", "size")

    def __init__(self):
        self.heaps: dict[str | None, list] = {}
        self.turns: deque = deque()  # groups with ready jobs, the next turn first
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def push(self, entry: tuple, group: str | None = None) -> None:
        heap = self.heaps.get(group)
        if heap is None:
            heap = self.heaps[group] = []
            self.turns.append(group)
        heapq.heappush(heap, entry)
        self.size += 1

    def peek(self, full: Callable[[str], bool] | None = None) -> tuple | None:
        """The entry ``pop`` would take now, left in place."""
        for group in self.turns:
            if group is None or full is None or not full(group):
                return self.heaps[group][0]
        return None

    def pop(self, full: Callable[[str], bool] | None = None) -> tuple | None:
        """The best entry of the next group in turn that is not ``full``; None when every group is full."""
        for _ in range(len(self.turns)):
            group = self.turns[0]
            self.turns.rotate(-1)  # this group's next turn comes after every other group's
            if group is not None and full is not None and full(group):
                continue
            heap = self.heaps[group]
            entry = heapq.heappop(heap)
            self.size -= 1
            if not heap:
                del self.heaps[group]
                self.turns.pop()  # it is last after the rotation
            return entry
        return None
