"""The life cycle of a queue's jobs, in plain Python (no Ray): the actor's state machine.

``JobQueue`` owns the unfinished jobs of one queue and moves them through their states: enqueue
(unique keys, delays, priorities with aging), leases with fencing tokens, heartbeats, progress,
completion and failure (with backoff), durable steps, sleeps and waits, cancellation, timeouts, lost
attempts, and a flow's parent waiting for its children. Every method takes ``now`` so tests control
time. Methods stage their writes in the store; the caller commits before it acknowledges anything, and
only then publishes ``take_events()`` to subscribers.

Job life cycle::

    scheduled ──due──▶ queued ──lease──▶ running ──▶ succeeded
                         ▲                  │
                         └──due── retrying ◀┤ (failed / lease lost / timed out,
                                            │  attempts left)
                                            ├──▶ failed (no attempts left)
    any unfinished ──cancel──▶ cancelled    │

Flows: a running job may enqueue children (``parent_id``). When its own attempt succeeds while
children are unfinished it is ``waiting``; when the last child is final it runs its type's
``on_children_done`` callback (as one more leased attempt, phase ``callback``) or, without one,
succeeds. Cancelling a parent cancels its unfinished children.

What is not the life cycle lives in components this class holds, each plain Python with its own tests:
the job types it accepts (``types``, injected), spec checks (``specs.py``), ids and lanes (``ids.py``),
the event log (``events.py``), a flow's run report (``flows.py``), schedules (``schedules.py``), rate
buckets (``limits/``), triggers (``triggers.py``), callbacks (``callbacks.py``), and queue control
(``control.py`` with ``pauses.py``, ``admission.py``, ``expiry.py``, ``groups.py``).

Why this module is over 500 lines: the life cycle is one state machine over shared indexes (ready
lanes, delayed heap, leases by token, lease expiries, deadlines, unique and concurrency keys); each
transition must leave a job in exactly the index its new status calls for, so the transitions stay
together where that invariant can be read in one place.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import random
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from . import admission, callbacks, durable, flows, specs
from . import schedules as cron
from .control import QueueControl
from .events import EventLog
from .exceptions import InvalidInput, InvalidTransition, JobNotFound, StaleLease
from .expiry import Expiry
from .groups import Lane
from .ids import LANE_SEP, QUEUE_NAME, STATUSES, JobIds, lane_of, split_lane
from .jobs import Backoff, JobType
from .limits.buckets import Buckets
from .pauses import Pauses
from .specs import check_channel, check_size
from .store import FINAL, Store
from .triggers import Triggers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int = 256 * 1024
    max_result_bytes: int = 256 * 1024
    lease_ttl: float = 30.0
    max_batch: int = 1000
    #: Seconds of waiting worth one priority point (0: strict priority). See ``JobQueue.rank``.
    priority_aging: float = 0.0


#: After a reload, a running lease expires this many TTLs later unless its worker heartbeats.
RELOAD_TTLS = 2


class JobQueue(QueueControl):
    """All the state of one queue. Single-threaded: the actor serializes calls."""

    def __init__(self, name: str, store: Store, limits: Limits = Limits(), rng: random.Random | None = None,
                 now: float | None = None, *, types: Mapping[str, JobType]):
        if not QUEUE_NAME.match(name):
            raise InvalidInput(f"queue name {name!r} must match {QUEUE_NAME.pattern}")
        self.name = name
        self.store = store
        #: The job types this queue accepts, by name: the actor's registry (its job modules), a test's own.
        self.types = types
        self.limits = limits
        self.rng = rng or random.Random()
        self.ids = JobIds(name)
        self.jobs: dict[str, dict] = {}  # unfinished jobs
        self._ready: dict[str, Lane] = defaultdict(Lane)  # lane -> (rank, ready_at, id, ver) by group, in turns
        self._delayed: list = []  # heap of (run_at, id, ver)
        self._ver: dict[str, int] = {}
        self._unique: dict[str, str] = {}
        self._key_running: dict[str, int] = defaultdict(int)
        self._blocked: dict[str, deque] = defaultdict(deque)
        self._running: dict[int, str] = {}  # token -> job id
        self._runner_tokens: dict[str, set[int]] = defaultdict(set)
        self._expiry: list = []  # heap of (expires, token)
        self._deadlines: list = []  # heap of (deadline, token)
        self._deliveries: list[dict] = []  # callback deliveries staged with the status changes that call for them
        # Fencing tokens are <epoch><counter>: a new epoch per start, committed before any lease, so a
        # lease handed out but never committed can't share its token with a later one.
        self.epoch = store.get_meta("epoch", 0) + 1
        store.set_meta("epoch", self.epoch)
        store.commit()
        self.next_token = self.epoch << 32 | 1
        self.event_log = EventLog(store)  # numbers and stages every event (actors/events.py)
        self.schedules = cron.Schedules(store, name)  # cron schedules (actors/schedules.py)
        # Jobs per status, kept as they change (stats and metrics must not scan the table).
        self.counts: dict[str, int] = defaultdict(int, store.count_by_status())
        self.buckets = Buckets(store)  # rate-limit buckets (actors/limits/)
        self._loaded_at = now  # when the state was reloaded (None: keep the stored lease expiries)
        self._settle: list[str] = []  # waiting parents found complete at reload; finished by promote_due
        self._waiters: dict[str, set[str]] = defaultdict(set)  # channel -> sleeping jobs waiting for a message on it
        self.triggers = Triggers(store)
        self.forgotten: list[dict] = []  # deleted jobs whose stored objects the actor deletes once committed
        # Queue control (issue 16): each rule is its own component, its state in the store.
        self.pauses = Pauses(store.get_meta("paused"))
        self.expiry = Expiry()
        self.dedup = admission.Dedup(store.controls("dedup"))
        self.throttle = admission.Throttle(store.controls("throttle"))
        self._debounced: dict[str, str] = {}  # debounce key -> the job waiting out its quiet period
        self._throttled: list = []  # heap of (may start at, id, ver): queued jobs held back by their throttle
        self._group_running: dict[str, int] = defaultdict(int)  # group key -> its running jobs
        self._group_limit: dict[str, int] = {}  # group key -> the cap of its latest job that has one
        self._load()

    # -- loading -----------------------------------------------------------
    def _load(self) -> None:
        """Rebuild the in-memory indexes from the store (after a restart)."""
        for record in self.store.active_jobs():
            self.jobs[record["id"]] = record
            if record.get("unique_key"):
                self._unique[record["unique_key"]] = record["id"]
            status = record["status"]
            self.expiry.watch(record)
            if record.get("debounce") and status == "scheduled":
                self._debounced[record["debounce"]["key"]] = record["id"]
            if status == "queued":
                self._push_ready(record)
            elif status in ("scheduled", "retrying", "sleeping"):
                self._push_delayed(record)
                if status == "sleeping" and (record.get("wake") or {}).get("channel"):
                    self._waiters[record["wake"]["channel"]].add(record["id"])
            elif status == "running":
                lease = record["lease"]
                if self._loaded_at is not None:
                    # Heartbeats extend leases in memory only (persisting them would cost a commit per beat),
                    # so a stored expiry says nothing about a worker that is alive now: the lease's clock
                    # restarts at the reload. Two TTLs, because a worker's first calls after the restart
                    # can be held up while Ray reconnects it; a worker silent that long is lost.
                    lease["expires"] = max(lease["expires"], self._loaded_at + RELOAD_TTLS * lease["ttl"])
                self._running[lease["token"]] = record["id"]
                self._runner_tokens[lease["runner"]].add(lease["token"])
                heapq.heappush(self._expiry, (lease["expires"], lease["token"]))
                if lease.get("deadline"):
                    heapq.heappush(self._deadlines, (lease["deadline"], lease["token"]))
                if record.get("concurrency_key"):
                    self._key_running[record["concurrency_key"]] += 1
                self._group_count(record, +1)
        for record in self.jobs.values():
            if record.get("children") is not None:
                # The table is the truth: a parent row saved before a crash may lag its children's rows.
                record["children"] = flows.recount(self.store.children_of(record["id"]))
                if record["status"] == "waiting" and record["children"]["final"] >= record["children"]["total"]:
                    self._settle.append(record["id"])
        if self.jobs:
            log.info("queue %s reloaded %d unfinished jobs (%d running)", self.name, len(self.jobs),
                     len(self._running), extra={"queue": self.name})

    # -- events ------------------------------------------------------------
    def _job_event(self, job: dict, kind: str, now: float, **data) -> dict:
        return self.event_log.emit("job:" + job["id"], kind, {"job_id": job["id"], "type": job["type"], **data}, now)

    def _status(self, job: dict, status: str, now: float, **data) -> None:
        old = job.get("status")
        if old:
            self.counts[old] -= 1
        self.counts[status] += 1
        job["status"] = status
        job["updated_at"] = now
        event = self._job_event(job, "status", now, status=status, attempt=job["attempts"], **data)
        self._save(job)
        delivery = callbacks.delivery_for(job, event)
        if delivery is not None:  # committed with the status change; sent once that commit is done
            self.store.put_delivery(delivery)
            self._deliveries.append(delivery)

    def take_events(self) -> list[dict]:
        """Events staged since the last call; publish them only after the commit."""
        return self.event_log.take()

    def take_deliveries(self) -> list[dict]:
        """Callback deliveries staged since the last call; send them only after the commit."""
        deliveries, self._deliveries = self._deliveries, []
        return deliveries

    def publish(self, channel: str, message: Any, now: float) -> dict:
        """Append a message to a channel's stream (the pub/sub of the seed's Durable Object).

        Jobs sleeping in ``ctx.wait_for`` on this channel whose ``match`` the message has wake up with it.
        """
        check_channel(channel)
        check_size(message, self.limits.max_payload_bytes, "message")
        event = self.event_log.emit("channel:" + channel, "message", {"channel": channel, "message": message}, now)
        for job_id in list(self._waiters.get(channel, ())):
            job = self.jobs.get(job_id)
            if job is not None and job["status"] == "sleeping" and durable.matches(message, job["wake"]["match"]):
                self._wake_waiter(job, {"message": message, "gseq": event["gseq"]}, now)
        for trigger, spec in self.triggers.firing(channel, message, event["gseq"]):
            try:
                [(job, _)] = self.enqueue_many([spec], now)
            except InvalidInput as exc:  # the message stands; the trigger says why it made no job
                log.warning("trigger %s could not enqueue: %s", trigger["name"], exc.message)
                self.triggers.fired(trigger, None, exc.message)
            else:
                self.triggers.fired(trigger, job["id"], None)
        return event

    # -- durable steps, sleeps and waits (actors/durable.py) ------------------
    def record_step(self, token: int, job_id: str, index: int, name: str, result: Any, now: float) -> None:
        """Commit one step's result for the attempt holding ``token`` (a repeated report is accepted once)."""
        job = self._lease_of(token, job_id)
        steps = job.setdefault("steps", [])
        if isinstance(index, bool) or not isinstance(index, int) or not isinstance(name, str):
            raise InvalidInput("a step is reported with its position (int) and name (str)")
        if index < len(steps) and steps[index]["name"] == name:
            return
        if index != len(steps):
            raise InvalidInput(f"step {name!r} reported at position {index}, but the job has {len(steps)} steps")
        if len(steps) >= durable.MAX_STEPS:
            raise InvalidInput(f"a job may record at most {durable.MAX_STEPS} steps")
        check_size(result, self.limits.max_result_bytes, f"the result of step {name!r}")
        steps.append({"name": name, "result": result, "attempt": job["attempts"], "at": now})
        job["updated_at"] = now
        self._job_event(job, "step", now, attempt=job["attempts"], name=name, index=index)
        self._save(job)

    def suspend(self, token: int, job_id: str, until: float, wait: dict | None, now: float,
                duration: float | None = None, step: dict | None = None) -> dict:
        """End an attempt without failing or spending it: the job sleeps until ``until``, or until a message
        on ``wait["channel"]`` has ``wait["match"]`` (one published since the job was created counts).

        ``step``: a sleep's own step ({index, name, result}), recorded here rather than in a call of its own."""
        job = self._lease_of(token, job_id)
        if job["cancel_requested"]:
            return self._end_cancelled(job, token, now)
        if step is not None:
            self.record_step(token, job_id, step["index"], step["name"], step["result"], now)
        if wait is not None:
            check_channel(wait.get("channel"))
            if not isinstance(wait.get("match"), dict) or wait.get("index") != len(job.get("steps") or []):
                raise InvalidInput("a wait names its channel, a match object and its step position")
        self._record(job, token, "suspended", now, None, duration)
        self._release_slot(job, token)
        job["lease"] = None
        job["attempts"] -= 1  # a sleep spends no attempt
        job["run_at"] = float(until)
        job["wake"] = {"at": job["run_at"], **({"channel": wait["channel"], "match": wait["match"],
                                                "step": wait["step"]} if wait else {})}
        self._status(job, "sleeping", now, until=job["run_at"], **({"channel": wait["channel"]} if wait else {}))
        if wait is not None:
            found = self._published_since(job, wait)
            if found is not None:
                self._wake_waiter(job, found, now)
                return job
            self._waiters[wait["channel"]].add(job_id)
        self._push_delayed(job)
        return job

    def _published_since(self, job: dict, wait: dict) -> dict | None:
        """The first message on the wait's channel since the job was created that matches, if any."""
        stream = "channel:" + wait["channel"]
        last = self.store.last_seq(stream)
        for event in self.store.events_after(stream, max(0, last - durable.WAIT_LOOKBACK), durable.WAIT_LOOKBACK):
            message = event["data"].get("message")
            if event["at"] >= job["created_at"] and durable.matches(message, wait["match"]):
                return {"message": message, "gseq": event["gseq"]}
        return None

    def _wake_waiter(self, job: dict, result: dict, now: float) -> None:
        """A wait ends (a message, or its timeout): its step records how, and the job runs again."""
        wake = job["wake"]
        self._waiters[wake["channel"]].discard(job["id"])
        job.setdefault("steps", []).append({"name": wake["step"], "result": result, "attempt": job["attempts"],
                                            "at": now})
        job["wake"] = None
        job["run_at"] = now
        self._status(job, "queued", now, woken="timeout" if result.get("timeout") else "message")
        self._push_ready(job, order=job["created_at"])

    # -- enqueue -----------------------------------------------------------
    def validate(self, spec: Any, now: float) -> dict:
        """Turn an enqueue spec into a new job record, or raise InvalidInput; changes nothing (``specs.py``)."""
        return specs.new_job(spec, now, self.name, self.types, self.limits.max_payload_bytes)

    def enqueue_many(self, specs: list, now: float) -> list[tuple[dict, bool]]:
        """Validate every spec, then add them all; returns (job, created) pairs.

        A spec whose unique_key matches an unfinished job returns that job
        (created=False) instead of adding a second one.
        """
        if not isinstance(specs, list) or not specs:
            raise InvalidInput("send one job spec or a non-empty list of them")
        if len(specs) > self.limits.max_batch:
            raise InvalidInput(f"at most {self.limits.max_batch} jobs per call, got {len(specs)}; split the batch")
        records = []
        for index, spec in enumerate(specs):
            try:
                records.append(self.validate(spec, now))
            except InvalidInput as exc:
                if len(specs) > 1:
                    exc.message = f"job {index}: {exc.message}"
                    exc.context["index"] = index
                raise
        parents = {r["parent_id"] for r in records if r["parent_id"]}
        for parent_id in parents:
            parent = self.jobs.get(parent_id)
            if parent is None or parent["status"] != "running":
                raise InvalidInput(f"parent job {parent_id!r} is not running in queue {self.name!r}; "
                                   "children are enqueued by a running job (ctx.enqueue_many)")
        finished = {parent_id: self._finished_children(parent_id) for parent_id in parents}
        out = []
        for record in records:
            key = record["unique_key"]
            if key and key in self._unique:
                out.append((self.jobs[self._unique[key]], False))
                continue
            if key and record["parent_id"] and key in finished[record["parent_id"]]:
                out.append((finished[record["parent_id"]][key], False))  # a retried parent's earlier child
                continue
            held = self._dedup_holder(record, now)
            if held is not None:
                out.append((held, False))
                continue
            record["id"] = self.ids.next(now)
            self.jobs[record["id"]] = record
            if record["parent_id"]:
                parent = self.jobs[record["parent_id"]]
                self._children_of(parent)["total"] += 1
                self._save(parent)  # the count commits with the child's row, never after it
            self.event_log.begin("job:" + record["id"])
            if key:
                self._unique[key] = record["id"]
            if record["run_at"] > now:
                self._status(record, "scheduled", now, run_at=record["run_at"])
                self._push_delayed(record)
            else:
                self._status(record, "queued", now)
                self._push_ready(record)
            self._admit(record, now)
            out.append((record, True))
        return out

    # -- indexes -----------------------------------------------------------
    def _bump(self, job: dict) -> int:
        ver = self._ver.get(job["id"], 0) + 1
        self._ver[job["id"]] = ver
        return ver

    def rank(self, priority: int, order: float) -> float:
        """Where a ready job stands, lowest first, in its lane and across the queue's lanes.

        With aging (``Limits.priority_aging`` seconds per point) a priority point is worth that much
        waiting: a job ranks as if it had become due ``priority × aging`` seconds earlier, so a low
        priority is overtaken for a bounded time only and never starves. The key does not change while
        a job waits (every waiting job ages alike), so it lives in the heap as is. Without aging,
        priority is strict and age only breaks ties.
        """
        aging = self.limits.priority_aging
        return order - priority * aging if aging else -priority

    def _push_ready(self, job: dict, order: float | None = None) -> None:
        """Ready to lease: by rank (priority, aged), then ``order`` (default: when it became due)."""
        order = job["run_at"] if order is None else order
        self._ready[lane_of(job)].push((self.rank(job["priority"], order), order, job["id"], self._bump(job)),
                                       (job.get("group") or {}).get("key"))

    def _push_delayed(self, job: dict) -> None:
        heapq.heappush(self._delayed, (job["run_at"], job["id"], self._bump(job)))

    def _save(self, job: dict) -> None:
        self.store.put_job(job)

    def lanes_of(self, types: Iterable[str]) -> list[str]:
        """Every lane (type and resource shape) of these job types."""
        wanted = set(types)
        return [lane for lane in self._ready if split_lane(lane)[0] in wanted]

    def ready_counts(self) -> dict[str, int]:
        """Lanes with jobs ready to lease, the best-ranked first (counts are an upper bound: heaps hold
        stale entries)."""
        lanes = [(self.lane_head(name), name, len(lane)) for name, lane in self._ready.items()
                 if lane and not self._lane_paused(name)]
        return {name: size for _, name, size in sorted(lanes, key=lambda item: item[0] or (math.inf,))}

    def lane_head(self, lane: str) -> tuple | None:
        """The (rank, order) of the job the lane would start next; None when it can start none now."""
        heap = self._ready.get(lane)
        if not heap or self._lane_paused(lane):
            return None
        entry = heap.peek(self._group_full)
        return entry[:2] if entry is not None else None

    # -- leasing -----------------------------------------------------------
    def lease(self, runner: str, types: Iterable[str] | None, n: int, now: float, *, ttl: float | None = None,
              node: str | None = None, pid: int | None = None) -> list[dict]:
        """Start up to ``n`` ready jobs for a runner, the best-ranked first across its lanes (see ``rank``)."""
        ttl = ttl or self.limits.lease_ttl
        self.promote_due(now)
        leases = []
        names = list(self._ready) if types is None else [
            lane for name in types for lane in ([name] if LANE_SEP in name else self.lanes_of([name]))]
        # A paused type keeps its jobs queued; leases already held run on.
        lanes = [self._ready[name] for name in dict.fromkeys(names)
                 if self._ready.get(name) and not self._lane_paused(name)]
        while lanes and len(leases) < n:
            # The best-ranked job of all the lanes asked for, each lane offering its next group in turn.
            best = None
            for heap in lanes:
                entry = heap.peek(self._group_full)
                if entry is not None and (best is None or entry[:2] < best[0][:2]):
                    best = (entry, heap)
            if best is None:
                break  # every group with ready jobs is at its cap
            entry, heap = best
            heap.pop(self._group_full)
            if not heap:
                lanes.remove(heap)
            _, _, job_id, ver = entry
            job = self.jobs.get(job_id)
            if job is None or job["status"] != "queued" or self._ver.get(job_id) != ver:
                continue
            key = job["concurrency_key"]
            if key and self._key_running[key] >= job["concurrency_limit"]:
                self._blocked[key].append(job_id)
                continue
            if job.get("throttle") and self._throttle_holds(job, now):
                continue
            leases.append(self._start(job, runner, ttl, now, node, pid))
        return leases

    def _start(self, job: dict, runner: str, ttl: float, now: float, node, pid) -> dict:
        token = self.next_token
        self.next_token += 1
        job["attempts"] += 1
        deadline = now + job["timeout"] if job["timeout"] else None
        job["lease"] = {"token": token, "runner": runner, "expires": now + ttl, "ttl": ttl, "deadline": deadline,
                        "node": node, "pid": pid, "started_at": now}
        job["started_at"] = job["started_at"] or now
        if job["concurrency_key"]:
            self._key_running[job["concurrency_key"]] += 1
        self._group_count(job, +1)
        self._running[token] = job["id"]
        self._runner_tokens[runner].add(token)
        heapq.heappush(self._expiry, (now + ttl, token))
        if deadline:
            heapq.heappush(self._deadlines, (deadline, token))
        self._status(job, "running", now, token=token, runner=runner)
        return {"token": token, "job_id": job["id"], "type": job["type"], "payload": job["payload"],
                "attempt": job["attempts"], "max_attempts": job["max_attempts"], "timeout": job["timeout"],
                "queue": self.name, "ttl": ttl, "phase": job.get("phase", "perform"),
                "trace": job.get("trace"), "ready_at": job["run_at"], "started_at": now,
                "steps": job.get("steps") or []}

    def _lease_of(self, token: int, job_id: str | None = None) -> dict:
        current = self._running.get(token)
        if current is None or (job_id is not None and current != job_id):
            raise StaleLease(f"lease {token} is not current (expired, finished or superseded by a newer attempt); "
                             "stop working on this job", token=token)
        return self.jobs[current]

    def heartbeat(self, tokens: Iterable[int], now: float, node: str | None = None,
                  pid: int | None = None) -> dict[int, str]:
        """Extend leases; answers per token 'ok', 'cancel' (stop now) or 'stale' (lease gone)."""
        out = {}
        for token in tokens:
            job_id = self._running.get(token)
            if job_id is None:
                out[token] = "stale"
                continue
            job = self.jobs[job_id]
            lease = job["lease"]
            lease["expires"] = now + lease["ttl"]
            if node:
                lease["node"], lease["pid"] = node, pid
            heapq.heappush(self._expiry, (lease["expires"], token))
            out[token] = "cancel" if job["cancel_requested"] else "ok"
        return out

    def progress(self, token: int, report: dict, now: float, job_id: str | None = None) -> None:
        """Record an attempt's progress (a worker's reports come in order, on its attempt's stream)."""
        job = self._lease_of(token, job_id)
        if not isinstance(report, dict):
            raise InvalidInput("progress must be an object like {'fraction': 0.5, 'stage': 'encode'}")
        fraction = report.get("fraction")
        if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                     or not 0 <= fraction <= 1):
            raise InvalidInput(f"progress fraction must be a number within 0..1, got {fraction!r}")
        check_size(report, 16 * 1024, "progress")
        job["progress"] = report
        job["lease"]["expires"] = now + job["lease"]["ttl"]
        heapq.heappush(self._expiry, (job["lease"]["expires"], token))
        job["updated_at"] = now
        self._job_event(job, "progress", now, attempt=job["attempts"], **report)
        self._save(job)

    def log_lines(self, token: int, lines: list[str], now: float) -> None:
        job = self._lease_of(token)
        self._job_event(job, "log", now, attempt=job["attempts"], lines=[str(x)[:4000] for x in lines[:200]])

    # -- ending attempts ---------------------------------------------------
    def complete(self, token: int, result: Any, now: float, job_id: str | None = None,
                 result_key: str | None = None, duration: float | None = None) -> dict:
        """Record success. A repeated report of the same finished attempt is accepted once, silently."""
        if token not in self._running and job_id and self._already(job_id, token, "succeeded"):
            return self.get(job_id)
        job = self._lease_of(token, job_id)
        try:
            check_size(result, self.limits.max_result_bytes, "result")
        except InvalidInput as exc:
            return self._end(job, token, "failed", now, error={"type": type(exc).__name__, "message": exc.message,
                                                                "traceback": None}, retry=False)
        job["result"], job["result_key"] = result, result_key
        return self._end(job, token, "succeeded", now, duration=duration)

    def fail(self, token: int, error: dict | str, now: float, job_id: str | None = None, retry: bool = True,
             duration: float | None = None) -> dict:
        if token not in self._running and job_id and self._already(job_id, token, "failed"):
            return self.get(job_id)
        job = self._lease_of(token, job_id)
        if isinstance(error, str):
            error = {"type": "Error", "message": error, "traceback": None}
        return self._end(job, token, "failed", now, error=error, retry=retry, duration=duration)

    def _already(self, job_id: str, token: int, outcome: str) -> bool:
        record = self.jobs.get(job_id) or self.store.get_job(job_id)
        return bool(record) and any(h["token"] == token and h["outcome"] == outcome for h in record["history"])

    def _end(self, job: dict, token: int, outcome: str, now: float, *, error: dict | None = None,
             retry: bool = True, duration: float | None = None) -> dict:
        self._record(job, token, outcome, now, error, duration)
        self._release_slot(job, token)
        job["lease"] = None
        if error is not None:
            job["error"] = error
        if outcome == "succeeded" and job.get("phase") == "callback":
            job["finished_at"] = now
            self._finish(job, "succeeded", now)
        elif outcome == "succeeded":
            children = job.get("children")
            if children and children["final"] < children["total"]:
                self._status(job, "waiting", now, children=children["total"] - children["final"])
            else:
                self._children_done(job, now)
        elif outcome == "cancelled":
            job["finished_at"] = now
            self._finish(job, "cancelled", now)
        elif retry and job["attempts"] < job["max_attempts"] and not job["cancel_requested"]:
            delay = Backoff(**job["backoff"]).delay_for(job["attempts"], self.rng)
            job["run_at"] = now + delay
            self._status(job, "retrying", now, error=error and error.get("message"), run_at=job["run_at"],
                         outcome=outcome)
            self._push_delayed(job)
        else:
            job["finished_at"] = now
            self._finish(job, "cancelled" if job["cancel_requested"] else "failed", now,
                         error=error and error.get("message"))
        return job

    @staticmethod
    def _record(job: dict, token: int, outcome: str, now: float, error: dict | None,
                duration: float | None = None) -> None:
        lease = job["lease"]
        started = lease["started_at"]
        job["history"].append({
            "attempt": job["attempts"], "token": token, "runner": lease["runner"], "node": lease.get("node"),
            "pid": lease.get("pid"), "started_at": started, "ended_at": now,
            "duration": round(duration if duration is not None else now - started, 6), "outcome": outcome,
            "error": error,
        })

    def _release_slot(self, job: dict, token: int) -> None:
        self._running.pop(token, None)
        runner = job["lease"]["runner"]
        tokens = self._runner_tokens.get(runner)
        if tokens is not None:
            tokens.discard(token)
            if not tokens:
                del self._runner_tokens[runner]
        self._group_count(job, -1)
        key = job["concurrency_key"]
        if key:
            self._key_running[key] -= 1
            blocked = self._blocked.get(key)
            while blocked:
                waiting = self.jobs.get(blocked.popleft())
                if waiting and waiting["status"] == "queued":
                    self._push_ready(waiting)
                    break

    def _finished_children(self, parent_id: str) -> dict[str, dict]:
        parent = self.jobs[parent_id]
        if parent["attempts"] <= 1 or not parent.get("children"):
            return {}
        return flows.finished_by_key(self.store.children_of(parent_id))

    def _children_of(self, parent: dict) -> dict:
        if not parent.get("children"):
            parent["children"] = flows.new_report()
        return parent["children"]

    def _children_done(self, job: dict, now: float) -> None:
        """The job's own attempt and all its children are done: run its callback, or succeed."""
        job_type = self.types.get(job["type"])
        if job.get("children") and job_type is not None and job_type.on_children_done is not None:
            job["phase"] = "callback"
            job["run_at"] = now
            self._status(job, "queued", now, phase="callback")
            self._push_ready(job)
            return
        job["finished_at"] = now
        self._finish(job, "succeeded", now)

    def _child_final(self, child: dict, status: str, now: float) -> None:
        parent = self.jobs.get(child["parent_id"])
        if parent is None:
            return
        children = self._children_of(parent)
        flows.count_child(children, child, status)
        parent["progress"] = flows.progress_of(children)
        self._job_event(parent, "progress", now, attempt=parent["attempts"], **parent["progress"])
        self._save(parent)
        if parent["status"] == "waiting" and children["final"] >= children["total"]:
            self._children_done(parent, now)

    def _finish(self, job: dict, status: str, now: float, **data) -> None:
        if job.get("parent_id") and status in FINAL:
            self._child_final(job, status, now)
        self._status(job, status, now, **data)
        self.jobs.pop(job["id"], None)
        self._ver.pop(job["id"], None)
        self.event_log.end("job:" + job["id"])
        key = job["unique_key"]
        if key and self._unique.get(key) == job["id"]:
            del self._unique[key]
        if job["concurrency_key"]:
            # A queued job blocked on this key may be waiting for any slot.
            blocked = self._blocked.get(job["concurrency_key"])
            if blocked is not None and not blocked:
                del self._blocked[job["concurrency_key"]]

    def release(self, tokens: Iterable[int], now: float) -> None:
        """Give back leases a runner never started: the attempt does not count."""
        for token in tokens:
            job_id = self._running.get(token)
            if job_id is None:
                continue
            job = self.jobs[job_id]
            self._release_slot(job, token)
            job["lease"] = None
            job["attempts"] -= 1
            self._status(job, "queued", now, released=True)
            self._push_ready(job)

    def interrupt(self, tokens: Iterable[int], now: float, reason: str) -> None:
        """Queue running attempts again without spending them: their runner had to end for another job's sake.

        The attempt keeps a history entry (outcome ``interrupted``) but not its number: the job is not
        failed and loses none of its budget. A cancel requested meanwhile wins.
        """
        for token in list(tokens):
            job_id = self._running.get(token)
            if job_id is None:
                continue
            job = self.jobs[job_id]
            if job["cancel_requested"]:
                self._end_cancelled(job, token, now)
                continue
            self._record(job, token, "interrupted", now, {"type": "Interrupted", "message": reason,
                                                          "traceback": None})
            self._release_slot(job, token)
            job["lease"] = None
            job["attempts"] -= 1
            self._status(job, "queued", now, interrupted=True)
            self._push_ready(job)

    def _end_cancelled(self, job: dict, token: int, now: float) -> dict:
        """A running attempt whose job was cancelled meanwhile ends as cancelled, whatever stopped it."""
        return self._end(job, token, "cancelled", now,
                         error={"type": "Cancelled", "message": "cancelled while running", "traceback": None})

    def lose(self, tokens: Iterable[int], now: float, reason: str) -> list[dict]:
        """The attempts holding these leases are gone (worker died, lease expired)."""
        lost = []
        for token in list(tokens):
            job_id = self._running.get(token)
            if job_id is None:
                continue
            job = self.jobs[job_id]
            if job["cancel_requested"]:
                lost.append(self._end_cancelled(job, token, now))
                continue
            log.warning("job %s attempt %d lost: %s", job_id, job["attempts"], reason,
                        extra={"job_id": job_id, "attempt": job["attempts"], "queue": self.name})
            lost.append(self._end(job, token, "lost", now, error={"type": "AttemptLost", "message": reason,
                                                                  "traceback": None}))
        return lost

    def runner_tokens(self, runner: str) -> set[int]:
        return set(self._runner_tokens.get(runner, ()))

    # -- time --------------------------------------------------------------
    def promote_due(self, now: float) -> int:
        self._control_due(now)
        while self._settle:
            parent = self.jobs.get(self._settle.pop())
            if parent is not None and parent["status"] == "waiting":
                self._children_done(parent, now)
        moved = 0
        while self._delayed and self._delayed[0][0] <= now:
            _, job_id, ver = heapq.heappop(self._delayed)
            job = self.jobs.get(job_id)
            if job is None or self._ver.get(job_id) != ver or job["status"] not in ("scheduled", "retrying", "sleeping"):
                continue
            if job["status"] == "sleeping" and (job.get("wake") or {}).get("channel"):
                self._wake_waiter(job, {"timeout": True}, now)
                continue
            resumed = job["status"] == "sleeping"
            if resumed:
                job["wake"] = None
            self._status(job, "queued", now)
            # A job woken from its sleep goes on before jobs created after it begin (its time has come).
            self._push_ready(job, order=job["created_at"] if resumed else None)
            moved += 1
        return moved

    def expire(self, now: float) -> tuple[list[dict], list[tuple[int, str]]]:
        """Lose attempts whose lease ran out; time out those past their deadline.

        Returns (jobs whose attempt was lost, [(token, runner)] to stop).
        """
        lost, to_stop = [], []
        while self._expiry and self._expiry[0][0] <= now:
            expires, token = heapq.heappop(self._expiry)
            job_id = self._running.get(token)
            if job_id is None or self.jobs[job_id]["lease"]["expires"] > now:
                continue
            runner = self.jobs[job_id]["lease"]["runner"]
            to_stop.append((token, runner))
            lost += self.lose([token], now, f"lease expired: no heartbeat for {self.jobs[job_id]['lease']['ttl']:g}s "
                                            "(worker lost or stalled)")
        while self._deadlines and self._deadlines[0][0] <= now:
            _, token = heapq.heappop(self._deadlines)
            job_id = self._running.get(token)
            if job_id is None:
                continue
            job = self.jobs[job_id]
            runner = job["lease"]["runner"]
            to_stop.append((token, runner))
            self._end(job, token, "timed_out", now, error={
                "type": "Timeout", "message": f"timed out after {job['timeout']:g}s; the attempt was stopped",
                "traceback": None})
            lost.append(job)
        return lost, to_stop

    # -- user actions ------------------------------------------------------
    def get(self, job_id: str) -> dict:
        job = self.jobs.get(job_id) or self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}", job_id=job_id)
        return job

    def cancel_tree(self, job_id: str, now: float) -> tuple[dict, list[tuple[int, str]]]:
        """Cancel a job and its unfinished children; returns the job and every (token, runner) to stop."""
        children = [j["id"] for j in self.jobs.values() if j.get("parent_id") == job_id]
        job, stop = self.cancel(job_id, now)
        stops = [stop] if stop else []
        for child_id in children:
            if child_id in self.jobs:
                _, child_stop = self.cancel(child_id, now)
                if child_stop:
                    stops.append(child_stop)
        return job, stops

    def cancel(self, job_id: str, now: float) -> tuple[dict, tuple[int, str] | None]:
        """Cancel an unfinished job; returns the job and the (token, runner) to stop if it was running."""
        job = self.jobs.get(job_id)
        if job is None:
            existing = self.get(job_id)
            raise InvalidTransition(f"job {job_id} is already {existing['status']}; only unfinished jobs can be "
                                    "cancelled", status=existing["status"])
        if job["status"] == "running":
            token, runner = job["lease"]["token"], job["lease"]["runner"]
            job["cancel_requested"] = True
            self._end_cancelled(job, token, now)
            return job, (token, runner)
        job["cancel_requested"] = True
        job["finished_at"] = now
        if (job.get("wake") or {}).get("channel"):
            self._waiters[job["wake"]["channel"]].discard(job_id)
        self._finish(job, "cancelled", now)
        return job, None

    def retry(self, job_id: str, now: float) -> dict:
        """Run a failed or cancelled job again, keeping its history."""
        if job_id in self.jobs:
            raise InvalidTransition(f"job {job_id} is {self.jobs[job_id]['status']}; only failed, cancelled or "
                                    "expired jobs can be retried")
        job = self.get(job_id)
        if job["status"] not in ("failed", "cancelled", "expired"):
            raise InvalidTransition(f"job {job_id} is {job['status']}; only failed, cancelled or expired jobs can "
                                    "be retried", status=job["status"])
        key = job["unique_key"]
        if key and key in self._unique:
            raise InvalidTransition(f"job {self._unique[key]} with the same unique_key is unfinished; "
                                    "wait for it or cancel it first")
        job = json.loads(json.dumps(job))
        # A manual retry grants the job its original attempt budget again.
        job["max_attempts"] = job["attempts"] + job.get("budget", job["max_attempts"])
        job.update(cancel_requested=False, finished_at=None, run_at=now, error=None, result=None,
                   phase="callback" if job.get("phase") == "callback" else "perform", expires_at=None)
        self.jobs[job_id] = job
        if key:
            self._unique[key] = job_id
        self._status(job, "queued", now, retried=True)
        self._push_ready(job)
        return job

    def delete(self, job_id: str) -> None:
        if job_id in self.jobs:
            raise InvalidTransition(f"job {job_id} is {self.jobs[job_id]['status']}; cancel it before deleting")
        job = self.get(job_id)
        self.counts[job["status"]] -= 1
        self.store.delete_job(job_id)
        self.forgotten.append(job)

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[dict]:
        self.get(job_id)
        return self.store.events_after("job:" + job_id, after, limit)

    def stats(self) -> dict:
        counts = {s: 0 for s in STATUSES}
        counts.update(self.counts)
        oldest = min((j["run_at"] for j in self.jobs.values() if j["status"] == "queued"), default=None)
        return {"queue": self.name, "counts": counts, "running": len(self._running),
                "oldest_queued_at": oldest, "now": time.time(), "paused": self.pauses.queue,
                "paused_types": sorted(self.pauses.types)}

    # -- schedules (actors/schedules.py): what needs the queue's enqueue ----------------------
    def add_schedule(self, data: dict, now: float) -> dict:
        """Create or replace a schedule (its job spec is validated like an enqueue)."""
        return self.schedules.put(data, now, lambda spec: self.validate({**spec, "queue": self.name}, now))

    def run_schedule_now(self, name: str, now: float) -> dict | None:
        return self.schedules.run_now(name, now, self._enqueue_one)

    def fire_schedules(self, now: float) -> list[dict]:
        """Enqueue one job for each schedule whose tick has come; advance it in the same commit."""
        return self.schedules.fire_due(now, self._enqueue_one, lambda job_id: job_id in self.jobs)

    def _enqueue_one(self, spec: dict, now: float) -> dict:
        [(job, _)] = self.enqueue_many([{**spec, "queue": self.name}], now)
        return job
