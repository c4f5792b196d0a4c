"""What a queue did, as numbers: Prometheus metrics (through Ray) and windowed statistics.

Two halves:

* ``QueueMetrics`` feeds Ray's metrics (exported by every Ray node in Prometheus
  format, see ``deploy/grafana/dojo.json``). The queue actor calls
  ``observe(events)`` with each committed batch of events, ``depth(counts)``
  from its tick, and ``fanout_lag(seconds)`` when it hands a batch to a
  subscriber. It learns everything from the events, so it never touches the
  queue's rules. Names: ``dojo_jobs_enqueued``, ``dojo_jobs_started``,
  ``dojo_jobs_succeeded``, ``dojo_jobs_failed`` (counters; Prometheus adds
  ``_total``), ``dojo_queue_depth`` (gauge by status), ``dojo_job_run_seconds``,
  ``dojo_job_wait_seconds``, ``dojo_event_fanout_lag_seconds`` (histograms).
  Tags: ``queue`` and ``type`` (``status`` on the depth gauge).
* ``window_stats`` and ``series`` read one queue's SQLite store (no Ray):
  throughput, failure rate, run-time percentiles and per-minute counts over a
  recent window, for the dashboard.
"""

from __future__ import annotations

import logging
import math

import orjson

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


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (0..100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def window_stats(db, since: float, now: float, sample: int = 5000) -> dict:
    """Throughput, failure rate and run-time percentiles of jobs that ended in [since, now].

    ``db`` is the queue's sqlite3 connection. Counts come from status events;
    run times from the attempt history of at most ``sample`` recent jobs.
    """
    from .store import gseq_since, recently_finished

    first = gseq_since(db, since)  # the window's events by primary-key range, not the whole table
    rows = db.execute(
        "SELECT json_extract(data, '$.status'), count(*) FROM events "
        "WHERE gseq>? AND kind='status' AND at>=? AND at<=? GROUP BY 1", (first, since, now)).fetchall()
    by_status = {s: n for s, n in rows if s}
    succeeded, failed = by_status.get("succeeded", 0), by_status.get("failed", 0)
    enqueued = db.execute(
        "SELECT count(*) FROM events WHERE gseq>? AND kind='status' AND at>=? AND at<=? AND seq=1",
        (first, since, now)).fetchone()[0]
    durations = []
    for job in recently_finished(db, since, ("succeeded", "failed"), sample):
        for attempt in job.get("history") or ():
            if attempt.get("ended_at", 0) >= since and attempt.get("duration") is not None:
                durations.append(attempt["duration"])
    ended = succeeded + failed
    hours = max(now - since, 1.0) / 3600
    return {
        "since": since, "until": now, "enqueued": enqueued, "succeeded": succeeded, "failed": failed,
        "cancelled": by_status.get("cancelled", 0), "retried": by_status.get("retrying", 0),
        "throughput_per_hour": round(ended / hours, 3),
        "failure_rate": round(failed / ended, 4) if ended else None,
        "run_p50": percentile(durations, 50), "run_p95": percentile(durations, 95),
    }


def series(db, since: float, now: float, bucket: float = 60.0) -> dict:
    """Per-bucket counts of jobs enqueued, succeeded and failed in [since, now] (for the charts)."""
    from .store import gseq_since

    bucket = max(1.0, float(bucket))
    n = max(1, math.ceil((now - since) / bucket))
    out = {k: [0] * n for k in ("enqueued", "succeeded", "failed")}
    rows = db.execute(
        "SELECT CAST((at - ?) / ? AS INTEGER), json_extract(data, '$.status'), seq, count(*) FROM events "
        "WHERE gseq>? AND kind='status' AND at>=? AND at<=? GROUP BY 1, 2, seq=1",
        (since, bucket, gseq_since(db, since), since, now))
    for index, status, seq, count in rows:
        index = min(max(int(index), 0), n - 1)
        if seq == 1:
            out["enqueued"][index] += count
        if status in ("succeeded", "failed"):
            out[status][index] += count
    return {"since": since, "bucket": bucket, **out}
