"""Job types for the flow and restart tests (loaded by the runners of the tests' own queues)."""

from __future__ import annotations

import json
import os
import signal
import time

import ray

from actors.jobs import job


def _children_done(ctx, payload, outcomes: list) -> dict:
    return {"children": len(outcomes), "succeeded": sum(o["status"] == "succeeded" for o in outcomes),
            "distinct": len({o["id"] for o in outcomes})}


@job("it_fan_out", max_attempts=1, on_children_done=_children_done)
def fan_out(ctx, payload):
    """Enqueues ``children`` echo jobs in one ``ctx.enqueue_many`` call, whatever their number."""
    children = ctx.enqueue_many([{"type": "echo", "payload": i} for i in range(payload["children"])])
    return {"enqueued": len(children)}


@job("it_long", max_attempts=2, num_cpus=0.25)
def long(ctx, payload):
    """Runs ``seconds`` without reporting anything: only the background heartbeat keeps its lease."""
    ctx.progress(0.0, stage="started")
    time.sleep(float(payload["seconds"]))
    return {"pid": os.getpid()}


def _record_callback(ctx, payload, outcomes: list) -> dict:
    """Writes one line per run to ``payload["log"]``: how many children it saw and their statuses."""
    with open(payload["log"], "a") as fh:
        fh.write(json.dumps({"callback": len(outcomes), "statuses": sorted({o["status"] for o in outcomes}),
                             "distinct": len({o["id"] for o in outcomes})}) + "\n")
    return {"children": len(outcomes)}


def _actor_pid(actor) -> int:
    """The queue actor's pid, once it answers (it may be restarting)."""
    while True:
        try:
            return ray.get(actor.ping.remote(), timeout=30)["pid"]
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            time.sleep(0.1)


@job("it_fan_out_killing", max_attempts=1, on_children_done=_record_callback)
def fan_out_killing(ctx, payload):
    """Enqueues ``chunks`` × ``size`` echo children; SIGKILLs its queue actor right after each chunk commits.

    The kill lands between the children's commit and anything else the actor would do (the parent's
    next save, a child's report), then the job waits for the restarted actor before the next chunk.
    """
    from actors.ids import actor_name
    from actors.settings import NAMESPACE

    actor = ray.get_actor(actor_name(ctx.queue), namespace=NAMESPACE)
    pids = []
    for chunk in range(payload["chunks"]):
        pid = _actor_pid(actor)
        ctx.enqueue_many([{"type": "echo", "payload": [chunk, i], "unique_key": f"{ctx.job_id}:{chunk}:{i}"}
                          for i in range(payload["size"])])
        os.kill(pid, signal.SIGKILL)
        pids.append(pid)
        while _actor_pid(actor) == pid:
            time.sleep(0.05)
    with open(payload["log"], "a") as fh:
        fh.write(json.dumps({"killed": pids}) + "\n")
    return {"kills": len(pids)}
