"""What the integration tests share: a fresh queue actor each, and waiting that outlasts an actor restart."""

from __future__ import annotations

import time

import ray

from actors.facade import queue_actor


def new_queue(settings, tag: str):
    """A queue of its own (``tag`` and a clock suffix), its actor started: ``(name, actor)``."""
    name = f"{tag}{time.time_ns() % 10**8}"
    actor = queue_actor(name, settings)
    ray.get(actor.ping.remote())
    return name, actor


def get_job(actor, job_id: str) -> dict | None:
    """The job, or None while its queue actor is restarting."""
    try:
        return ray.get(actor.get.remote(job_id), timeout=30)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def wait_until(predicate, what: str, limit: float = 90.0, every: float = 0.1):
    """``predicate()``'s first truthy value within ``limit`` seconds; else an AssertionError naming ``what``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what}")


def wait_for_job(actor, job_id: str, ok, what: str, limit: float = 120.0, every: float = 0.1) -> dict:
    """The job once ``ok(job)`` holds, asking through actor restarts; else an AssertionError with its last state."""
    try:
        return wait_until(lambda: (lambda job: job if job is not None and ok(job) else None)(get_job(actor, job_id)),
                          what, limit, every)
    except AssertionError:
        raise AssertionError(f"job {job_id} never {what}: {get_job(actor, job_id)}") from None
