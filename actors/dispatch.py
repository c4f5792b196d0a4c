"""The queue actor's runners: starting them for lanes with ready jobs, their long polls, stopping one attempt.

A runner is a Ray task (``actors/runner.py``) that serves one lane (a job type and the resources its
attempts need): it leases batches from the actor, runs them and reports, and lingers a while for more
work. ``Runners`` is the actor's book of them: ``dispatch()`` wakes idle runners and starts new ones up
to the queue's concurrency; at the limit, a lane outranked by a waiting one gives its place up
(priority across types, ``outranked``). Runners are submitted by the detached launcher actor
(``actors/launcher.py``), so they outlive a restart of the queue actor, which adopts them when they
call. The queue's rules (``JobQueue``) stay the truth about jobs; this holds only who runs.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import os
from typing import Awaitable, Callable

import ray

from . import launcher as launcher_mod
from . import runner as runner_mod
from .ids import split_lane
from .jobs import JobType, Resources

log = logging.getLogger(__name__)

#: An attempt shorter than this (moving average of its type) is "quick": a runner leases big batches of it.
QUICK_S = 0.005


class Runners:
    """The runners of one queue actor. ``on_exit(runner_id, reason)`` is awaited when one ends."""

    def __init__(self, queue: str, q, registry: dict[str, JobType], concurrency: int, runner_args: tuple,
                 on_exit: Callable[[str, str | None], Awaitable[None]]):
        self.queue, self.q, self.registry, self.concurrency = queue, q, registry, concurrency
        self.runner_args = runner_args  # (lease_ttl, job_modules, job_env): what every runner is started with
        self.on_exit = on_exit
        self.incarnation = os.urandom(3).hex()
        self.running: dict[str, dict] = {}  # runner id -> {"type": lane, "ref", "leased"(, "adopted")}
        self._ids = itertools.count()
        self._launcher = None  # the detached actor that owns our runner tasks
        self._idle: dict[str, list[asyncio.Future]] = collections.defaultdict(list)  # lane -> long-polling runners
        self._beats: dict[str, asyncio.Future] = {}  # runner id -> its pending long-poll heartbeat
        self._nudged: dict[str, bool] = {}  # runners that nudged before their long poll began
        self._seconds: dict[str, float] = {}  # type -> moving average of an attempt's duration

    # -- starting --------------------------------------------------------------------------------
    def dispatch(self) -> None:
        """Wake idle runners, then start runners for lanes with ready jobs, up to the concurrency limit."""
        for lane, ready in self.q.ready_counts().items():
            type_name, resources = split_lane(lane)
            job_type = self.registry.get(type_name)
            if job_type is None or job_type.external:
                continue
            self._wake(lane, math.ceil(ready / runner_mod.MAX_BATCH) if ready > 0 else 0)
            starting = sum(1 for r in self.running.values() if r["type"] == lane and not r["leased"])
            # Quick jobs share a runner (it leases big batches); slow ones get a runner per `threads` jobs.
            quick = self._seconds.get(type_name, 0.0) < QUICK_S
            per_runner = max(64, job_type.threads) if quick else job_type.threads
            want = min(math.ceil(max(ready, 0) / per_runner) - starting, self.concurrency - len(self.running))
            for _ in range(max(0, want)):
                self._launch(job_type, lane, Resources.from_dict(resources))

    def _launch(self, job_type: JobType, lane: str, resources: Resources) -> None:
        runner_id = f"{self.queue}:{self.incarnation}:{next(self._ids)}"
        options = {"name": f"dojo:{job_type.name}", **resources.ray_options()}
        args = (self.queue, runner_id, lane, *self.runner_args)
        self.running[runner_id] = {"type": lane, "ref": None, "leased": False}
        asyncio.get_running_loop().create_task(self._start(runner_id, options, args))
        # Idle runners of other lanes stop lingering and exit: Ray can give their worker processes to
        # this runner instead of starting a new one (a process start costs about a second of CPU).
        for other in self._idle:
            if other != lane:
                self._wake(other, len(self._idle[other]))

    def _wake(self, lane: str, runners: int) -> None:
        """Wake up to ``runners`` of the lane's idle runners (long-polling for work)."""
        waiters = self._idle.get(lane)
        while runners > 0 and waiters:
            waiter = waiters.pop()
            if not waiter.done():
                waiter.set_result(True)
                runners -= 1

    async def _start(self, runner_id: str, options: dict, args: tuple) -> None:
        """Have the launcher submit the runner (it owns the task, so the runner outlives this actor)."""
        try:
            if self._launcher is None:
                self._launcher = launcher_mod.launcher()
            [ref] = await self._launcher.launch.remote(options, args)
        except Exception as exc:  # the launcher is restarting: the next dispatch tries again
            log.warning("could not launch runner %s: %s", runner_id, exc)
            self._launcher = None
            self.running.pop(runner_id, None)
            return
        info = self.running.get(runner_id)
        if info is not None:
            info["ref"] = ref
        reason = None
        try:
            await ref
        except ray.exceptions.TaskCancelledError:
            reason = "the attempt's worker was stopped"
        except Exception as exc:  # worker crashed, node died, OOM, ...
            reason = f"worker lost: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        self.running.pop(runner_id, None)
        await self.on_exit(runner_id, reason)

    # -- a runner's calls ------------------------------------------------------------------------
    def checked_in(self, runner_id: str, lane: str) -> dict | None:
        """The runner's entry, now leasing; a runner launched before a restart is adopted while there
        is room (None: no room, let it finish)."""
        info = self.running.get(runner_id)
        if info is None:
            if len(self.running) >= self.concurrency:
                return None
            info = self.running[runner_id] = {"type": lane, "ref": None, "leased": True, "adopted": True}
        info["leased"] = True
        return info

    def lingers(self, lane: str) -> bool:
        """An idle runner lingers for more work of its lane, unless another lane waits for a runner to
        start: then it exits at once, and Ray can hand its worker process to that runner."""
        return not any(not info["leased"] and info["type"] != lane for info in self.running.values())

    async def idle(self, lane: str, wait: float) -> None:
        """Long-poll: until the lane may have work (``dispatch`` wakes it) or ``wait`` seconds."""
        waiter = asyncio.get_running_loop().create_future()
        self._idle[lane].append(waiter)
        try:
            await asyncio.wait_for(waiter, wait)
        except asyncio.TimeoutError:
            pass

    def done_with(self, runner_id: str) -> None:
        """An adopted runner that got no work: it exits, and is forgotten."""
        if self.running.get(runner_id, {}).get("adopted"):
            self.running.pop(runner_id, None)

    def outranked(self, lane: str) -> bool:
        """At the concurrency limit, does a lane with no runner have a better-ranked job than this one?

        Priority (aged, see ``JobQueue.rank``) holds across job types: a runner finishes the attempts it
        holds, then makes room, and the freed slot goes to the best-ranked lane (``dispatch``).
        """
        if len(self.running) < self.concurrency:
            return False
        mine = self.q.lane_head(lane)
        served = {info["type"] for info in self.running.values()}
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

    def took(self, type_name: str, duration: float) -> None:
        """An attempt of the type took ``duration`` s: a moving average steers how many runners it gets."""
        previous = self._seconds.get(type_name, duration)
        self._seconds[type_name] = 0.8 * previous + 0.2 * duration

    # -- heartbeats' long polls and stopping ------------------------------------------------------
    async def beat(self, runner_id: str, wait: float) -> None:
        """Long-poll a runner's heartbeat: until one of its attempts is stopped, it nudges, or ``wait``."""
        if self._nudged.pop(runner_id, None):
            return
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

    def nudge(self, runner_id: str) -> None:
        """End a runner's long-polling heartbeat now: it has items to send."""
        waiter = self._beats.pop(runner_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(True)
        else:  # the long poll has not begun yet: it answers at once when it does
            self._nudged[runner_id] = True

    def stop(self, runner_id: str, why: str, silent: bool = False) -> None:
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
        info = self.running.get(runner_id)
        if silent and info is not None and info.get("ref") is not None:
            try:
                ray.cancel(info["ref"], force=True)
            except Exception as exc:  # noqa: BLE001  (its leases are lost anyway)
                log.warning("could not stop runner %s: %s", runner_id, exc)
