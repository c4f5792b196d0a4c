"""The queue actor: Ray's edge around ``JobQueue`` (the Durable Object of a queue).

One named, detached async actor per queue. It is the only writer of the
queue's SQLite database; every call that changes state awaits the group
commit before it returns. It dispatches due jobs to ``run_jobs`` runner tasks,
watches them, stops the ones whose job timed out or was cancelled, and fans
committed events out to subscribers (one stream per Serve replica).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import json
import logging
import math
import os
import time
from pathlib import Path

import ray

from . import callbacks
from . import launcher as launcher_mod
from . import retention
from . import runner as runner_mod
from . import scaling
from .bulk import BulkFilter
from .control import PURGE_CHUNK
from .exceptions import DojoError, Forbidden, MalformedRequest
from .jobs import Resources, load_modules
from .metrics import QueueMetrics
from .ids import split_lane
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
        # Jobs see the DOJO_* settings `dojo up` was given (e.g. DOJO_HELIX_URL), wherever they run,
        # but no token or secret (Settings.job_env).
        self._job_env = self.settings.job_env()
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
        self.concurrency = self.settings.concurrency
        self._runners: dict[str, dict] = {}  # runner id -> {"type", "ref", "leased"(, "adopted")}
        self._launcher = None  # the detached actor that owns our runner tasks (actors/launcher.py)
        self._objects = None  # the object store, made when a deleted job's objects must go
        self._runner_ids = itertools.count()
        self._incarnation = os.urandom(3).hex()
        self._waiters: dict[str, list[asyncio.Future]] = collections.defaultdict(list)
        self._beats: dict[str, asyncio.Future] = {}  # runner id -> its pending long-poll heartbeat
        self._nudged: dict[str, bool] = {}  # runners that nudged before their long poll began
        self.stream_calls = 0  # calls that carried attempt stream items (stats: what logs and progress cost)
        self._commit_future: asyncio.Future | None = None
        self._loop_task: asyncio.Task | None = None
        self.fanout = Subscriptions(self.store.max_gseq())  # committed events to subscribers (actors/events.py)
        self._sweep = retention.Paced(retention.SWEEP_EVERY_S, retention.PAGE,
                                      lambda now: retention.sweep(self.q, now, limit=retention.PAGE))
        event_days = retention.event_retention_days()  # a bad value stops the actor here, with its message
        self._prune = retention.Paced(retention.PRUNE_EVERY_S, retention.PRUNE_PAGE,
                                      lambda now: retention.prune_events(self.store, now, event_days))
        self._job_seconds: dict[str, float] = {}  # type -> moving average of an attempt's duration
        self.places = Places()  # in-flight places (actors/limits/)
        self.started_at = time.time()
        self.metrics = QueueMetrics(name)
        self.scaling = scaling.DemandReporter(name, self.registry)
        self.callbacks = callbacks.Sender(self.store, callbacks.signing_key(self.settings), self._public_job)
        self._depth_at = 0.0
        log.info("queue actor %s up (incarnation %s, %d unfinished jobs)", name, self._incarnation, len(self.q.jobs))
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
                    self._stop_runner(runner, f"attempt {token} timed out or lost its lease", silent=token in silent)
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
        self._dispatch()

    # -- dispatch ----------------------------------------------------------
    def _dispatch(self) -> None:
        """Wake idle runners, then start runners for lanes with ready jobs, up to the concurrency limit.

        A lane is a job type with the resources its attempts need (the type's, or a job's own).
        """
        for lane, ready in self.q.ready_counts().items():
            type_name, resources = split_lane(lane)
            job_type = self.registry.get(type_name)
            if job_type is None or job_type.external:
                continue
            self._wake(lane, math.ceil(ready / runner_mod.MAX_BATCH) if ready > 0 else 0)
            starting = sum(1 for r in self._runners.values() if r["type"] == lane and not r["leased"])
            # Quick jobs share a runner (it leases big batches); slow ones get a runner per `threads` jobs.
            quick = self._job_seconds.get(type_name, 0.0) < 0.005
            per_runner = max(64, job_type.threads) if quick else job_type.threads
            want = min(math.ceil(max(ready, 0) / per_runner) - starting, self.concurrency - len(self._runners))
            for _ in range(max(0, want)):
                self._launch(job_type, lane, Resources.from_dict(resources))

    def _launch(self, job_type, lane: str, resources: Resources) -> None:
        runner_id = f"{self.name}:{self._incarnation}:{next(self._runner_ids)}"
        options = {"name": f"dojo:{job_type.name}", **resources.ray_options()}
        args = (self.name, runner_id, lane, self.settings.lease_ttl, self.settings.job_modules, self._job_env)
        self._runners[runner_id] = {"type": lane, "ref": None, "leased": False}
        asyncio.get_running_loop().create_task(self._start_runner(runner_id, options, args))
        # Idle runners of other lanes stop lingering and exit: Ray can give their worker processes to
        # this runner instead of starting a new one (a process start costs about a second of CPU).
        for other in self._waiters:
            if other != lane:
                self._wake(other, len(self._waiters[other]))

    def _wake(self, lane: str, runners: int) -> None:
        """Wake up to ``runners`` of the lane's idle runners (long-polling in ``runner_lease``)."""
        waiters = self._waiters.get(lane)
        while runners > 0 and waiters:
            waiter = waiters.pop()
            if not waiter.done():
                waiter.set_result(True)
                runners -= 1

    async def _start_runner(self, runner_id: str, options: dict, args: tuple) -> None:
        """Have the launcher submit the runner (it owns the task, so the runner outlives this actor)."""
        try:
            if self._launcher is None:
                self._launcher = launcher_mod.launcher()
            [ref] = await self._launcher.launch.remote(options, args)
        except Exception as exc:  # the launcher is restarting: the next dispatch tries again
            log.warning("could not launch runner %s: %s", runner_id, exc)
            self._launcher = None
            self._runners.pop(runner_id, None)
            return
        info = self._runners.get(runner_id)
        if info is not None:
            info["ref"] = ref
        await self._watch(runner_id, ref)

    async def _watch(self, runner_id: str, ref) -> None:
        reason = None
        try:
            await ref
        except ray.exceptions.TaskCancelledError:
            reason = "the attempt's worker was stopped"
        except Exception as exc:  # worker crashed, node died, OOM, ...
            reason = f"worker lost: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        self._runners.pop(runner_id, None)
        self._nudged.pop(runner_id, None)
        tokens = self.q.runner_tokens(runner_id)
        if tokens:
            self.q.lose(tokens, time.time(), reason or "runner exited without reporting")
        await self._commit()  # its place is free: dispatch

    def _stop_runner(self, runner_id: str, why: str, silent: bool = False) -> None:
        """Tell a runner that one of its attempts is over (cancel, timeout, lost lease).

        The runner's pending heartbeat returns at once and it stops that attempt alone (its cancel event,
        its child processes); the process is not killed, since other attempts may share it. Only a runner
        whose lease ran out without a heartbeat (``silent``: hung or gone) is force-cancelled: all of its
        attempts' leases are expiring with it.
        """
        log.info("stopping an attempt of runner %s: %s", runner_id, why)
        waiter = self._beats.pop(runner_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(True)
        info = self._runners.get(runner_id)
        if silent and info is not None and info.get("ref") is not None:
            try:
                ray.cancel(info["ref"], force=True)
            except Exception as exc:  # noqa: BLE001  (its leases are lost anyway)
                log.warning("could not stop runner %s: %s", runner_id, exc)

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
        info = self._runners.get(runner_id)
        if info is None:
            # A runner launched before a restart: adopt it while there is room, else let it finish.
            if len(self._runners) >= self.concurrency:
                return []
            info = self._runners[runner_id] = {"type": lane, "ref": None, "leased": True, "adopted": True}
        info["leased"] = True
        # A runner whose lane is outranked by one that waits for room ends its batch here and exits.
        outranked = self._outranked(lane)
        leases = [] if outranked else self.q.lease(runner_id, [lane], want, now, node=node, pid=pid)
        # An idle runner lingers for more work of its lane, unless another lane waits for a runner to
        # start: then it exits at once, and Ray can hand its worker process to that runner.
        if not leases and wait > 0 and not outranked and not self._others_starting(lane):
            if self.store.dirty:
                await self._commit()  # what it reported is durable while it waits
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[lane].append(waiter)
            try:
                await asyncio.wait_for(waiter, wait)
            except asyncio.TimeoutError:
                pass
            leases = self.q.lease(runner_id, [lane], want, time.time(), node=node, pid=pid)
        if not leases and info.get("adopted"):
            self._runners.pop(runner_id, None)
        # The runner forgets its reports once this call returns, and a lease is durable before it is
        # handed out (@writes): no reader sees 'running' that a restart would turn back into 'queued'.
        # One group commit carries every runner's call of this moment.
        return leases

    def _outranked(self, lane: str) -> bool:
        """At the concurrency limit, does a lane with no runner have a better-ranked job than this one?

        Priority (aged, see ``JobQueue.rank``) holds across job types: a runner finishes the attempts it
        holds, then makes room, and the freed slot goes to the best-ranked lane (``_dispatch``).
        """
        if len(self._runners) < self.concurrency:
            return False
        mine = self.q.lane_head(lane)
        served = {info["type"] for info in self._runners.values()}
        for other in self.q.ready_counts():
            if other == lane or other in served:
                continue
            head = self.q.lane_head(other)
            if head is None or (mine is not None and head >= mine):
                return False  # lanes come best first: none after this one outranks us
            job_type = self.registry.get(split_lane(other)[0])
            if job_type is not None and not job_type.external:
                return True
        return False

    def _others_starting(self, lane: str) -> bool:
        return any(not info["leased"] and info["type"] != lane for info in self._runners.values())

    def _apply_reports(self, reports: list[dict], now: float) -> None:
        for report in reports:
            if report.get("duration") is not None and report.get("type"):
                # A moving average of how long a type's jobs take steers how many runners it gets.
                previous = self._job_seconds.get(report["type"], report["duration"])
                self._job_seconds[report["type"]] = 0.8 * previous + 0.2 * report["duration"]
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

    @writes
    async def stream(self, items: list, tokens: list[int], node: str | None = None, pid: int | None = None,
                     runner_id: str | None = None, wait: float = 0.0) -> dict:
        """A runner's attempt streams (actors/outbox.py), applied in order, and a heartbeat of its leases.

        Items are ``(token, job_id, "progress" | "log", data)``; a stale lease's items are dropped. The
        answers say per token 'ok', 'cancel' or 'stale'. With ``wait``, long-poll: answer early when an
        attempt of ``runner_id`` is stopped or the runner nudges (it has items to send).
        """
        now = time.time()
        self._apply_stream(items, now)
        answers = self.q.heartbeat(tokens, now, node, pid)
        if wait <= 0 or runner_id is None or any(a != "ok" for a in answers.values()):
            return answers
        if self.store.dirty:
            await self._commit()  # what came before is durable (and fanned out) while it waits
        if self._nudged.pop(runner_id, None):
            return answers
        waiter = self._beats.get(runner_id)
        if waiter is None or waiter.done():
            waiter = self._beats[runner_id] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), wait)
        except asyncio.TimeoutError:
            pass
        if self._beats.get(runner_id) is waiter and waiter.done():
            del self._beats[runner_id]
        self._nudged.pop(runner_id, None)
        return self.q.heartbeat(tokens, time.time(), node, pid)

    async def nudge(self, runner_id: str) -> None:
        """End a runner's long-polling ``stream`` call now: it has items to send."""
        waiter = self._beats.pop(runner_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(True)
        else:  # the long poll has not begun yet: it answers at once when it does
            self._nudged[runner_id] = True

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
            self._stop_runner(runner, f"job {job_id} cancelled (attempt {token})")
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
        stats.update(runners=len(self._runners), concurrency=self.concurrency, last_gseq=self.fanout.last_gseq,
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
            self._stop_runner(runner, f"cancelled by a bulk cancel (attempt {token})")
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
        return {**stats, "window": window, "series": chart, "running_jobs": running[:1000], "runners": len(self._runners),
                "concurrency": self.concurrency, "last_gseq": self.fanout.last_gseq}

    async def ping(self) -> dict:
        self._ensure_loop()
        return {"queue": self.name, "incarnation": self._incarnation, "pid": os.getpid(),
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
