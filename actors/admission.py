"""Dedup, debounce and throttle, in plain Python: which jobs of a burst are kept, and when they may start.

- ``dedup: {"key", "ttl"}``: for ``ttl`` seconds after a job with the key is
  enqueued, enqueueing the key again returns that job (``created: false``),
  whether it is still waiting, running or finished. (``unique_key`` holds only
  while the first job is unfinished.)
- ``debounce: {"key", "period"}``: the job starts ``period`` seconds after it
  is enqueued, unless another job with the key comes first: then it is
  cancelled (error ``Debounced``, naming its successor) and the newer one waits
  its own period. Exactly the last job of a burst runs.
- ``throttle: {"key", "limit", "period"}``: at most ``limit`` jobs with the key
  start in any ``period`` seconds (a sliding window); the others wait queued.

Dedup windows and throttle start times are kept in the queue's database
(``controls``), so neither a restart nor a crash reopens a window; a debounced
job's wait is its ``run_at`` in its own record.
"""

from __future__ import annotations

import heapq
from collections import deque

from .exceptions import InvalidInput

KEY_MAX = 200
#: The longest dedup window, debounce period or throttle period (30 days).
MAX_PERIOD = 30 * 24 * 3600.0
MAX_LIMIT = 10_000
FIELDS = {"dedup": ("key", "ttl"), "debounce": ("key", "period"), "throttle": ("key", "limit", "period")}


def _seconds(field: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_PERIOD:
        raise InvalidInput(f"{field}.{name} must be a number of seconds within 0..{MAX_PERIOD:.0f} (not 0), "
                           f"got {value!r}", field=f"{field}.{name}")
    return float(value)


def parse(spec: dict) -> dict:
    """The spec's dedup, debounce and throttle, checked; InvalidInput names the field that is wrong."""
    out = {}
    for field, names in FIELDS.items():
        value = spec.get(field)
        if value is None:
            out[field] = None
            continue
        example = "{" + ", ".join(f"'{n}': ..." for n in names) + "}"
        if not isinstance(value, dict) or set(value) != set(names):
            raise InvalidInput(f"{field} must be an object {example} with exactly those keys, got {value!r}",
                               field=field)
        key = value["key"]
        if not isinstance(key, str) or not key or len(key) > KEY_MAX:
            raise InvalidInput(f"{field}.key must be a non-empty string of at most {KEY_MAX} characters",
                               field=f"{field}.key")
        checked = {"key": key}
        for name in names[1:]:
            if name == "limit":
                limit = value["limit"]
                if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
                    raise InvalidInput(f"{field}.limit must be a whole number within 1..{MAX_LIMIT}, got {limit!r}",
                                       field=f"{field}.limit")
                checked["limit"] = limit
            else:
                checked[name] = _seconds(field, name, value[name])
        out[field] = checked
    if out["debounce"]:
        clash = [f for f in ("delay", "run_at", "unique_key", "dedup", "parent_id") if spec.get(f) is not None]
        if clash:
            raise InvalidInput(f"debounce cannot be combined with {clash}: a debounced job starts after its quiet "
                               "period and may be replaced by a newer one; drop debounce or those fields",
                               field="debounce")
    if out["dedup"] and spec.get("unique_key") is not None:
        raise InvalidInput("give either unique_key (one unfinished job per key) or dedup (one job per key per ttl), "
                           "not both", field="dedup")
    return out


class Dedup:
    """Dedup windows: key -> [job id, until]."""

    def __init__(self, stored: dict[str, list] | None = None):
        self.windows: dict[str, list] = dict(stored or {})
        self._ends = [(until, key) for key, (_, until) in self.windows.items()]
        heapq.heapify(self._ends)

    def holder(self, key: str, now: float) -> str | None:
        """The job that holds the key's window now, if any."""
        window = self.windows.get(key)
        return window[0] if window and window[1] > now else None

    def hold(self, key: str, job_id: str, ttl: float, now: float) -> list:
        self.windows[key] = window = [job_id, now + ttl]
        heapq.heappush(self._ends, (now + ttl, key))
        return window

    def ended(self, now: float) -> list[str]:
        """Forget the windows that have ended; returns their keys (to delete from the store)."""
        gone = []
        while self._ends and self._ends[0][0] <= now:
            _, key = heapq.heappop(self._ends)
            window = self.windows.get(key)
            if window is not None and window[1] <= now:
                del self.windows[key]
                gone.append(key)
        return gone


class Throttle:
    """Start times per throttle key, within the longest period seen for the key."""

    def __init__(self, stored: dict[str, list] | None = None):
        self.starts: dict[str, deque] = {key: deque(times) for key, times in (stored or {}).items()}

    def wait(self, rule: dict, now: float) -> float:
        """0 when a job under ``rule`` may start now, else the instant it may."""
        starts = self.starts.get(rule["key"])
        if not starts:
            return 0.0
        recent = [t for t in starts if t > now - rule["period"]]
        if len(recent) < rule["limit"]:
            return 0.0
        return recent[-rule["limit"]] + rule["period"]

    def started(self, rule: dict, now: float) -> list[float]:
        """Record a start; returns the key's start times to store."""
        starts = self.starts.setdefault(rule["key"], deque())
        starts.append(now)
        while starts and (starts[0] <= now - rule["period"] or len(starts) > MAX_LIMIT):
            starts.popleft()
        return list(starts)
