"""The one typed door into the queue actors, for serve/ and for code on the cluster.

``Queues`` finds the named, detached actor of each queue and exposes its
calls as coroutines. Nothing outside actors/ calls an actor method by name.

A queue exists when its actor is alive or its database is in the state dir
(so queues survive a restart of the cluster); ``default`` always exists. Only
the calls that create (``enqueue``, ``schedule_put``, ``create``) may start the
actor of a new queue, and at most ``DOJO_MAX_QUEUES`` queues exist: every
queue actor is a process on the head, so a read or a stray name must not make
one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, AsyncIterator

import ray

from .bulk import BulkFilter
from .exceptions import DojoError, InvalidInput, QueueUnavailable, TooManyQueues, UnknownQueue
from .ids import QUEUE_NAME, actor_name, queue_of
from .settings import NAMESPACE, Settings


def queue_actor(queue: str, settings: Settings):
    """The queue's actor handle, created on first use (detached, restarted by Ray if it dies)."""
    from .actor import QueueActor

    if not QUEUE_NAME.match(queue):
        raise InvalidInput(f"queue name {queue!r} must match {QUEUE_NAME.pattern}")
    options: dict[str, Any] = dict(
        name=actor_name(queue), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        max_restarts=-1, max_task_retries=0, max_concurrency=10_000, num_cpus=0,
    )
    # Keep the queue's state on the head node: worker nodes come and go.
    options["resources"] = {"node:__internal_head__": 0.001}
    return QueueActor.options(**options).remote(queue, settings.env())


DEFAULT_QUEUE = "default"


def queue_files(settings: Settings) -> set[str]:
    """Names of the queues with a database in the state dir (they exist, running or not)."""
    folder = Path(settings.state_dir) / "queues"
    return {p.stem for p in folder.glob("*.sqlite3") if QUEUE_NAME.match(p.stem)}


def live_queues() -> set[str]:
    """Names of the queues whose actor is alive in the cluster."""
    prefix = actor_name("")
    return {a["name"][len(prefix):] for a in ray.util.list_named_actors(all_namespaces=True)
            if a.get("namespace") == NAMESPACE and a.get("name", "").startswith(prefix)}


def connect() -> None:
    """Join the cluster as a driver: ``RAY_ADDRESS``, else the local head ``dojo up`` started (never 'auto')."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # dojo's heads keep Ray's token auth on
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "127.0.0.1:6379", namespace=NAMESPACE,
                 logging_level=logging.WARNING, log_to_driver=False)


def _position(after) -> int:
    """A read's ``after``: a sequence number SQLite can hold (a bigger one is not an event; it is a 422)."""
    if isinstance(after, bool) or not isinstance(after, int) or not -(2**63) <= after < 2**63:
        raise InvalidInput(f"after must be a sequence number (a whole number below 2**63), got {after!r}")
    return after


def _list_filters(filters: dict) -> None:
    """A list's time bounds are finite unix times and its search text plain text (SQLite takes neither
    an infinite time nor a NUL in a search): InvalidInput otherwise."""
    for key, name in (("created_after", "since"), ("created_before", "until")):
        value = filters.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or abs(value) > 1e12):
            raise InvalidInput(f"{name} must be a unix time in seconds, got {value!r}")
    text = filters.get("text")
    if text is not None:
        try:
            text.encode("utf-8")
        except (AttributeError, UnicodeEncodeError):
            raise InvalidInput(f"q must be text, got {text!r}") from None
        if "\x00" in text:
            raise InvalidInput("q must not contain a NUL character")


def _positive(limit) -> int:
    """A read's ``limit``: a whole number of at least 1 (SQLite takes -1 for "everything")."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"limit must be a whole number of at least 1, got {limit!r}")
    return limit


class Queues:
    """Async facade over every queue's actor."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._actors: dict[str, Any] = {}

    def actor(self, queue: str, create: bool = False):
        """The queue's actor; UnknownQueue unless the queue exists or ``create`` is set.

        Only calls made for the API token's creating operations pass ``create``.
        """
        handle = self._actors.get(queue)
        if handle is None:
            handle = self._actors[queue] = self._open(queue, create)
        return handle

    def _open(self, queue: str, create: bool):
        if not isinstance(queue, str) or not QUEUE_NAME.match(queue):
            raise InvalidInput(f"queue name {queue!r} must match {QUEUE_NAME.pattern}")
        try:
            return ray.get_actor(actor_name(queue), namespace=NAMESPACE)
        except ValueError:  # no live actor of that name
            pass
        if queue != DEFAULT_QUEUE and queue not in queue_files(self.settings):
            if not create:
                raise UnknownQueue(f"no queue named {queue!r}; queues are created by enqueueing a job into "
                                   "them with the API token", queue=queue)
            count = len(queue_files(self.settings) | live_queues() | {DEFAULT_QUEUE})
            if count >= self.settings.max_queues:
                raise TooManyQueues(f"queue {queue!r} would be queue {count + 1}, over DOJO_MAX_QUEUES="
                                    f"{self.settings.max_queues}; reuse an existing queue or raise DOJO_MAX_QUEUES",
                                    limit=self.settings.max_queues)
        return queue_actor(queue, self.settings)

    async def _ask(self, queue: str, command: str, *args, create: bool = False):
        """Run one command of the queue's actor. The one place Ray's errors become dojo's: a restarting
        actor is ``QueueUnavailable`` (nothing was changed: retry), a dojo error raised in the actor is
        raised as itself, not wrapped."""
        handle = self.actor(queue, create)
        try:
            return await getattr(handle, command).remote(*args)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            raise QueueUnavailable(f"the queue's actor is restarting ({type(exc).__name__}); retry in a second",
                                   retry_after=1) from None
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, DojoError):
                raise exc.cause from None
            raise

    def exists(self, queue: str) -> str:
        """``queue`` when it exists; InvalidInput for a bad name, UnknownQueue for an unknown one."""
        self.actor(queue)
        return queue

    async def create(self, queue: str) -> dict:
        """Create the queue (idempotent): its actor starts and its database is written."""
        return await self._ask(queue, "ping", create=True)

    async def enqueue(self, specs: list[dict]) -> list[dict]:
        """Enqueue specs (possibly for several queues); results come back in the order given."""
        if not isinstance(specs, list) or not specs:
            raise InvalidInput("send one job spec or a non-empty list of them")
        by_queue: dict[str, list[int]] = defaultdict(list)
        for index, spec in enumerate(specs):
            queue = spec.get("queue", "default") if isinstance(spec, dict) else "default"
            if not isinstance(queue, str) or not QUEUE_NAME.match(queue):
                raise InvalidInput(f"job {index}: queue name {queue!r} must match {QUEUE_NAME.pattern}")
            by_queue[queue].append(index)
        if len(by_queue) > 1:
            raise InvalidInput("one request enqueues into one queue; send one request per queue")
        [(queue, _)] = by_queue.items()
        return await self._ask(queue, "enqueue", specs, create=True)

    async def get(self, job_id: str) -> dict:
        return await self._ask(queue_of(job_id), "get", job_id)

    async def list(self, queue: str, **filters) -> list[dict]:
        _positive(filters.get("limit", 1))
        _list_filters(filters)
        return await self._ask(queue, "list", filters)

    async def cancel(self, job_id: str) -> dict:
        return await self._ask(queue_of(job_id), "cancel", job_id)

    async def retry(self, job_id: str) -> dict:
        return await self._ask(queue_of(job_id), "retry", job_id)

    async def delete(self, job_id: str) -> None:
        return await self._ask(queue_of(job_id), "delete", job_id)

    async def deliveries(self, job_id: str) -> list[dict]:
        return await self._ask(queue_of(job_id), "deliveries", job_id)

    async def pause(self, queue: str, types: list[str] | None, paused: bool) -> dict:
        """Pause (``paused``) or resume a queue, or only ``types`` in it."""
        return await self._ask(queue, "pause", types, paused)

    async def purge(self, queue: str, types: list[str] | None = None) -> dict:
        """Remove the queue's jobs waiting for a start (of ``types`` only, when given)."""
        return await self._ask(queue, "purge", types)

    async def bulk(self, action: str, filters: dict) -> dict:
        """Cancel, retry or delete one page of the jobs matching ``filters`` (see actors/bulk.py)."""
        spec = BulkFilter.parse(action, filters)  # a bad filter is refused before any actor is asked
        if spec.cursor is not None and queue_of(spec.cursor) != spec.queue:
            raise InvalidInput(f"cursor {spec.cursor!r} is a job of another queue; send the next_cursor of the "
                               "previous call", field="cursor")
        return await self._ask(spec.queue, "bulk", action, filters)

    async def events(self, queue: str, stream: str, after: int, limit: int = 1000, raw: bool = False) -> list:
        """A page of committed events; ``raw``: ``(gseq, stream, seq, kind, json_text)`` tuples (for followers)."""
        return await self._ask(queue, "events", stream, _position(after), _positive(limit), raw)

    async def publish(self, queue: str, channel: str, message: Any) -> dict:
        return await self._ask(queue, "publish", channel, message)

    async def stats(self, queue: str) -> dict:
        return await self._ask(queue, "stats")

    async def logs(self, job_id: str, after: int = 0, limit: int = 1000) -> dict:
        """A job's log events after seq ``after`` and its current status."""
        return await self._ask(queue_of(job_id), "logs", job_id, _position(after), _positive(limit))

    async def browse(self, queue: str, oldest_first: bool = False, after_id: str | None = None,
                     **filters) -> list[dict]:
        """Jobs of a queue newest first (``before_id`` cursor) or oldest first (``after_id`` cursor)."""
        _positive(filters.get("limit", 1))
        _list_filters(filters)
        return await self._ask(queue, "browse", filters, oldest_first, after_id)

    async def insights(self, queue: str, window: float = 3600.0, bucket: float = 60.0) -> dict:
        """Depth, running jobs and the last ``window`` seconds of a queue (for the dashboard)."""
        return await self._ask(queue, "insights", window, bucket)

    async def ping(self, queue: str, create: bool = False) -> dict:
        """The queue's state; ``create`` starts a queue that does not exist yet (an operator's call)."""
        return await self._ask(queue, "ping", create=create)

    async def pull_lease(self, queue: str, worker: str, types: list[str] | None, n: int, ttl: float) -> list[dict]:
        return await self._ask(queue, "pull_lease", worker, types, n, ttl)

    async def pull_report(self, queue: str, token: int, job_id: str, action: str, body: dict) -> dict:
        return await self._ask(queue, "pull_report", token, job_id, action, body)

    async def trigger_put(self, queue: str, name: str, data: dict) -> dict:
        return await self._ask(queue, "trigger_put", name, data, create=True)

    async def trigger_list(self, queue: str) -> list[dict]:
        return await self._ask(queue, "trigger_list")

    async def trigger_delete(self, queue: str, name: str) -> None:
        return await self._ask(queue, "trigger_delete", name)

    async def hook_put(self, queue: str, name: str, data: dict) -> dict:
        return await self._ask(queue, "hook_put", name, data, create=True)

    async def hook_list(self, queue: str) -> list[dict]:
        return await self._ask(queue, "hook_list")

    async def hook_delete(self, queue: str, name: str) -> None:
        return await self._ask(queue, "hook_delete", name)

    async def hook_publish(self, queue: str, name: str, body: bytes, signature: str) -> dict:
        return await self._ask(queue, "hook_publish", name, body, signature)

    async def schedule_put(self, queue: str, data: dict) -> dict:
        return await self._ask(queue, "schedule_put", data, create=True)

    async def schedule_list(self, queue: str) -> list[dict]:
        return await self._ask(queue, "schedule_list")

    async def schedule_get(self, queue: str, name: str) -> dict:
        return await self._ask(queue, "schedule_get", name)

    async def schedule_delete(self, queue: str, name: str) -> None:
        return await self._ask(queue, "schedule_delete", name)

    async def schedule_pause(self, queue: str, name: str, paused: bool) -> dict:
        return await self._ask(queue, "schedule_pause", name, paused)

    async def schedule_run(self, queue: str, name: str) -> dict:
        return await self._ask(queue, "schedule_run", name)

    async def bucket_put(self, queue: str, name: str, rate: float, burst: float) -> dict:
        return await self._ask(queue, "bucket_put", name, rate, burst)

    async def bucket_get(self, queue: str, name: str) -> dict:
        return await self._ask(queue, "bucket_get", name)

    async def subscribe(self, queue: str, after: int) -> AsyncIterator[list[dict]]:
        """Committed events of a queue after ``after`` (a gseq), resuming across actor restarts.

        A cancelled stream resumes too: Ray cancels the calls a request made when the request is
        cancelled (an HTTP client left), and a shared stream must outlive the request that opened it.
        """
        cursor = after
        failures = 0
        while True:
            try:
                gen = self.actor(queue).subscribe.options(max_task_retries=0).remote(cursor)
                async for ref in gen:
                    batch = await ref
                    failures = 0
                    cursor = batch[-1]["gseq"]
                    yield batch
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                    ray.exceptions.ObjectLostError, ray.exceptions.TaskCancelledError):
                failures += 1
                await asyncio.sleep(min(2.0, 0.05 * failures))
