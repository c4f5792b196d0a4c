"""Job expiry, in plain Python: a job not started within ``expires_in`` seconds becomes ``expired``.

Like Celery's ``expires`` or Trigger.dev's ``ttl``: work that is only worth
doing soon (a notification, a preview) is dropped instead of run late. Expiry
is about the *start*: once any attempt of a job has started, the job never
expires (a retrying job runs its retries). ``expired`` is a final status with
its own status event, and an expired job can be retried (it then has no expiry).

The deadline is stored in the job's record (``expires_at``), so it survives a
restart: the queue re-watches every unstarted job when it reloads.
"""

from __future__ import annotations

import heapq

from .exceptions import InvalidInput

#: The longest ``expires_in`` (a year): a longer one is surely a unit mistake (milliseconds?).
MAX_EXPIRES_IN = 365 * 24 * 3600.0
#: Statuses of a job that has not started yet and may still expire.
UNSTARTED = ("queued", "scheduled")


def expires_at(spec: dict, run_at: float, now: float) -> float | None:
    """The deadline of a spec's ``expires_in`` (counted from enqueue), or None; InvalidInput names the field."""
    value = spec.get("expires_in")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_EXPIRES_IN:
        raise InvalidInput(f"expires_in must be a number of seconds within 0..{MAX_EXPIRES_IN:.0f} (exclusive of 0), "
                           f"got {value!r}", field="expires_in")
    if run_at >= now + value:
        raise InvalidInput(f"expires_in ({value:g} s) ends before the job may start (its delay, run_at or "
                           "debounce period); give a longer expires_in or start it sooner", field="expires_in")
    return now + float(value)


class Expiry:
    """Deadlines of the unstarted jobs that have one, soonest first."""

    def __init__(self):
        self._heap: list[tuple[float, str]] = []

    def watch(self, job: dict) -> None:
        if job.get("expires_at") is not None and job.get("started_at") is None:
            heapq.heappush(self._heap, (job["expires_at"], job["id"]))

    def due(self, jobs: dict[str, dict], now: float) -> list[dict]:
        """The jobs whose deadline has come and that have still not started (others are dropped)."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, job_id = heapq.heappop(self._heap)
            job = jobs.get(job_id)
            if job is not None and job.get("started_at") is None and job["status"] in UNSTARTED \
                    and job.get("expires_at") is not None and job["expires_at"] <= now:
                out.append(job)
        return out

    def next_at(self) -> float | None:
        return self._heap[0][0] if self._heap else None
