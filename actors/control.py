"""Queue control, the part of ``JobQueue`` that operators drive: pause, purge, expiry, dedup, debounce, throttle.

Plain Python like the rest of the queue's rules (every method takes ``now``).
The decisions live in their own small components (``pauses``, ``expiry``,
``admission``); this mixin is where they meet the queue's jobs and indexes, so
``queue.py`` only calls in at four places: enqueue (``_dedup_holder``,
``_admit``), lease (``_lane_paused``, ``_throttle_holds``) and the tick
(``_control_due``).
"""

from __future__ import annotations

import heapq
import logging

from .ids import LANE_SEP
from .pauses import check_types

log = logging.getLogger(__name__)

#: Jobs a purge removes per call of ``purge`` (the actor calls it again until none are left).
PURGE_CHUNK = 5000
#: The stream of queue-level events (pause, resume, purge).
QUEUE_STREAM = "queue:"
#: Jobs waiting for a start, which a purge removes (a running or waiting-for-children job is not purged).
PURGEABLE = ("queued", "scheduled", "retrying")


class QueueControl:
    """Mixed into ``JobQueue``; uses its ``jobs``, ``store``, ``pauses``, ``expiry``, ``dedup``, ``throttle``."""

    # -- pause / resume / purge ----------------------------------------------------------
    def pause(self, types: list[str] | None, now: float) -> dict:
        """Pause the queue (``types`` None) or some job types: nothing of theirs starts until resumed."""
        self.pauses.pause(check_types(types))
        return self._pauses_changed("paused", types, now)

    def resume(self, types: list[str] | None, now: float) -> dict:
        self.pauses.resume(check_types(types))
        return self._pauses_changed("resumed", types, now)

    def _pauses_changed(self, kind: str, types, now: float) -> dict:
        self.store.set_meta("paused", self.pauses.to_dict())
        self.event_log.emit(QUEUE_STREAM + self.name, kind, {"queue": self.name, "types": types}, now)
        return self.pause_state()

    def pause_state(self) -> dict:
        return {"queue": self.name, "paused": self.pauses.queue, "paused_types": sorted(self.pauses.types)}

    def purgeable(self, types: list[str] | None) -> list[str]:
        """Ids of the jobs a purge removes: those waiting for a start (queued, scheduled, retrying)."""
        wanted = None if types is None else set(check_types(types))
        return [j["id"] for j in self.jobs.values()
                if j["status"] in PURGEABLE and (wanted is None or j["type"] in wanted)]

    def purge(self, job_ids: list[str], now: float) -> int:
        """Remove these waiting jobs with their events (a child counts as cancelled in its parent's flow)."""
        purged = 0
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is None or job["status"] not in PURGEABLE:
                continue
            del self.jobs[job_id]
            self._ver.pop(job_id, None)
            self.event_log.end("job:" + job_id)
            key = job.get("unique_key")
            if key and self._unique.get(key) == job_id:
                del self._unique[key]
            if job.get("parent_id"):
                self._child_final(job, "cancelled", now)
            self.counts[job["status"]] -= 1
            self.store.delete_job(job_id)
            self.forgotten.append(job)
            purged += 1
        return purged

    def purged(self, count: int, types, now: float) -> None:
        self.event_log.emit(QUEUE_STREAM + self.name, "purged", {"queue": self.name, "types": types, "count": count}, now)

    # -- enqueue: dedup and debounce -----------------------------------------------------
    def _dedup_holder(self, record: dict, now: float) -> dict | None:
        """The job that holds the record's dedup window now (enqueueing it again returns that job)."""
        if not record.get("dedup"):
            return None
        holder = self.dedup.holder(record["dedup"]["key"], now)
        if holder is None:
            return None
        return self.jobs.get(holder) or self.store.get_job(holder)  # None once deleted: the key is free

    def _admit(self, record: dict, now: float) -> None:
        """A new job was added: open its dedup window, supersede its debounce predecessor, watch its expiry."""
        self.expiry.watch(record)
        if record.get("dedup"):
            rule = record["dedup"]
            self.store.put_control("dedup", rule["key"], self.dedup.hold(rule["key"], record["id"], rule["ttl"], now))
        if record.get("debounce"):
            key = record["debounce"]["key"]
            previous = self.jobs.get(self._debounced.get(key, ""))
            if previous is not None and previous["status"] == "scheduled" and previous.get("started_at") is None:
                previous.update(cancel_requested=True, finished_at=now, error={
                    "type": "Debounced", "message": f"superseded by {record['id']} (debounce key {key!r})",
                    "traceback": None})
                self._finish(previous, "cancelled", now, debounced_by=record["id"])
            self._debounced[key] = record["id"]

    # -- lease: pauses and throttle -------------------------------------------------------
    def _lane_paused(self, lane: str) -> bool:
        return self.pauses.any and self.pauses.paused(lane.partition(LANE_SEP)[0])

    def _throttle_holds(self, job: dict, now: float) -> bool:
        """True (and the job set aside until it may start) when its throttle is full; else count its start."""
        rule = job["throttle"]
        wait = self.throttle.wait(rule, now)
        if wait > now:
            heapq.heappush(self._throttled, (wait, job["id"], self._ver.get(job["id"])))
            return True
        self.store.put_control("throttle", rule["key"], self.throttle.started(rule, now))
        return False

    # -- fair shares: running jobs per group (actors/groups.py) ---------------------------------
    def _group_count(self, job: dict, change: int) -> None:
        group = job.get("group")
        if not group:
            return
        key = group["key"]
        running = self._group_running[key] = self._group_running[key] + change
        if change > 0 and group.get("limit"):
            self._group_limit[key] = group["limit"]
        if running <= 0:
            del self._group_running[key]
            self._group_limit.pop(key, None)

    def _group_full(self, key: str) -> bool:
        limit = self._group_limit.get(key)
        return limit is not None and self._group_running.get(key, 0) >= limit

    # -- the tick ------------------------------------------------------------------------
    def _control_due(self, now: float) -> None:
        """Expire unstarted jobs past their deadline, free throttled jobs, forget ended dedup windows."""
        for job in self.expiry.due(self.jobs, now):
            log.info("job %s expired: not started by %s", job["id"], job["expires_at"],
                     extra={"job_id": job["id"], "queue": self.name})
            job["finished_at"] = now
            self._finish(job, "expired", now, expires_at=job["expires_at"])
        while self._throttled and self._throttled[0][0] <= now:
            _, job_id, ver = heapq.heappop(self._throttled)
            job = self.jobs.get(job_id)
            if job is not None and job["status"] == "queued" and self._ver.get(job_id) == ver:
                self._push_ready(job)
        for key in self.dedup.ended(now):
            self.store.put_control("dedup", key, None)
