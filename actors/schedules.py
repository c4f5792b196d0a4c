"""Cron schedules, in plain Python: validation and the next fire times.

A schedule is owned by its queue's actor and stored in the queue's database.
Each tick enqueues exactly one job: the schedule's ``next_run`` advances in
the same commit as the job it enqueues, and the job's ``unique_key`` is the
tick's identity (``schedule:<name>:<tick epoch>``), so a restart can neither
skip nor repeat a tick. Ticks missed while the cluster was down follow the
schedule's ``missed`` policy: ``skip`` (fire nothing for them; the next
regular tick fires) or ``run_once`` (fire one job for the latest missed tick).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .exceptions import InvalidInput

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
MISSED = ("skip", "run_once")
#: A tick this late still counts as on time (the actor may be busy or restarting).
GRACE_S = 60.0


def _zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise InvalidInput("timezone must be an IANA name like 'UTC' or 'Asia/Tokyo'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown timezone {name!r}; use an IANA name like 'UTC' or 'Asia/Tokyo'") from None


def check_cron(expression: str) -> None:
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidInput("cron must be a cron expression like '0 * * * *' (minute hour day month weekday)")
    fields = expression.split()
    if len(fields) != 5:
        raise InvalidInput(f"cron {expression!r} has {len(fields)} fields; expected 5: "
                           "minute hour day-of-month month day-of-week, e.g. '*/15 * * * *'")
    if not croniter.is_valid(expression):
        raise InvalidInput(f"cron {expression!r} is not a valid cron expression; e.g. '0 * * * *' is hourly, "
                           "'*/5 9-17 * * 1-5' every 5 minutes in office hours")


def next_after(expression: str, zone: str, after: float) -> float:
    """The first tick strictly after ``after`` (epoch seconds), in the schedule's time zone."""
    start = datetime.fromtimestamp(after, tz=timezone.utc).astimezone(_zone(zone))
    return croniter(expression, start).get_next(datetime).timestamp()


def latest_at_or_before(expression: str, zone: str, at: float) -> float:
    start = datetime.fromtimestamp(at + 0.001, tz=timezone.utc).astimezone(_zone(zone))
    return croniter(expression, start).get_prev(datetime).timestamp()


def validate(data, now: float) -> dict:
    """A new schedule record from API input, or InvalidInput; the job spec is checked by the queue."""
    if not isinstance(data, dict):
        raise InvalidInput("a schedule is an object: {'name', 'cron', 'timezone', 'job': {job spec}, 'missed'}")
    unknown = set(data) - {"name", "cron", "timezone", "job", "missed", "paused"}
    if unknown:
        raise InvalidInput(f"unknown schedule fields {sorted(unknown)}; allowed: name, cron, timezone, job, missed, "
                           "paused")
    name = data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(f"schedule name must match {NAME.pattern}, got {name!r}")
    check_cron(data.get("cron"))
    zone = data.get("timezone", "UTC")
    _zone(zone)
    missed = data.get("missed", "skip")
    if missed not in MISSED:
        raise InvalidInput(f"missed must be one of {list(MISSED)}, got {missed!r}")
    job = data.get("job")
    if not isinstance(job, dict) or "type" not in job:
        raise InvalidInput("job must be a job spec like {'type': 'clips.crawl', 'payload': {...}}")
    if "unique_key" in job or "delay" in job or "run_at" in job:
        raise InvalidInput("a scheduled job spec may not set unique_key, delay or run_at; the schedule sets them")
    return {"name": name, "cron": data["cron"], "timezone": zone, "missed": missed, "job": job,
            "paused": bool(data.get("paused", False)), "created_at": now,
            "next_run": next_after(data["cron"], zone, now), "last_run": None, "last_job_id": None,
            "fired": 0}


def due_tick(schedule: dict, now: float) -> tuple[float | None, float]:
    """(the tick to fire now or None, the next_run after it) for a schedule whose next_run has come."""
    latest = latest_at_or_before(schedule["cron"], schedule["timezone"], now)
    following = next_after(schedule["cron"], schedule["timezone"], now)
    on_time = now - latest <= GRACE_S
    if on_time or schedule["missed"] == "run_once":
        return latest, following
    return None, following
