"""The Ray task that runs jobs: leases a batch, runs it, reports, leases more.

The queue actor launches one ``run_jobs`` task per free slot of a job type,
with that type's resources; it never starts one Ray task per queued job. The
task pulls work from the actor, so one actor call both reports the finished
batch and leases the next one, and batches grow when jobs are quick (a no-op
batch carries hundreds of jobs; a render carries one). What an attempt reports
while it runs (``ctx.progress``, ``ctx.log``, its printed output) goes to the
runner's outbox, one ordered stream per attempt (``actors/outbox.py``). An idle runner lingers
briefly for new work, then exits, freeing its worker for the autoscaler.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import ray

from .durable import Suspend
from .heartbeat import Heartbeat
from .ids import LANE_SEP, actor_name
from .jobs import JobCancelled, JobContext, PermanentFailure, load_modules
from . import tracing
from .stopping import install_spawn_hook
from .settings import NAMESPACE, scrub_job_secrets

log = logging.getLogger(__name__)

#: Aim for batches that take about this long, so reports stay prompt.
BATCH_TARGET_S = 0.02
MAX_BATCH = 256
LINGER_S = 0.5
#: Captured stdout/stderr per attempt: at most this many bytes reach the job's log.
LOG_CAPTURE_BYTES = 256 * 1024


class _Reporter:
    """One attempt's progress and log lines go to the runner's outbox, in order (actors/outbox.py)."""

    def __init__(self, actor, lease: dict, heartbeat: Heartbeat):
        self.actor = actor
        self.lease = lease
        self.token = lease["token"]
        self.link = heartbeat  # the runner's sender thread (actors/heartbeat.py)
        self.outbox = heartbeat.stream

    def progress(self, event: dict) -> None:
        self.outbox.progress(self.token, self.lease["job_id"], event)

    def heartbeat(self) -> None:
        ray.get(self.actor.stream.remote([], [self.token]))  # carries no items: it cannot reorder any

    def log(self, line: str) -> None:
        self.outbox.log(self.token, self.lease["job_id"], [line])

    def enqueue(self, specs: list[dict]) -> list[dict]:
        specs = [{**spec, "parent_id": self.lease["job_id"]} for spec in tracing.child_specs(specs)]
        return ray.get(self.actor.enqueue.remote(specs))

    #: Sleeps and waits end the attempt and hand the wait to the queue (see actors/durable.py).
    durable = True

    def step(self, index: int, name: str, result) -> None:
        self.link.flush()  # the step's event comes after the attempt's earlier items
        _call(self.actor.record_step, self.token, self.lease["job_id"], index, name, result)


class _OutputCapture:
    """A file-like stream that forwards whole lines of one attempt's output to its log events.

    Installed (through ``_Routed``) as the attempt thread's ``sys.stdout`` /
    ``sys.stderr`` while the attempt runs. Each whole line goes to the
    attempt's stream in the runner's outbox, in order with its ``ctx.log``
    lines and progress (the outbox batches them), and is copied to the
    original stream so Ray's worker logs keep it. After ``LOG_CAPTURE_BYTES``
    one notice is sent and the rest is only copied.
    """

    def __init__(self, send, original, prefix: str = "", shared: dict | None = None):
        self.send = send
        self.original = original
        self.prefix = prefix
        self.shared = shared if shared is not None else {"bytes": 0, "lock": threading.Lock(), "lines": [],
                                                          "capped": False}
        self.partial = ""

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            text = str(text)
        try:
            self.original.write(text)
        except Exception:  # noqa: BLE001  (a closed original must not fail the job)
            pass
        state = self.shared
        with state["lock"]:
            data = self.partial + text
            *lines, self.partial = data.split("\n")
            for line in lines:
                self._add(line)
            if len(self.partial) > 4000:
                self._add(self.partial)
                self.partial = ""
        self._send()
        return len(text)

    def _add(self, line: str) -> None:
        state = self.shared
        if state["capped"]:
            return
        size = len(line.encode("utf-8", "replace")) + 1
        if state["bytes"] + size > LOG_CAPTURE_BYTES:
            state["capped"] = True
            state["lines"].append(f"[dojo] output over {LOG_CAPTURE_BYTES} bytes; the rest is not captured")
            return
        state["bytes"] += size
        state["lines"].append(self.prefix + line.rstrip("\r"))

    def _send(self) -> None:
        state = self.shared
        with state["lock"]:
            lines, state["lines"] = state["lines"], []
        if lines:
            try:
                self.send(lines)
            except Exception:  # noqa: BLE001  (logging must never fail the job)
                pass

    def flush(self) -> None:
        self._send()
        try:
            self.original.flush()
        except Exception:  # noqa: BLE001
            pass

    def close_attempt(self) -> None:
        """Send the unfinished last line and whatever is buffered."""
        with self.shared["lock"]:
            if self.partial:
                self._add(self.partial)
                self.partial = ""
        self.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.original, "encoding", "utf-8")


def _capture_output(reporter: _Reporter):
    """(stdout, stderr) capturing streams for one attempt; stderr lines are marked ``[stderr]``."""
    def send(lines: list[str]) -> None:
        reporter.outbox.log(reporter.token, reporter.lease["job_id"], lines)

    # The process's own streams: after a first attempt they are _Routed, and copying a line there would
    # route it back into this capture (every line hundreds of times, until the recursion gave out).
    stdout, stderr = (getattr(stream, "original", stream) if isinstance(stream, _Routed) else stream
                      for stream in (sys.stdout, sys.stderr))
    out = _OutputCapture(send, stdout)
    err = _OutputCapture(send, stderr, "[stderr] ", out.shared)
    return out, err


def _set_child_subreaper() -> None:
    """Make orphaned grandchildren re-parent to this worker, so a kill finds them."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


class _Routed:
    """``sys.stdout``/``sys.stderr`` for a runner: each thread's writes go to its attempt's capture."""

    def __init__(self, original):
        self.original = original
        self.local = threading.local()

    def write(self, text) -> int:
        return (getattr(self.local, "target", None) or self.original).write(text)

    def flush(self) -> None:
        (getattr(self.local, "target", None) or self.original).flush()

    def __getattr__(self, name):
        return getattr(self.original, name)


def _route_output(capture) -> None:
    """Send this thread's stdout/stderr to ``capture`` (a pair), or back to the process's streams."""
    if not isinstance(sys.stdout, _Routed):
        sys.stdout = _Routed(sys.stdout)
    if not isinstance(sys.stderr, _Routed):
        sys.stderr = _Routed(sys.stderr)
    sys.stdout.local.target, sys.stderr.local.target = capture if capture else (None, None)


def execute(actor, lease: dict, registry, heartbeat: Heartbeat) -> dict | None:
    """Run one leased attempt and queue its report with the heartbeat; return the report (never raises).

    None if the runner retired before the attempt began (the heartbeat gives the lease back). The
    attempt is registered in ``stopping.ATTEMPTS`` while it runs: that is how a stop finds its cancel
    event and the child processes it spawned, and what the heartbeat extends.
    """
    cancelled = threading.Event()
    attempt = heartbeat.claim(lease, cancelled)
    if attempt is None:
        return None
    heartbeat.wake.set()
    job_type = registry.get(lease["type"])
    reporter = _Reporter(actor, lease, heartbeat)
    ctx = JobContext(job_id=lease["job_id"], type=lease["type"], queue=lease["queue"], attempt=lease["attempt"],
                     max_attempts=lease["max_attempts"], reporter=reporter, cancelled=cancelled,
                     steps=lease.get("steps"))
    report = {"token": lease["token"], "job_id": lease["job_id"], "type": lease["type"]}
    started = time.perf_counter()
    capture = _capture_output(reporter)
    _route_output(capture)
    traced = tracing.attempt_span(lease)  # the attempt's span (a no-op unless tracing is configured)
    ctx.span = traced.__enter__()
    try:
        if job_type is None or job_type.perform is None:
            raise PermanentFailure(f"job type {lease['type']!r} is not registered in this worker; "
                                   "add its module to DOJO_JOB_MODULES")
        if lease.get("phase") == "callback":
            outcomes = ray.get(actor.children.remote(lease["job_id"]))
            report["result"] = job_type.on_children_done(ctx, lease["payload"], outcomes)
        else:
            report["result"] = job_type.perform(ctx, lease["payload"])
        report["outcome"] = "succeeded"
    except Suspend as suspended:  # a durable sleep or wait: the attempt ends, the job is not failed
        report.update(outcome="suspended", until=suspended.until, wait=suspended.wait, step=suspended.step)
    except BaseException as exc:  # noqa: BLE001  (a job's failure is data)
        report["outcome"] = "failed"
        report["retry"] = not isinstance(exc, (PermanentFailure, JobCancelled)) and getattr(exc, "retryable", True)
        report["error"] = {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__,
                           "traceback": traceback.format_exc(limit=20)[-8000:]}
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
    finally:
        report["duration"] = time.perf_counter() - started
        ctx.span.set_attribute("dojo.outcome", report.get("outcome", "interrupted"))
        if report.get("outcome") == "failed":
            ctx.span.set_status(tracing.error_status(report["error"]["message"]))
        traced.__exit__(None, None, None)
        _route_output(None)
        for stream in capture:
            stream.close_attempt()
        # Queued after the attempt's last items: the lease call that carries it sends them first.
        heartbeat.finish(attempt, report)
    return report


def _adopt_env(env: dict[str, str] | None) -> None:
    """This process's DOJO_* settings become exactly the queue's.

    Ray reuses a worker process for other tasks, so a runner of one queue may start where another
    queue's runner ran: a setting only that queue had (DOJO_CLIPS_DB, DOJO_HELIX_URL, ...) must not
    stay behind and steer this queue's jobs.
    """
    if env is None:
        return
    for name in [name for name in os.environ if name.startswith("DOJO_") and name not in env]:
        del os.environ[name]
    os.environ.update(env)


@ray.remote(max_retries=0)
def run_jobs(queue: str, runner_id: str, lane: str, lease_ttl: float, modules: tuple[str, ...],
             env: dict[str, str] | None = None) -> int:
    """Lease and run jobs of one lane (a type and its resources) until none are left; returns how many ran."""
    _adopt_env(env)
    scrub_job_secrets()  # a Ray worker inherits the raylet's environment, tokens included
    os.environ["DOJO_CURRENT_QUEUE"] = queue
    _set_child_subreaper()
    install_spawn_hook()
    registry = load_modules(modules)
    actor = ray.get_actor(actor_name(queue), namespace=NAMESPACE)
    heartbeat = Heartbeat(actor, runner_id, lane, max(0.2, lease_ttl / 3), _call)
    heartbeat.start()
    heartbeat.node, heartbeat.pid = ray.get_runtime_context().get_node_id(), os.getpid()
    job_type = registry.get(lane.partition(LANE_SEP)[0])
    try:
        if job_type is not None and job_type.threads > 1:
            return _run_threaded(actor, registry, heartbeat, job_type.threads)
        alone = job_type is not None and job_type.isolation == "process"
        return _run_serial(actor, registry, heartbeat, MAX_BATCH if not alone else 1)
    finally:
        heartbeat.stopped.set()
        heartbeat.wake.set()


def _run_serial(actor, registry, heartbeat: Heartbeat, most: int) -> int:
    """One job at a time; one actor call reports a batch and leases the next (batches grow for quick jobs).

    The batch's unstarted leases are held by the heartbeat, so a retiring runner gives them back.
    """
    want, ran = 1, 0
    while True:
        leases = heartbeat.lease(want, LINGER_S)
        if not leases:
            if heartbeat.retiring.is_set():
                heartbeat.park()
            return ran
        started = time.perf_counter()
        for lease in leases:
            if execute(actor, lease, registry, heartbeat) is None:
                heartbeat.park()  # retiring: the rest of the batch is given back
        ran += len(leases)
        per_job = (time.perf_counter() - started) / len(leases)
        want = max(1, min(most, int(BATCH_TARGET_S / max(per_job, 1e-6))))


def _run_threaded(actor, registry, heartbeat: Heartbeat, threads: int) -> int:
    """Up to ``threads`` jobs at once; as soon as one finishes it is reported and another leased.

    No job waits for the slowest of a batch: the pipeline stays full.
    """
    ran = 0
    in_flight: set = set()
    called = 0.0
    with ThreadPoolExecutor(threads, thread_name_prefix="dojo-job") as pool:
        while True:
            if heartbeat.retiring.is_set() and not in_flight:
                heartbeat.park()
            free = threads - len(in_flight)
            # Report and refill when half the threads are free (or a batch is getting old), so quick
            # jobs share actor calls while slow ones are never held back for long.
            if free > 0 and not heartbeat.retiring.is_set() and (
                    not in_flight or free * 2 >= threads or time.monotonic() - called > BATCH_TARGET_S):
                # Long-poll for work only when idle; otherwise just take what is ready now.
                leases = heartbeat.lease(free, 0.0 if in_flight else LINGER_S)
                called = time.monotonic()
                for lease in leases:
                    in_flight.add(pool.submit(execute, actor, lease, registry, heartbeat))
                if not in_flight:
                    if heartbeat.retiring.is_set():
                        heartbeat.park()
                    return ran
            done, in_flight = wait(in_flight, timeout=BATCH_TARGET_S, return_when=FIRST_COMPLETED)
            ran += sum(future.result() is not None for future in done)


def _call(method, *args, attempts: int = 60):
    """Call the actor, riding out a restart (the calls are idempotent by lease token)."""
    for attempt in range(attempts):
        try:
            return ray.get(method.remote(*args))
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            if attempt == attempts - 1:
                raise
            log.warning("queue actor unavailable (%s); retrying", type(exc).__name__)
            time.sleep(min(2.0, 0.1 * (attempt + 1)))
