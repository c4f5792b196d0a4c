"""What a queue did, as Prometheus metrics (through Ray).

``QueueMetrics`` feeds Ray's metrics (exported by every Ray node in Prometheus
format, see ``deploy/grafana/dojo.json``). The queue actor calls
``observe(events)`` with each committed batch of events, ``depth(counts)``
from its tick, and ``fanout_lag(seconds)`` when it hands a batch to a
subscriber. It learns everything from the events, so it never touches the
queue's rules. Names: ``dojo_jobs_enqueued``, ``dojo_jobs_started``,
``dojo_jobs_succeeded``, ``dojo_jobs_failed`` (counters; Prometheus adds
``_total``), ``dojo_queue_depth`` (gauge by status), ``dojo_job_run_seconds``,
``dojo_job_wait_seconds``, ``dojo_event_fanout_lag_seconds`` (histograms).
Tags: ``queue`` and ``type`` (``status`` on the depth gauge). The dashboard's
windowed statistics are SQL, in ``actors/store/queries.py``.
"""
from __future__ import annotations

import logging


log = logging.getLogger(__name__)

RUN_BOUNDS = [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]
WAIT_BOUNDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600]
LAG_BOUNDS = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5]
#: Jobs whose start / enqueue time is remembered for the histograms; beyond it the oldest are forgotten.
TRACK_MAX = 100_000
ENDED = ("succeeded", "failed", "cancelled", "retrying", "waiting")


class QueueMetrics:
    """Ray metrics of one queue. Builds nothing when ``ray.util.metrics`` is unavailable."""

    def __init__(self, queue: str):
        self.queue = queue
        self._queued_at: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        try:
            from ray.util import metrics as m
        except ImportError:  # pragma: no cover - Ray is a dependency; keep the rules importable without it
            self.enabled = False
            return
        self.enabled = True
        tags = ("queue", "type")
        self.enqueued = m.Counter("dojo_jobs_enqueued", "jobs added to a queue", tags)
        self.started = m.Counter("dojo_jobs_started", "attempts started", tags)
        self.succeeded = m.Counter("dojo_jobs_succeeded", "jobs that succeeded", tags)
        self.failed = m.Counter("dojo_jobs_failed", "jobs that failed for good (no attempts left)", tags)
        self.run_seconds = m.Histogram("dojo_job_run_seconds", "run time of one attempt", RUN_BOUNDS, tags)
        self.wait_seconds = m.Histogram("dojo_job_wait_seconds", "time from queued to started", WAIT_BOUNDS, tags)
        self.depth_gauge = m.Gauge("dojo_queue_depth", "jobs in the queue by status", ("queue", "status"))
        self.lag = m.Histogram("dojo_event_fanout_lag_seconds", "from an event's commit to its hand-off to a "
                               "subscriber", LAG_BOUNDS, ("queue",))

    def observe(self, events: list[dict]) -> None:
        """Count the committed events of one batch (status changes only)."""
        if not self.enabled:
            return
        try:
            for event in events:
                if event["kind"] == "status":
                    self._status(event)
        except Exception:  # metrics must never break the queue
            log.exception("metrics of queue %s failed", self.queue)

    def _status(self, event: dict) -> None:
        data = event["data"]
        job_id, status, at = data.get("job_id"), data.get("status"), event["at"]
        tags = {"queue": self.queue, "type": str(data.get("type"))}
        if status in ("queued", "scheduled") and not data.get("attempt") and not data.get("retried"):
            self.enqueued.inc(1, tags)
        if status == "queued":
            self._remember(self._queued_at, job_id, at)
        elif status == "running":
            self.started.inc(1, tags)
            queued = self._queued_at.pop(job_id, None)
            if queued is not None:
                self.wait_seconds.observe(max(0.0, at - queued), tags)
            self._remember(self._started_at, job_id, at)
        if status in ENDED:
            started = self._started_at.pop(job_id, None)
            if started is not None:
                self.run_seconds.observe(max(0.0, at - started), tags)
        if status == "succeeded":
            self.succeeded.inc(1, tags)
        elif status == "failed":
            self.failed.inc(1, tags)
        if status in ("succeeded", "failed", "cancelled", "expired"):
            self._queued_at.pop(job_id, None)

    @staticmethod
    def _remember(table: dict, job_id: str, at: float) -> None:
        if len(table) >= TRACK_MAX:
            table.pop(next(iter(table)))
        table[job_id] = at

    def depth(self, counts: dict[str, int]) -> None:
        if self.enabled:
            for status, n in counts.items():
                self.depth_gauge.set(n, {"queue": self.queue, "status": status})

    def fanout_lag(self, seconds: float) -> None:
        if self.enabled:
            self.lag.observe(max(0.0, seconds), {"queue": self.queue})
