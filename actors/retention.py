"""Retention: forget finished jobs older than a configured age (``DOJO_RETENTION_DAYS``).

``sweep(queue, now)`` deletes, through ``JobQueue.delete``, finished jobs
(succeeded, failed, cancelled) whose ``finished_at`` is older than the
retention age, with their events. It stages the deletes; the caller commits,
as with every other change. Unfinished jobs are never touched, whatever their
age. Unset or ``0`` keeps everything (the default). The queue actor calls it
from its tick about once an hour; a sweep removes at most ``limit`` jobs, so a
large backlog is worked off over several ticks without a long pause.
"""

from __future__ import annotations

import logging
import os

from .exceptions import ConfigError
from .store import FINAL

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 3600.0
PAGE = 500


def retention_days(env: dict | None = None) -> float:
    """``DOJO_RETENTION_DAYS`` as a number of days; 0 (keep forever) when unset."""
    raw = (env if env is not None else os.environ).get("DOJO_RETENTION_DAYS", "").strip()
    if not raw:
        return 0.0
    try:
        days = float(raw)
    except ValueError:
        raise ConfigError(f"DOJO_RETENTION_DAYS must be a number of days (e.g. 30), got {raw!r}") from None
    if days < 0:
        raise ConfigError(f"DOJO_RETENTION_DAYS must be >= 0 (0 keeps every job), got {raw!r}")
    return days


def sweep(queue, now: float, days: float | None = None, limit: int = 10_000) -> int:
    """Delete finished jobs of ``queue`` (a JobQueue) that finished before ``now - days``; returns how many."""
    days = retention_days() if days is None else days
    if not days or days <= 0:
        return 0
    cutoff = now - days * 86400
    removed, cursor = 0, None
    while removed < limit:
        # A job finishes after it is created, so created_before narrows the scan without missing any.
        page = queue.store.list_jobs(status=list(FINAL), created_before=cutoff, before_id=cursor, limit=PAGE)
        if not page:
            break
        for job in page:
            finished = job.get("finished_at") or job.get("updated_at") or now
            if finished < cutoff and job["id"] not in queue.jobs:
                queue.delete(job["id"])
                removed += 1
                if removed >= limit:
                    break
        if len(page) < PAGE:
            break
        cursor = page[-1]["id"]
    if removed:
        log.info("retention: queue %s forgot %d jobs finished before %d days ago", queue.name, removed, days,
                 extra={"queue": queue.name})
    return removed
