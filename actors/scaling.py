"""Telling Ray's autoscaler about the backlog, and exporting it as metrics.

The autoscaler sees pending Ray tasks. The dispatcher starts at most
``DOJO_CONCURRENCY`` runner tasks per queue, one more at a time per type, so a
backlog of 500 GPU jobs shows the autoscaler one or two pending GPU tasks and
nodes would come up one by one. Each queue actor therefore computes its demand
per resource shape (the job type's ``Resources``: jobs queued and running,
grouped by what one attempt needs) and reports it to one ``ScalingActor``,
which sums every queue's report, caps each shape at
``DOJO_MAX_BUNDLES_PER_SHAPE`` and calls ``ray.autoscaler.sdk.request_resources``.
That request is a floor on the cluster's size ("make room for these bundles at
once"), cluster-global, and persistent until replaced, hence the single
aggregator, the cap (500 GPU jobs ask for 8 GPU bundles, not 500), and an
explicit empty request when every queue is empty so idle nodes can go.

Settings, read from the environment of the head's processes (set them where
``ray start --head`` runs; ``cluster.yaml`` shows how):

- ``DOJO_MAX_BUNDLES_PER_SHAPE`` (8): the most bundles requested per shape,
  summed over all queues. ``0`` turns the requests off (the metrics stay).

What counts: jobs ``queued`` (ready now) and ``running``, of types dispatched
as Ray tasks. Delayed, retrying and waiting jobs are not demand until they are
due; external types are leased by workers outside Ray. A job's shape is its
own ``resources`` when its spec set them, else its type's: the dispatcher runs
it with exactly that.
Jobs held back by a concurrency key still count while queued (a small
overstatement, bounded by the cap).

Metrics (Prometheus, through Ray's metrics agent), tagged ``queue`` and
``shape`` (e.g. ``CPU=1,GPU=1``): ``dojo_scaling_queued_jobs``,
``dojo_scaling_running_jobs``, ``dojo_scaling_oldest_queued_age_seconds``; and
from the aggregator, tagged ``shape``: ``dojo_scaling_requested_bundles``.

The rules (``backlog``, ``bundles``, ``Aggregator``) are plain Python; Ray is
the edge (``DemandReporter`` in the queue actor, ``ScalingActor``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from .jobs import JobType, Resources
from .settings import NAMESPACE

log = logging.getLogger(__name__)

#: A bundle as Ray's autoscaler takes it, frozen: (("CPU", 1.0), ("GPU", 1.0)).
Shape = tuple[tuple[str, float], ...]

DEFAULT_MAX_PER_SHAPE = 8
#: Scan a queue for its demand at most this often (and less often when the scan is costly).
SCAN_INTERVAL_S = 1.0
#: A queue with demand repeats its report this often, so a restarted aggregator learns it again.
REFRESH_S = 30.0
#: The aggregator forgets a queue that has not reported for this long (its actor is gone).
STALE_S = 3 * REFRESH_S
#: How often the aggregator re-checks for stale reports.
FLUSH_S = 5.0
SCALING_ACTOR = "dojo:scaling"


def max_per_shape_from_env() -> int:
    raw = os.environ.get("DOJO_MAX_BUNDLES_PER_SHAPE", "")
    try:
        value = int(raw) if raw else DEFAULT_MAX_PER_SHAPE
    except ValueError:
        raise ValueError(f"DOJO_MAX_BUNDLES_PER_SHAPE must be a whole number >= 0, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"DOJO_MAX_BUNDLES_PER_SHAPE must be a whole number >= 0, got {raw!r}")
    return value


# -- the rules (no Ray) ------------------------------------------------------
def shape_of(resources: Resources) -> Shape:
    """The bundle one attempt needs, without zero entries (empty: needs no node at all)."""
    amounts = {"CPU": resources.num_cpus, "GPU": resources.num_gpus, **dict(resources.custom)}
    return tuple(sorted((k, float(v)) for k, v in amounts.items() if v > 0))


def shape_label(shape: Shape) -> str:
    """``CPU=1,GPU=1``: a shape as a metric tag."""
    return ",".join(f"{k}={v:g}" for k, v in shape) or "none"


@dataclass
class ShapeBacklog:
    queued: int = 0
    running: int = 0
    oldest_queued_at: float | None = None

    @property
    def wanted(self) -> int:
        """Attempts that want a slot of this shape now: the capacity the cluster should have."""
        return self.queued + self.running


def backlog(jobs: Iterable[dict], registry: Mapping[str, JobType]) -> dict[Shape, ShapeBacklog]:
    """Queued and running jobs per shape, from a queue's unfinished jobs."""
    out: dict[Shape, ShapeBacklog] = {}
    for job in jobs:
        status = job["status"]
        if status != "queued" and status != "running":
            continue
        job_type = registry.get(job["type"])
        if job_type is None or job_type.external:
            continue
        shape = shape_of(Resources.from_dict(job["resources"]) if job.get("resources") else job_type.resources)
        entry = out.get(shape)
        if entry is None:
            entry = out[shape] = ShapeBacklog()
        if status == "running":
            entry.running += 1
        else:
            entry.queued += 1
            ready_at = job.get("run_at") or job.get("created_at")
            if ready_at is not None and (entry.oldest_queued_at is None or ready_at < entry.oldest_queued_at):
                entry.oldest_queued_at = ready_at
    return out


def capped(demand: Mapping[Shape, int], max_per_shape: int) -> dict[Shape, int]:
    """Bundle counts per shape, at most ``max_per_shape`` each; shapes that need no node are dropped."""
    return {shape: min(n, max_per_shape) for shape, n in sorted(demand.items()) if shape and n > 0
            and max_per_shape > 0}


def bundles(demand: Mapping[Shape, int]) -> list[dict[str, float]]:
    """``request_resources`` bundles for counts per shape."""
    return [dict(shape) for shape, n in sorted(demand.items()) for _ in range(n)]


class Aggregator:
    """Sums every queue's demand, caps it per shape, and requests it when it changes.

    ``request(bundles)`` is ``ray.autoscaler.sdk.request_resources(bundles=...)``
    in the actor, a list in tests.
    """

    def __init__(self, max_per_shape: int, request: Callable[[list[dict]], None],
                 clock: Callable[[], float] = time.monotonic):
        self.max_per_shape = max_per_shape
        self.request = request
        self.clock = clock
        self.reports: dict[str, tuple[float, dict[Shape, int]]] = {}
        self.requested: dict[Shape, int] | None = None  # None: nothing requested yet by this incarnation

    def report(self, source: str, demand: Mapping[Shape, int]) -> dict[Shape, int]:
        demand = {tuple(tuple(pair) for pair in shape): n for shape, n in demand.items() if n > 0}
        if demand:
            self.reports[source] = (self.clock(), demand)
        else:
            self.reports.pop(source, None)
        return self.flush()

    def total(self) -> dict[Shape, int]:
        now = self.clock()
        for source in [s for s, (at, _) in self.reports.items() if now - at > STALE_S]:
            log.warning("forgetting the demand of %s: no report for %.0fs", source, now - self.reports[source][0])
            del self.reports[source]
        summed: dict[Shape, int] = {}
        for _, demand in self.reports.values():
            for shape, n in demand.items():
                summed[shape] = summed.get(shape, 0) + n
        return capped(summed, self.max_per_shape)

    def flush(self) -> dict[Shape, int]:
        """Request the current total if it differs from the last request (or none was made yet)."""
        total = self.total()
        if total != self.requested:
            self.request(bundles(total))
            log.info("requested from the autoscaler: %s",
                     ", ".join(f"{n} x {shape_label(s)}" for s, n in total.items()) or "nothing")
            self.requested = total
        return total


class DemandTracker:
    """Decides, in the queue actor, when to scan the queue and when to report (no Ray here).

    ``tick(jobs, registry, now)`` returns ``(scan, report)``: ``scan`` is the fresh backlog when a
    scan ran (for the metrics), ``report`` the capped counts to send when they changed (or are due
    for a refresh), else None. Scans run once a ``SCAN_INTERVAL_S``, and at once when an idle queue
    gets jobs (the first job after idle should not wait). An idle queue costs one check per tick.
    """

    def __init__(self, max_per_shape: int):
        self.max_per_shape = max_per_shape
        #: What was last reported; None until the first report (a restarted actor clears its old report).
        self.reported: dict[Shape, int] | None = None
        self.reported_at = float("-inf")
        self.next_scan = 0.0
        self.interval = SCAN_INTERVAL_S
        self._scanned_len = 0

    def forget(self) -> None:
        """The last report may not have arrived: send the next one whatever it holds."""
        self.reported = None

    def tick(self, jobs: Mapping[str, dict], registry: Mapping[str, JobType], now: float
             ) -> tuple[dict[Shape, ShapeBacklog] | None, dict[Shape, int] | None]:
        idle = self.reported == {}
        if idle and not jobs:
            return None, None
        if now < self.next_scan and not (idle and len(jobs) != self._scanned_len):
            return None, None
        started = time.perf_counter()
        scan = backlog(jobs.values(), registry)
        # Keep scanning under ~2% of the actor's time, however long the queue.
        self.interval = max(SCAN_INTERVAL_S, 50 * (time.perf_counter() - started))
        self.next_scan = now + self.interval
        self._scanned_len = len(jobs)
        demand = capped({shape: b.wanted for shape, b in scan.items()}, self.max_per_shape)
        due = demand != self.reported or bool(demand and now - self.reported_at >= REFRESH_S)
        if not due:
            return scan, None
        self.reported, self.reported_at = demand, now
        return scan, demand


# -- the Ray edge --------------------------------------------------------------
class _Gauges:
    """The scaling metrics; made on first use, inside a Ray worker."""

    def __init__(self):
        from ray.util.metrics import Gauge

        tags = ("queue", "shape")
        self.queued = Gauge("dojo_scaling_queued_jobs", "Jobs ready to run, per queue and resource shape.", tags)
        self.running = Gauge("dojo_scaling_running_jobs", "Jobs running, per queue and resource shape.", tags)
        self.oldest = Gauge("dojo_scaling_oldest_queued_age_seconds",
                            "Age of the oldest ready job, per queue and resource shape (0 when none).", tags)


class DemandReporter:
    """The queue actor's side: call ``tick(queue, now)`` from its loop; never raises."""

    def __init__(self, queue_name: str, registry: Mapping[str, JobType]):
        self.queue_name = queue_name
        self.registry = registry
        self.tracker = DemandTracker(max_per_shape_from_env())
        self._gauges: _Gauges | None = None
        self._labels: set[str] = set()
        self._aggregator = None
        self._last_ref = None
        self._failed_at = float("-inf")

    def tick(self, q, now: float) -> None:
        try:
            jobs = q.jobs
            if q.pauses.any:  # a paused queue's (or type's) queued jobs start nowhere: they ask for no node
                jobs = {i: j for i, j in jobs.items() if j["status"] != "queued" or not q.pauses.paused(j["type"])}
            scan, report = self.tracker.tick(jobs, self.registry, now)
            if scan is not None:
                self._export(scan, now)
            if report is not None:
                self._send(report)
        except Exception:  # noqa: BLE001  (scaling must never stop the queue)
            if now - self._failed_at > 60:
                log.exception("queue %s: reporting demand failed", self.queue_name, extra={"queue": self.queue_name})
            self._failed_at = now
            self.tracker.forget()

    def _export(self, scan: dict[Shape, ShapeBacklog], now: float) -> None:
        if self._gauges is None:
            self._gauges = _Gauges()
        seen = set()
        for shape, entry in scan.items():
            label = shape_label(shape)
            seen.add(label)
            tags = {"queue": self.queue_name, "shape": label}
            self._gauges.queued.set(entry.queued, tags)
            self._gauges.running.set(entry.running, tags)
            age = now - entry.oldest_queued_at if entry.oldest_queued_at is not None else 0.0
            self._gauges.oldest.set(max(0.0, age), tags)
        for label in self._labels - seen:  # a shape that emptied reads 0, not its last value
            tags = {"queue": self.queue_name, "shape": label}
            for gauge in (self._gauges.queued, self._gauges.running, self._gauges.oldest):
                gauge.set(0, tags)
        self._labels |= seen

    def _send(self, demand: dict[Shape, int]) -> None:
        import ray

        if self._last_ref is not None:
            ready, _ = ray.wait([self._last_ref], timeout=0)
            if ready:
                try:
                    ray.get(ready[0])
                except ray.exceptions.RayActorError:
                    self._aggregator = None  # killed for good: make a new one
        if self._aggregator is None:
            if not demand:
                # Nothing to ask for: clear an old report only if an aggregator exists (single-machine
                # `dojo up` never needs one, so an idle queue does not create it).
                try:
                    self._aggregator = ray.get_actor(SCALING_ACTOR, namespace=NAMESPACE)
                except ValueError:
                    return
            else:
                self._aggregator = scaling_actor()
        self._last_ref = self._aggregator.report.remote(self.queue_name, demand)


class ScalingService:
    """The body of the ``ScalingActor``: an ``Aggregator`` that calls ``request_resources``."""

    def __init__(self):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from ray.util.metrics import Gauge

        self.gauge = Gauge("dojo_scaling_requested_bundles",
                           "Bundles requested from the autoscaler, per resource shape, over all queues.", ("shape",))
        self.aggregator = Aggregator(max_per_shape_from_env(), self._request)
        self._labels: set[str] = set()
        self._loop_task: asyncio.Task | None = None

    def _request(self, wanted: list[dict]) -> None:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=wanted)
        counts: dict[str, int] = {}
        for bundle in wanted:
            label = shape_label(tuple(sorted(bundle.items())))
            counts[label] = counts.get(label, 0) + 1
        for label in self._labels | set(counts):
            self.gauge.set(counts.get(label, 0), {"shape": label})
        self._labels |= set(counts)

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._flusher())

    async def _flusher(self) -> None:
        while True:
            try:
                self.aggregator.flush()
            except Exception:  # noqa: BLE001
                log.exception("flushing the autoscaler request failed")
            await asyncio.sleep(FLUSH_S)

    async def report(self, source: str, demand: dict) -> dict:
        """A queue's capped demand per shape; returns what the cluster is asked for now."""
        self._ensure_loop()
        return self.aggregator.report(source, demand)

    async def demand(self) -> dict:
        """What is requested now, per shape label, and each queue's last report (for tests and ops)."""
        self._ensure_loop()
        return {"requested": {shape_label(s): n for s, n in (self.aggregator.requested or {}).items()},
                "reports": {src: {shape_label(s): n for s, n in d.items()}
                            for src, (_, d) in self.aggregator.reports.items()}}


@functools.lru_cache(maxsize=None)
def _actor_class():
    import ray

    return ray.remote(ScalingService)


def scaling_actor():
    """The one aggregator of the cluster, created on first use, on the head, restarted if it dies."""
    return _actor_class().options(
        name=SCALING_ACTOR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=-1,
        max_task_retries=0, num_cpus=0, resources={"node:__internal_head__": 0.001},
    ).remote()
