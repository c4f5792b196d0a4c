"""Cron schedules, in plain Python: validation, the next fire times, and ``Schedules``, a queue's set.

A schedule is owned by its queue's actor and stored in the queue's database.
Each tick enqueues exactly one job: the schedule's ``next_run`` advances in
the same commit as the job it enqueues, and the job's ``unique_key`` is the
tick's identity (``schedule:<name>:<tick epoch>``), so a restart can neither
skip nor repeat a tick. Ticks missed while the cluster was down follow the
schedule's ``missed`` policy: ``skip`` (fire nothing for them; the next
regular tick fires) or ``run_once`` (fire one job for the latest missed tick).

``catchup_window`` (seconds): every missed tick no older than this is caught
up (fired late, oldest first; at most ``MAX_CATCHUP`` of them), as Temporal
does; older ones follow ``missed``. Without it, only the latest tick fires, if
it is at most ``GRACE_S`` late. ``overlap`` says what a tick does
while the schedule's previous job is unfinished: ``allow`` (default: fire
anyway), ``skip`` (fire nothing for it) or ``buffer_one`` (keep the latest such
tick and fire it as soon as the previous job is final; one at most).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

import logging
from typing import Callable

from .exceptions import InvalidInput, NotFound

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
MISSED = ("skip", "run_once")
OVERLAP = ("allow", "skip", "buffer_one")
#: A tick this late still counts as on time (the actor may be busy or restarting): the default catchup_window.
GRACE_S = 60.0
MAX_CATCHUP_WINDOW = 365 * 24 * 3600.0
#: The most missed ticks one catch-up fires (the latest ones).
MAX_CATCHUP = 100


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
    unknown = set(data) - {"name", "cron", "timezone", "job", "missed", "paused", "overlap", "catchup_window"}
    if unknown:
        raise InvalidInput(f"unknown schedule fields {sorted(unknown)}; allowed: name, cron, timezone, job, missed, "
                           "paused, overlap, catchup_window")
    name = data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(f"schedule name must match {NAME.pattern}, got {name!r}")
    check_cron(data.get("cron"))
    zone = data.get("timezone", "UTC")
    _zone(zone)
    missed = data.get("missed", "skip")
    if missed not in MISSED:
        raise InvalidInput(f"missed must be one of {list(MISSED)}, got {missed!r}")
    overlap = data.get("overlap", "allow")
    if overlap not in OVERLAP:
        raise InvalidInput(f"overlap must be one of {list(OVERLAP)}, got {overlap!r}", field="overlap")
    window = data.get("catchup_window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, (int, float))
                               or not 0 <= window <= MAX_CATCHUP_WINDOW):
        raise InvalidInput(f"catchup_window must be seconds within 0..{MAX_CATCHUP_WINDOW:.0f}, got {window!r}",
                           field="catchup_window")
    job = data.get("job")
    if not isinstance(job, dict) or "type" not in job:
        raise InvalidInput("job must be a job spec like {'type': 'clips.crawl', 'payload': {...}}")
    if "unique_key" in job or "delay" in job or "run_at" in job:
        raise InvalidInput("a scheduled job spec may not set unique_key, delay or run_at; the schedule sets them")
    return {"name": name, "cron": data["cron"], "timezone": zone, "missed": missed, "job": job,
            "overlap": overlap, "catchup_window": None if window is None else float(window), "buffered": None,
            "paused": bool(data.get("paused", False)), "created_at": now,
            "next_run": next_after(data["cron"], zone, now), "last_run": None, "last_job_id": None,
            "fired": 0}


def due_ticks(schedule: dict, now: float) -> tuple[list[float], float]:
    """(the ticks to fire now, oldest first; the next_run after them) for a schedule whose next_run has come.

    Every tick from ``next_run`` to ``now`` within ``catchup_window`` is fired; when none is, ``run_once``
    still fires the latest one.
    """
    window = schedule.get("catchup_window")
    if window is None:
        tick, following = due_tick(schedule, now)
        return ([] if tick is None else [tick]), following
    following = next_after(schedule["cron"], schedule["timezone"], now)
    latest = latest_at_or_before(schedule["cron"], schedule["timezone"], now)
    ticks, tick = [], latest
    # Walk back from the latest tick while it is inside the window and not before next_run.
    while tick >= schedule["next_run"] - 0.001 and now - tick <= window and len(ticks) < MAX_CATCHUP:
        ticks.append(tick)
        tick = latest_at_or_before(schedule["cron"], schedule["timezone"], tick - 0.002)
    if not ticks and schedule["missed"] == "run_once":
        ticks = [latest]
    return ticks[::-1], following


def due_tick(schedule: dict, now: float) -> tuple[float | None, float]:
    """(the tick to fire now or None, the next_run after it) for a schedule whose next_run has come."""
    latest = latest_at_or_before(schedule["cron"], schedule["timezone"], now)
    following = next_after(schedule["cron"], schedule["timezone"], now)
    on_time = now - latest <= GRACE_S
    if on_time or schedule["missed"] == "run_once":
        return latest, following
    return None, following


class Schedules:
    """The schedules of one queue, persisted through its store. Firing one enqueues through ``enqueue``
    (``enqueue(spec, now)`` returns the job or raises ``InvalidInput``), given by the queue."""

    def __init__(self, store, queue: str):
        self.store = store
        self.queue = queue
        self.all: dict[str, dict] = store.schedules()

    def put(self, data: dict, now: float, check_job: Callable[[dict], object]) -> dict:
        """Create or replace a schedule; ``check_job`` validates its job spec (raises InvalidInput)."""
        schedule = validate(data, now)
        check_job(schedule["job"])
        previous = self.all.get(schedule["name"])
        if previous:
            schedule.update(created_at=previous["created_at"], fired=previous["fired"],
                            last_run=previous["last_run"], last_job_id=previous["last_job_id"],
                            buffered=previous.get("buffered"))
        self.all[schedule["name"]] = schedule
        self.store.put_schedule(schedule["name"], schedule)
        return schedule

    def get(self, name: str) -> dict:
        try:
            return self.all[name]
        except KeyError:
            raise NotFound(f"no schedule {name!r} in queue {self.queue!r}; `dojo schedule list` shows them") from None

    def remove(self, name: str) -> None:
        self.get(name)
        del self.all[name]
        self.store.put_schedule(name, None)

    def pause(self, name: str, paused: bool, now: float) -> dict:
        schedule = self.get(name)
        schedule["paused"] = paused
        if not paused:
            schedule["next_run"] = next_after(schedule["cron"], schedule["timezone"], now)
        self.store.put_schedule(name, schedule)
        return schedule

    def run_now(self, name: str, now: float, enqueue) -> dict | None:
        return self._fire(self.get(name), now, f"manual:{int(now * 1000)}", enqueue)

    def fire_due(self, now: float, enqueue, busy: Callable[[str], bool]) -> list[dict]:
        """Fire every schedule whose tick has come (``busy(job_id)``: whether that job, the schedule's
        latest, is unfinished: its overlap policy then applies; ``None`` when it has none)."""
        fired = []
        for schedule in self.all.values():
            if schedule["paused"]:
                continue
            if schedule.get("buffered") is not None and not busy(schedule.get("last_job_id")):
                tick, schedule["buffered"] = schedule["buffered"], None  # the previous run is over: its turn
                fired += [job for job in [self._fire(schedule, now, str(int(tick)), enqueue)] if job is not None]
            if schedule["next_run"] > now:
                continue
            ticks, following = due_ticks(schedule, now)
            if not ticks:
                log.info("schedule %s missed its tick while down; policy skip", schedule["name"],
                         extra={"queue": self.queue})
            for tick in ticks:
                overlap = schedule.get("overlap", "allow")
                if overlap != "allow" and busy(schedule.get("last_job_id")):
                    if overlap == "buffer_one":
                        schedule["buffered"] = tick
                    log.info("schedule %s tick %d: its previous job is unfinished; overlap %s", schedule["name"],
                             tick, overlap, extra={"queue": self.queue})
                    continue
                fired += [job for job in [self._fire(schedule, now, str(int(tick)), enqueue)] if job is not None]
            schedule["next_run"] = following
            self.store.put_schedule(schedule["name"], schedule)
        return fired

    def _fire(self, schedule: dict, now: float, tick: str, enqueue) -> dict | None:
        spec = {**schedule["job"], "unique_key": f"schedule:{schedule['name']}:{tick}"}
        try:
            job = enqueue(spec, now)
        except InvalidInput as exc:
            schedule["last_error"] = exc.message
            log.warning("schedule %s could not enqueue: %s", schedule["name"], exc.message)
            self.store.put_schedule(schedule["name"], schedule)
            return None
        schedule.update(last_run=now, last_job_id=job["id"], fired=schedule["fired"] + 1, last_error=None)
        self.store.put_schedule(schedule["name"], schedule)
        return job
