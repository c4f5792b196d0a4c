"""Job types for the flow and restart tests (loaded by the runners of the tests' own queues)."""

from __future__ import annotations

import os
import time

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
