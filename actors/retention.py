"""Retention: forget finished jobs older than a configured age (``DOJO_RETENTION_DAYS``).

``sweep(queue, now)`` deletes, through ``JobQueue.delete``, finished jobs
(succeeded, failed, cancelled) whose ``finished_at`` is older than the
retention age, with their events. It stages the deletes; the caller commits,
as with every other change. Unfinished jobs are never touched, whatever their
age. Unset or ``0`` keeps everything (the default). The queue actor calls it
from its tick about once an hour with ``limit=PAGE``, and again every second
while a page came back full, so a large backlog is worked off a page at a time
without a long pause. Pages are read oldest first, from the old end of the
indexes: at 1,000,000 jobs a page costs ~30 ms where newest-first paging spent
~1.7 s on its first page.

``prune_events`` bounds the events table the same way: events older than
``DOJO_EVENT_RETENTION_DAYS`` (default 7) of finished jobs are deleted but each
job's last one, a page of events at a time; unfinished jobs keep theirs.

A job's objects go with it. A job writes its outputs under a folder named by
its id (``renders/<job id>/video.mp4``, ``batches/<job id>/results.parquet``);
that folder is what it owns. ``outputs_of(job)`` is the part of its result the
API signs URLs for: only keys in its own folder, so a result that names
another job's object (a pull worker's, say) gets no URL for it. When a job is
deleted (``DELETE /v1/jobs/{id}`` or this sweep), ``delete_objects`` removes
its folders, so no signed URL outlives the job it was made for.

Both clean-ups are ``Paced``: the actor's tick calls ``run(now)`` and gets a page done when one is due.
"""

from __future__ import annotations

import logging
import os
import re

from .exceptions import ConfigError
from .store import FINAL

log = logging.getLogger(__name__)

#: A job id as a folder name (``queue.queue_of`` checks the same shape).
JOB_ID = re.compile(r"j_[0-9a-f]{20}(\.[a-z0-9][a-z0-9_-]{0,39})?")
SWEEP_EVERY_S = 3600.0
PAGE = 500


def owns(job_id: str, key: object) -> bool:
    """True when ``key`` is an object key inside the job's own folder (``<kind>/<job id>/...``)."""
    return isinstance(key, str) and job_id in key.split("/")[:-1]


def outputs_of(job: dict) -> dict:
    """The entries of a job's result that name objects it owns (what the API signs URLs for)."""
    result = job.get("result")
    if not isinstance(result, dict):
        return {}
    return {name: key for name, key in result.items() if owns(job["id"], key)}


def foreign_objects(job_id: str, result: object, result_key: object = None) -> list[str]:
    """Keys in a result (its top-level values, and ``result_key``) inside another job's folder."""
    values = [*(result.values() if isinstance(result, dict) else [result]), result_key]
    return sorted(v for v in values if isinstance(v, str) and not owns(job_id, v)
                  and any(JOB_ID.fullmatch(segment) for segment in v.split("/")[:-1]))


def folders_of(job: dict) -> set[str]:
    """The folders (``renders/<job id>/``) of the objects a job's result names."""
    out, todo = set(), [job.get("result")]
    while todo:
        value = todo.pop()
        if isinstance(value, dict):
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
        elif owns(job["id"], value):
            segments = value.split("/")
            out.add("/".join(segments[:segments.index(job["id"]) + 1]) + "/")
    return out


def delete_objects(store, jobs: list[dict]) -> int:
    """Delete every object in the folders of these (deleted) jobs; returns how many. Blocking I/O."""
    removed = 0
    for job in jobs:
        for folder in sorted(folders_of(job)):
            try:
                for key in store.list(folder):
                    store.delete(key)
                    removed += 1
            except Exception:  # noqa: BLE001 - a storage error must not break the queue; the objects stay, logged
                log.exception("could not delete the objects of job %s under %s", job["id"], folder,
                              extra={"job_id": job["id"]})
    return removed


class Paced:
    """A clean-up done a page at a time: a page every ``every`` seconds, and again a second later while
    pages come back full (``step(now)`` returned ``page`` or more), so a backlog is worked off without
    one long pause of the actor's loop."""

    def __init__(self, every: float, page: int, step):
        self.every, self.page, self.step = every, page, step
        self.at, self.wait = float("-inf"), every

    def run(self, now: float) -> int:
        """What ``step`` did when a page was due, else 0."""
        if now - self.at < self.wait:
            return 0
        self.at = now
        done = self.step(now)
        self.wait = 1.0 if done >= self.page else self.every
        return done


def _days(env: dict | None, name: str, default: float, example: str, kept: str) -> float:
    raw = (env if env is not None else os.environ).get(name, "").strip()
    if not raw:
        return default
    try:
        days = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of days (e.g. {example}), got {raw!r}") from None
    if days < 0:
        raise ConfigError(f"{name} must be >= 0 (0 keeps every {kept}), got {raw!r}")
    return days


def retention_days(env: dict | None = None) -> float:
    """``DOJO_RETENTION_DAYS`` as a number of days; 0 (keep forever) when unset."""
    return _days(env, "DOJO_RETENTION_DAYS", 0.0, "30", "job")


def sweep(queue, now: float, days: float | None = None, limit: int = 10_000) -> int:
    """Delete finished jobs of ``queue`` (a JobQueue) that finished before ``now - days``; returns how many."""
    days = retention_days() if days is None else days
    if not days or days <= 0:
        return 0
    cutoff = now - days * 86400
    removed, cursor = 0, None
    while removed < limit:
        # A job finishes after it is created, so created_before narrows the scan without missing any; oldest
        # first, so the pages come from the old end of the index and a large queue is not read through.
        page = queue.store.list_jobs(status=list(FINAL), created_before=cutoff, after_id=cursor, oldest_first=True,
                                     limit=PAGE)
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


# -- events of finished jobs ---------------------------------------------------------------------
PRUNE_PAGE = 2000  # events walked per call
PRUNE_EVERY_S = 60.0
DEFAULT_EVENT_DAYS = 7.0


def event_retention_days(env: dict | None = None) -> float:
    """``DOJO_EVENT_RETENTION_DAYS``: days the events of finished jobs are kept (default 7; 0 keeps all).

    Older events of a finished job are deleted but its last (its final status), so its stream's sequence
    goes on where it ended if the job is retried. 7 days is the dashboard's longest statistics window.
    """
    return _days(env, "DOJO_EVENT_RETENTION_DAYS", DEFAULT_EVENT_DAYS, "7", "event")


def prune_events(store, now: float, days: float | None = None, limit: int = PRUNE_PAGE) -> int:
    """Delete the events older than ``now - days`` of finished jobs (all but each job's last), ``limit`` at a time.

    Writes in its own short transaction on the writer's connection; call it between commits (the queue
    actor's tick does). Returns how many events it walked: ``limit`` means there is more to do.
    """
    days = event_retention_days() if days is None else days
    if not days or days <= 0:
        return 0
    walked = store.prune_events(now - days * 86400, limit)
    if walked:
        log.info("retention: walked %d events older than %g days, pruning those of finished jobs", walked, days)
    return walked
