"""The queue actor: Ray's edge around ``JobQueue`` (the Durable Object of a queue).

One named, detached async actor per queue. It is the only writer of the queue's SQLite database;
every command that changes state awaits the group commit before it returns (``@writes``), reads of
history go to read-only connections off its loop (``@reads``). After each commit it publishes the
committed events to subscribers (``events.Subscriptions``, one stream per Serve replica) and
dispatches (``dispatch.Runners``: starting, waking and stopping runner tasks). Everything else is a
component it holds: the rules (``queue.py``), the store, the search indexer, the callback sender,
retention, metrics, the in-flight places.

Why it is over 500 lines: it is the table of the queue's commands — each a few lines that call a
component and say whether they write or read — and one table is where a reader checks that every
command meets the store the way it must.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from pathlib import Path

import ray

from . import callbacks
from . import retention
from . import scaling
from .bulk import BulkFilter
from .control import PURGE_CHUNK
from .dispatch import Runners
from .exceptions import DojoError, Forbidden, MalformedRequest
from .jobs import load_modules
from .metrics import QueueMetrics
from .queue import JobQueue, Limits
from .reads import Reader
from .search import SearchIndex
from .settings import Settings
from .limits.places import Places
from .events import Subscriptions
from .store import Store, select_event_texts, select_events, select_jobs, select_logs, series, window_stats
from .views import public

log = logging.getLogger(__name__)

TICK_S = 0.05
PULL = "pull:"  # runner name prefix of a pull worker's leases
DEPTH_EVERY_S = 5.0


def writes(method):
    """A command that changes the queue: it answers only once what it staged is committed (promise 1),
    whether it returns or raises. A body that must act after the commit (stop a cancelled job's runner)
    commits first itself; what is left to commit then is nothing."""

    @functools.wraps(method)
    async def command(self, *args, **kwargs):
        self._ensure_loop()
        try:
            return await method(self, *args, **kwargs)
        finally:
            if self.store.dirty:
                await self._commit()

    command.kind = "writes"
    return command


def reads(method):
    """A command that reads the store through the reader (off the loop): what is staged is committed
    first, so it sees every change answered before it. Commands with neither mark read memory only."""

    @functools.wraps(method)
    async def command(self, *args, **kwargs):
        self._ensure_loop()
        if self.store.dirty:
            await self._commit()
        return await method(self, *args, **kwargs)

    command.kind = "reads"
    return command


class QueueService:
    """The body of the queue actor (``QueueActor = ray.remote(QueueService)``).

    Each command says how it meets the store: ``@writes`` (answers after its changes are committed),
    ``@reads`` (reads committed rows through the reader), or no mark (reads memory only).
    """

    def __init__(self, name: str, env: dict[str, str]):
        os.umask(0o077)  # the queue's database (and its -wal, -shm) 0600, folders it makes 0700
        os.environ.update(env)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.settings = Settings.from_env()
        self.registry = load_modules(self.settings.job_modules)
        path = Path(self.settings.state_dir) / "queues" / f"{name}.sqlite3"
        self.store = Store(path, self.settings.sqlite_sync)
        self.reader = Reader(path)  # history reads: read-only connections off this loop (actors/reads.py)
        self.search = SearchIndex(self.store)  # the search index, kept up between commits (actors/search.py)
        self.q = JobQueue(name, self.store, Limits(max_payload_bytes=self.settings.max_payload_bytes,
                                                   max_result_bytes=self.settings.max_result_bytes,
                                                   lease_ttl=self.settings.lease_ttl,
                                                   priority_aging=self.settings.priority_aging), now=time.time(),
                          types=self.registry)
        self.name = name
        # Its runners (actors/dispatch.py): started for lanes with ready jobs, after each commit.
        self.runners = Runners(name, self.q, self.registry, self.settings.concurrency,
                               (self.settings.lease_ttl, self.settings.job_modules, self.settings.job_env()),
                               self._runner_exited)
        self._objects = None  # the object store, made when a deleted job's objects must go
        self.stream_calls = 0  # calls that carried attempt stream items (stats: what logs and progress cost)
        self._commit_future: asyncio.Future | None = None
        self._loop_task: asyncio.Task | None = None
        self.fanout = Subscriptions(self.store.max_gseq())  # committed events to subscribers (actors/events.py)
        self._sweep = retention.Paced(retention.SWEEP_EVERY_S, retention.PAGE,
                                      lambda now: retention.sweep(self.q, now, limit=retention.PAGE))
        event_days = retention.event_retention_days()  # a bad value stops the actor here, with its message
        self._prune = retention.Paced(retention.PRUNE_EVERY_S, retention.PRUNE_PAGE,
                                      lambda now: retention.prune_events(self.store, now, event_days))
        self.places = Places()  # in-flight places (actors/limits/)
        self.started_at = time.time()
        self.metrics = QueueMetrics(name)
        self.scaling = scaling.DemandReporter(name, self.registry)
        self.callbacks = callbacks.Sender(self.store, callbacks.signing_key(self.settings), self._public_job)
        self._depth_at = 0.0
        log.info("queue actor %s up (incarnation %s, %d unfinished jobs)", name, self.runners.incarnation, len(self.q.jobs))
        self._wake_self()

    @staticmethod
    def _wake_self() -> None:
        """Start the ticker without waiting for a caller: after Ray restarts the actor, schedules,
        delays, retries and lease expiry must go on even if nobody calls it."""
        try:
            ray.get_runtime_context().current_actor.ping.remote()
        except Exception:  # not running as an actor (a plain object in tests)
            pass

    # -- plumbing ----------------------------------------------------------
    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._ticker())

    async def _ticker(self) -> None:
        while True:
            try:
                now = time.time()
                self.q.fire_schedules(now)
                self.q.promote_due(now)
                lost, to_stop = self.q.expire(now)
                silent = {job["history"][-1]["token"] for job in lost
                          if job["history"] and job["history"][-1]["outcome"] == "lost"}
                await self._commit()  # and dispatch: runners for what became due, in place of the lost
                for token, runner in to_stop:
                    self.runners.stop(runner, f"attempt {token} timed out or lost its lease", silent=token in silent)
                self.callbacks.tick(now)
                self.scaling.tick(self.q, now)  # backlog per resource shape -> autoscaler and metrics
                if now - self._depth_at >= DEPTH_EVERY_S:
                    self._depth_at = now
                    self.metrics.depth(dict(self.q.counts))
                if self._sweep.run(now):  # a page of jobs (~30 ms at 1,000,000 jobs) staged for deletion
                    await self._commit()
                    asyncio.get_running_loop().create_task(self._forget_objects())
                if self.search.due(not self.store.dirty and self._commit_future is None, now):
                    self.search.step(now)  # a batch when nothing waits to be written (or twice a second)
                self._prune.run(now)  # a page of events, between commits (it writes in its own transaction)
            except Exception:
                log.exception("queue %s tick failed", self.name)
            await asyncio.sleep(TICK_S)

    def _schedule_commit(self) -> asyncio.Future:
        if self._commit_future is None:
            loop = asyncio.get_running_loop()
            self._commit_future = loop.create_future()
            loop.call_soon(self._do_commit)
        return self._commit_future

    async def _commit(self) -> None:
        """Group commit, then dispatch: every change staged before the commit runs shares its fsync.

        The one place dispatch runs: every change that readies a job or frees a runner's place (an
        enqueue, an attempt's end, a due time, a runner gone) comes here, so no caller starts it by hand.
        """
        await asyncio.shield(self._schedule_commit())

    def _do_commit(self) -> None:
        future, self._commit_future = self._commit_future, None
        try:
            if self.store.dirty:
                self.store.commit()
                self.search.wake()
        except Exception as exc:
            log.exception("commit failed")
            future.set_exception(exc)
            raise SystemExit("queue state could not be committed; restarting from the last commit") from exc
        self.callbacks.add(self.q.take_deliveries())
        events = self.q.take_events()
        if events:
            self.metrics.observe(events)
            self.fanout.publish(events)
        future.set_result(None)
        self.runners.dispatch()

    async def _runner_exited(self, runner_id: str, reason: str | None) -> None:
        tokens = self.q.runner_tokens(runner_id)
        if tokens:
            self.q.lose(tokens, time.time(), reason or "runner exited without reporting")
        await self._commit()  # its place is free: dispatch

    # -- runners -----------------------------------------------------------
    @writes
    async def runner_lease(self, runner_id: str, lane: str, reports: list[dict], want: int, wait: float,
                           node: str | None = None, pid: int | None = None,
                           held: list[int] | None = None, items: list | None = None) -> list[dict]:
        """Report a runner's finished batch and lease its next one (long-polls up to ``wait`` seconds).

        ``held``: every lease the runner knows of. A lease committed here whose answer never reached it
        (this actor died first, and the runner asked the next one again) is given back, not left to expire
        and spend an attempt. ``items``: its attempts' stream items still waiting (see ``stream``), applied
        before the reports, so a job's last progress and log lines come before its final status.
        """
        now = time.time()
        self._apply_stream(items or [], now)
        self._apply_reports(reports, now)
        if held is not None:
            unknown = self.q.runner_tokens(runner_id) - set(held)
            if unknown:
                log.info("runner %s never received leases %s; queued again", runner_id, sorted(unknown))
                self.q.release(unknown, now)
        if self.runners.checked_in(runner_id, lane) is None:
            return []  # launched before a restart, and no room to adopt it: it finishes
        # A runner whose lane is outranked by one that waits for room ends its batch here and exits.
        outranked = self.runners.outranked(lane)
        leases = [] if outranked else self.q.lease(runner_id, [lane], want, now, node=node, pid=pid)
        if not leases and wait > 0 and not outranked and self.runners.lingers(lane):
            if self.store.dirty:
                await self._commit()  # what it reported is durable while it waits
            await self.runners.idle(lane, wait)
            leases = self.q.lease(runner_id, [lane], want, time.time(), node=node, pid=pid)
        if not leases:
            self.runners.done_with(runner_id)
        # The runner forgets its reports once this call returns, and a lease is durable before it is
        # handed out (@writes): no reader sees 'running' that a restart would turn back into 'queued'.
        # One group commit carries every runner's call of this moment.
        return leases

    def _apply_reports(self, reports: list[dict], now: float) -> None:
        for report in reports:
            if report.get("duration") is not None and report.get("type"):
                self.runners.took(report["type"], report["duration"])
            try:
                if report["outcome"] == "succeeded":
                    self.q.complete(report["token"], report.get("result"), now, job_id=report["job_id"],
                                    duration=report.get("duration"))
                elif report["outcome"] == "suspended":
                    self.q.suspend(report["token"], report["job_id"], report["until"], report.get("wait"), now,
                                   duration=report.get("duration"), step=report.get("step"))
                else:
                    self.q.fail(report["token"], report["error"], now, job_id=report["job_id"],
                                retry=report.get("retry", True), duration=report.get("duration"))
            except DojoError as exc:
                log.info("report for %s refused: %s", report.get("job_id"), exc.message,
                         extra={"job_id": report.get("job_id"), "queue": self.name})

    async def stream(self, items: list, tokens: list[int], node: str | None = None, pid: int | None = None,
                     runner_id: str | None = None, wait: float = 0.0) -> dict:
        """A runner's attempt streams (actors/outbox.py), applied in order, and a heartbeat of its leases.

        Items are ``(token, job_id, "progress" | "log", data)``; a stale lease's items are dropped. The
        answers say per token 'ok', 'cancel' or 'stale'. With ``wait``, long-poll: answer early when an
        attempt of ``runner_id`` is stopped or the runner nudges (it has items to send).

        Not ``@writes``: the items are staged in order before this answers, which is all their order
        needs (the runner sends its next items after this answer), and nothing the runner does waits
        on them being durable. They go out with the next group commit, started here; waiting for it
        would hold the runner's following items for one more commit (~5 ms), a live progress bar's lag.
        """
        now = time.time()
        self._apply_stream(items, now)
        answers = self.q.heartbeat(tokens, now, node, pid)
        if self.store.dirty:
            self._schedule_commit()
        if wait <= 0 or runner_id is None or any(a != "ok" for a in answers.values()):
            return answers
        if self.store.dirty:
            await self._commit()  # what came before is durable (and fanned out) while it waits
        await self.runners.beat(runner_id, wait)
        return self.q.heartbeat(tokens, time.time(), node, pid)

    async def nudge(self, runner_id: str) -> None:
        """End a runner's long-polling ``stream`` call now: it has items to send."""
        self.runners.nudge(runner_id)

    def _apply_stream(self, items: list, now: float) -> None:
        if not items:
            return
        self.stream_calls += 1
        for token, job_id, kind, data in items:
            try:
                if kind == "progress":
                    self.q.progress(token, data, now, job_id=job_id)
                else:
                    self.q.log_lines(token, data, now)
            except DojoError as exc:  # a stale attempt's items are dropped
                log.debug("%s for %s dropped: %s", kind, job_id, exc.message)

    @writes
    async def give_back(self, runner_id: str, released: list[int], interrupted: list[int], why: str) -> None:
        """A retiring runner hands back leases it never started and attempts it must interrupt.

        Neither spends an attempt or fails a job: they are queued again (an interrupted attempt keeps a
        history entry). Called before the runner's process ends, so its exit loses nothing.
        """
        now = time.time()
        self.q.release(released, now)
        self.q.interrupt(interrupted, now, f"interrupted: {why}")

    @writes
    async def record_step(self, token: int, job_id: str, index: int, name: str, result) -> None:
        """A durable step's result (actors/durable.py); answered once it is committed."""
        self.q.record_step(token, job_id, index, name, result, time.time())

    # -- the pull API (workers outside Ray) ---------------------------------
    def pull_types(self) -> list[str]:
        """What pull workers may lease here: the external types, and DOJO_PULL_TYPES for this queue."""
        allowed = {t for t, jt in self.registry.items() if jt.external} | self.settings.pull_types_of(self.name)
        return sorted(allowed)

    @writes
    async def pull_lease(self, worker: str, types: list[str] | None, n: int, ttl: float) -> list[dict]:
        """Lease jobs for a worker outside Ray: only of the types pull workers may run (``pull_types``).

        Ray-dispatched types (a render, a crawl) are not theirs: leasing one would hand its payload to
        the worker token and let it complete the job."""
        allowed = self.pull_types()
        refused = sorted(set(types or ()) - set(allowed))
        if refused:
            raise Forbidden(f"pull workers may not lease {refused} in queue {self.name!r}; they run external "
                            f"types only ({allowed or 'none here'}); DOJO_PULL_TYPES allows more")
        return self.q.lease(f"{PULL}{worker}", types or allowed, n, time.time(), ttl=ttl, node=worker)

    @writes
    async def pull_report(self, token: int, job_id: str, action: str, body: dict) -> dict:
        """A pull worker's report on its lease ``job_id:token``; only for leases of pull workers."""
        now = time.time()
        if token in self.q._running or action in ("heartbeat", "progress"):
            # StaleLease unless the token is the current lease of this very job (a repeated complete or
            # fail of a finished attempt is answered by JobQueue as before).
            lease = self.q._lease_of(token, job_id)["lease"]
            if not lease["runner"].startswith(PULL):
                raise Forbidden(f"lease {job_id}:{token} belongs to a Ray runner, not a pull worker")
        if action == "heartbeat":
            return {"status": self.q.heartbeat([token], now)[token]}
        if action == "progress":
            self.q.progress(token, body, now, job_id=job_id)
            job = self.q.get(job_id)
        elif action == "complete":
            foreign = retention.foreign_objects(job_id, body.get("result"), body.get("result_key"))
            if foreign:
                raise Forbidden(f"a result may name only objects of its own job (under <kind>/{job_id}/); "
                                f"{foreign} belong to other jobs")
            job = self.q.complete(token, body.get("result"), now, job_id=job_id, result_key=body.get("result_key"))
        elif action == "fail":
            job = self.q.fail(token, body.get("error") or "failed", now, job_id=job_id,
                              retry=bool(body.get("retry", True)))
        else:
            raise ValueError(action)
        return job

    # -- the API -----------------------------------------------------------
    @writes
    async def enqueue(self, specs: list) -> list[dict]:
        pairs = self.q.enqueue_many(specs, time.time())
        return [{**job, "created": created} for job, created in pairs]

    async def get(self, job_id: str) -> dict:
        self._ensure_loop()
        return self.q.get(job_id)

    @reads
    async def list(self, filters: dict) -> list[dict]:
        return await self.reader.run(select_jobs, **filters)

    @writes
    async def cancel(self, job_id: str) -> dict:
        job, stops = self.q.cancel_tree(job_id, time.time())
        await self._commit()  # durable before its runners are told to stop
        for token, runner in stops:
            self.runners.stop(runner, f"job {job_id} cancelled (attempt {token})")
        return job

    @reads
    async def children(self, job_id: str) -> list[dict]:
        """Outcomes of a job's children, for its on_children_done callback."""
        out, cursor = [], None
        while True:
            page = await self.reader.run(select_jobs, parent_id=job_id, before_id=cursor, limit=1000)
            out += [{"id": j["id"], "type": j["type"], "status": j["status"], "result": j["result"],
                     "error": j["error"]} for j in page]
            if len(page) < 1000:
                return out[::-1]
            cursor = page[-1]["id"]

    @writes
    async def retry(self, job_id: str) -> dict:
        return self.q.retry(job_id, time.time())

    @writes
    async def delete(self, job_id: str) -> None:
        self.q.delete(job_id)
        await self._commit()  # its objects go once it is gone for good
        await self._forget_objects()

    async def _forget_objects(self) -> None:
        """Delete the stored objects of the jobs deleted and committed so far (off the actor's loop)."""
        jobs, self.q.forgotten = self.q.forgotten, []
        if jobs and any(retention.folders_of(job) for job in jobs):
            if self._objects is None:
                from .objects import store_from_settings

                self._objects = store_from_settings(self.settings)
            await asyncio.to_thread(retention.delete_objects, self._objects, jobs)

    @writes
    async def publish(self, channel: str, message) -> dict:
        return self.q.publish(channel, message, time.time())

    # -- triggers and hooks (actors/triggers.py) ------------------------------------------
    @writes
    async def trigger_put(self, name: str, data) -> dict:
        now = time.time()
        return self.q.triggers.put_trigger(name, data, lambda spec: self.q.validate(spec, now), now)

    async def trigger_list(self) -> list[dict]:
        return sorted(self.q.triggers.triggers.values(), key=lambda t: t["name"])

    @writes
    async def trigger_delete(self, name: str) -> None:
        self.q.triggers.delete_trigger(name)

    @writes
    async def hook_put(self, name: str, data) -> dict:
        return self.q.triggers.put_hook(name, data, time.time())

    async def hook_list(self) -> list[dict]:
        return [self.q.triggers.view(h) for h in sorted(self.q.triggers.hooks.values(), key=lambda h: h["name"])]

    @writes
    async def hook_delete(self, name: str) -> None:
        self.q.triggers.delete_hook(name)

    @writes
    async def hook_publish(self, name: str, body: bytes, signature: str) -> dict:
        """A signed request to a hook: its JSON body is published to the hook's channel."""
        hook = self.q.triggers.verify(name, body, signature)
        try:
            message = json.loads(body)
        except ValueError:
            raise MalformedRequest("a hook's body must be JSON") from None
        event = self.q.publish(hook["channel"], message, time.time())
        return {"hook": name, "channel": hook["channel"], "gseq": event["gseq"], "seq": event["seq"]}

    @reads
    async def events(self, stream: str | None, after: int, limit: int = 1000, raw: bool = False) -> list:
        """Committed events of one stream after seq ``after``, or of the whole queue (stream None) after gseq.

        ``raw``: as ``(gseq, stream, seq, kind, json_text)`` tuples, for followers (``select_event_texts``)."""
        if stream and stream.startswith("job:"):
            self.q.get(stream[4:])
        return await self.reader.run(select_event_texts if raw else select_events, stream, after, limit)

    @reads
    async def stats(self) -> dict:
        stats = self.q.stats()
        stats.update(runners=len(self.runners.running), concurrency=self.runners.concurrency, last_gseq=self.fanout.last_gseq,
                     started_at=self.started_at, stream_calls=self.stream_calls)
        return stats

    # -- queue control: pause, resume, purge, bulk by filter (actors/control.py, actors/bulk.py) ------
    @writes
    async def pause(self, types: list[str] | None, paused: bool) -> dict:
        """Pause or resume the queue (``types`` None) or some types; durable before it answers."""
        now = time.time()
        return self.q.pause(types, now) if paused else self.q.resume(types, now)

    @writes
    async def purge(self, types: list[str] | None) -> dict:
        """Remove the jobs waiting for a start now, in chunks with a commit between (dispatch goes on)."""
        ids = self.q.purgeable(types)
        purged = 0
        for start in range(0, len(ids), PURGE_CHUNK):
            purged += self.q.purge(ids[start:start + PURGE_CHUNK], time.time())
            await self._commit()
        self.q.purged(purged, types, time.time())
        await self._commit()  # its objects go once the jobs are gone for good
        asyncio.get_running_loop().create_task(self._forget_objects())
        return {"queue": self.name, "purged": purged}

    @writes
    @reads
    async def bulk(self, action: str, filters: dict) -> dict:
        """Cancel, retry or delete one page (oldest first) of the jobs that match ``filters``."""
        spec = BulkFilter.parse(action, filters)
        page = await self.reader.run(select_jobs, **spec.select())
        now = time.time()
        matched = [row for row in page if spec.matches(row)]  # the group key is checked here, not by the index
        changed, stops = 0, []
        for row in matched:
            current = self.q.jobs.get(row["id"]) or self.store.get_job(row["id"])
            if current is None or not spec.matches(current):
                continue  # it changed since the page was read
            try:
                if action == "cancel":
                    _, stop = self.q.cancel(row["id"], now)
                    stops += [stop] if stop else []
                elif action == "retry":
                    self.q.retry(row["id"], now)
                else:
                    self.q.delete(row["id"])
            except DojoError:
                continue
            changed += 1
        await self._commit()  # durable before runners are stopped and objects deleted
        for token, runner in stops:
            self.runners.stop(runner, f"cancelled by a bulk cancel (attempt {token})")
        if action == "delete":
            asyncio.get_running_loop().create_task(self._forget_objects())
        return {"action": action, "queue": self.name, "read": len(page), "matched": len(matched), "changed": changed,
                "skipped": len(matched) - changed, "next_cursor": page[-1]["id"] if len(page) == spec.limit else None}

    # -- read-only views for the dashboard, logs and export ------------------------
    def _public_job(self, job_id: str) -> dict | None:
        try:
            return public(self.q.get(job_id))
        except DojoError:  # deleted since
            return None

    async def deliveries(self, job_id: str) -> list[dict]:
        """A job's callback deliveries and their tries (JobNotFound if there is no such job)."""
        self._ensure_loop()
        self.q.get(job_id)
        return self.store.deliveries_of(job_id)

    @reads
    async def logs(self, job_id: str, after: int = 0, limit: int = 1000) -> dict:
        """A job's log events (``ctx.log`` and captured output) with seq > after, and its status."""
        job = self.q.get(job_id)
        events, last_seq = await self.reader.run(select_logs, job_id, after, limit)
        return {"job_id": job_id, "status": job["status"], "last_seq": last_seq, "events": events}

    @reads
    async def browse(self, filters: dict, oldest_first: bool = False, after_id: str | None = None) -> list[dict]:
        """Like ``list`` (newest first, cursor ``before_id``), or oldest first with cursor ``after_id``."""
        if oldest_first:
            filters = {**filters, "oldest_first": True, "after_id": after_id, "before_id": None}
        return await self.reader.run(select_jobs, **filters)

    @reads
    async def insights(self, window: float = 3600.0, bucket: float = 60.0) -> dict:
        """The queue's last ``window`` seconds: throughput, failure rate, run-time percentiles, a series."""
        now = time.time()
        since = now - window
        stats = self.q.stats()
        running = [{"id": j["id"], "type": j["type"], "node": (j.get("lease") or {}).get("node"),
                    "started_at": (j.get("lease") or {}).get("started_at")}
                   for j in self.q.jobs.values() if j["status"] == "running"]
        window, chart = await self.reader.run(lambda db: (window_stats(db, since, now), series(db, since, now, bucket)))
        return {**stats, "window": window, "series": chart, "running_jobs": running[:1000], "runners": len(self.runners.running),
                "concurrency": self.runners.concurrency, "last_gseq": self.fanout.last_gseq}

    async def ping(self) -> dict:
        self._ensure_loop()
        return {"queue": self.name, "incarnation": self.runners.incarnation, "pid": os.getpid(),
                "last_gseq": self.fanout.last_gseq}

    async def subscribe(self, after: int):
        """Every committed event with gseq > after, in order, as batches; then live batches, forever.

        Call it with ``max_task_retries=0``: after an actor restart, resubscribe from the last gseq seen.
        """
        self._ensure_loop()
        async for batch in self.fanout.follow(after, lambda cursor, limit: self.reader.run(select_events, None,
                                                                                          cursor, limit)):
            self.metrics.fanout_lag(time.time() - batch[-1]["at"])
            yield batch


    # -- schedules -----------------------------------------------------------
    @writes
    async def schedule_put(self, data: dict) -> dict:
        return self.q.add_schedule(data, time.time())

    async def schedule_list(self) -> list[dict]:
        self._ensure_loop()
        return sorted(self.q.schedules.all.values(), key=lambda s: s["name"])

    async def schedule_get(self, name: str) -> dict:
        return self.q.schedules.get(name)

    @writes
    async def schedule_delete(self, name: str) -> None:
        self.q.schedules.remove(name)

    @writes
    async def schedule_pause(self, name: str, paused: bool) -> dict:
        return self.q.schedules.pause(name, paused, time.time())

    @writes
    async def schedule_run(self, name: str) -> dict:
        return self.q.run_schedule_now(name, time.time())

    # -- rate limits (shared by every worker) ------------------------------------
    @writes
    async def bucket_put(self, name: str, rate: float, burst: float) -> dict:
        return self.q.buckets.define(name, rate, burst, time.time())

    async def bucket_get(self, name: str) -> dict:
        return self.q.buckets.get(name).to_dict()

    @writes
    async def take_tokens(self, name: str, want: int = 1, rate: float | None = None,
                          burst: float | None = None) -> dict:
        """Grant up to ``want`` tokens; committed before granted, so a restart never refills a bucket."""
        return self.q.buckets.take(name, want, time.time(), rate, burst)

    @writes
    async def pause_bucket(self, name: str, until: float) -> dict:
        return self.q.buckets.pause(name, until, time.time())

    async def acquire_slots(self, name: str, limit: int, holder: str, want: int = 1, ttl: float = 60.0,
                            wait: float = 30.0) -> list[str]:
        """Up to ``want`` of the ``limit`` in-flight places of ``name`` (actors/limits/places.py)."""
        return await self.places.acquire(name, limit, holder, want, ttl, wait)

    async def release_slots(self, name: str, places: list[str]) -> None:
        self.places.release(name, places)


QueueActor = ray.remote(QueueService)
