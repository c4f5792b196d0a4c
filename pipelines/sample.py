"""Small job types for trying dojo out, for tests and for benchmarks."""

from __future__ import annotations

import os
import subprocess
import time

from actors.exceptions import InvalidInput
from actors.jobs import PermanentFailure, external_job, job


@job("noop", max_attempts=1, num_cpus=1)
def noop(ctx, payload):
    """Does nothing: measures the queue itself."""
    return None


@job("echo", max_attempts=1)
def echo(ctx, payload):
    return payload


def _check_sleep(payload):
    if not isinstance(payload, dict) or not isinstance(payload.get("seconds"), (int, float)) \
            or payload["seconds"] < 0 or payload["seconds"] > 86400:
        raise InvalidInput("sleep needs a payload like {'seconds': 1.5} with 0 <= seconds <= 86400")


@job("sleep", max_attempts=1, num_cpus=0.5, validate=_check_sleep)
def sleep(ctx, payload):
    """Sleeps, in-process or in a child process (``{"seconds": 5, "subprocess": true}``)."""
    seconds = float(payload["seconds"])
    ctx.progress(0.0, stage="started", pid=os.getpid())
    if payload.get("subprocess"):
        child = subprocess.Popen(["sleep", str(seconds)])
        ctx.log(f"child pid {child.pid}")
        ctx.progress(0.0, stage="sleeping", message=f"child {child.pid}", pid=child.pid)
        child.wait()
        return {"slept": seconds, "pid": child.pid}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    return {"slept": seconds, "pid": os.getpid()}


@job("flaky", max_attempts=5, retry_delay=0.05, retry_jitter=0)
def flaky(ctx, payload):
    """Fails until attempt ``payload['succeed_on']`` (default 2); ``permanent`` fails without retrying."""
    payload = payload or {}
    if payload.get("permanent"):
        raise PermanentFailure("this job was told to fail permanently")
    if ctx.attempt < payload.get("succeed_on", 2):
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
    return {"attempt": ctx.attempt}


@job("countdown", max_attempts=3, num_cpus=0.5)
def countdown(ctx, payload):
    """The sample job with visible progress: counts down ``steps`` steps of ``interval`` seconds."""
    payload = payload or {}
    steps = int(payload.get("steps", 10))
    interval = float(payload.get("interval", 0.3))
    for step in range(steps):
        ctx.check_cancelled()
        ctx.progress(step / steps, stage="counting", message=f"step {step + 1}/{steps}")
        time.sleep(interval)
    ctx.progress(1.0, stage="done", message=f"{steps} steps")
    return {"steps": steps}


@job("progress", max_attempts=1, num_cpus=0.5)
def progress(ctx, payload):
    """Reports ``count`` progress events as fast as it can, ``pause`` seconds apart (event latency bench)."""
    payload = payload or {}
    count = int(payload.get("count", 10))
    pause = float(payload.get("pause", 0.0))
    for i in range(count):
        ctx.progress((i + 1) / count, stage="tick", message=str(i), sent_at=time.time())
        if pause:
            time.sleep(pause)
    return {"count": count}


@job("fanout", max_attempts=1, num_cpus=0.25)
def fanout(ctx, payload):
    """A flow in one job: enqueues ``count`` ``echo`` children (each echoes its index) and returns their ids."""
    count = int((payload or {}).get("count", 2))
    children = ctx.enqueue_many([{"type": "echo", "payload": i, "unique_key": f"{ctx.job_id}:{i}"}
                                 for i in range(count)])
    return {"children": [child["id"] for child in children]}


#: Run by workers outside Ray through the pull API (POST /v1/queues/default/lease).
outside = external_job("outside", max_attempts=3)


@job("stamp", max_attempts=1, num_cpus=0.5)
def stamp(ctx, payload):
    """Returns when it started (dispatch latency bench)."""
    return {"started": time.time()}


@job("nap", max_attempts=3, num_cpus=0.25, threads=8, validate=_check_sleep)
def nap(ctx, payload):
    """I/O-bound sample: waits ``seconds`` on a thread; a runner naps 8 at once."""
    time.sleep(float(payload["seconds"]))
    return None


@job("durable_nap", max_attempts=1, num_cpus=0.25)
def durable_nap(ctx, payload):
    """Sleeps ``seconds`` durably (the job holds no runner meanwhile), then answers how late it woke."""
    until = ctx.sleep(float(payload["seconds"]))
    return {"late_s": time.time() - until}


@job("steps", max_attempts=1, num_cpus=0.25)
def steps(ctx, payload):
    """``n`` durable steps around nothing (a step's cost); ``n: 0`` is the same job without steps."""
    started = time.perf_counter()
    for i in range(int(payload.get("n", 0))):
        ctx.step(f"s{i}", lambda: None)
    return {"steps_s": time.perf_counter() - started}
