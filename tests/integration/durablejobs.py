"""Job types for the durable step, sleep and wait tests (loaded by the runners of the tests' own queues).

Each step's function appends a line to ``<dir>/<step>.runs``: the test counts how often it really ran.
"""

from __future__ import annotations

import time
from pathlib import Path

from actors.durable import WaitTimeout
from actors.jobs import job


def _ran(folder: str, name: str, attempt: int) -> str:
    with open(Path(folder) / f"{name}.runs", "a", encoding="utf-8") as out:
        out.write(f"{attempt}\n")
    return f"{name} by attempt {attempt}"


@job("it_three_steps", max_attempts=3, num_cpus=0.25, isolation="process")
def three_steps(ctx, payload):
    """Steps 1 and 2 return at once; step 3 waits for the test to kill this worker on the first attempt."""
    first = ctx.step("fetch", _ran, payload["dir"], "fetch", ctx.attempt)
    second = ctx.step("transform", _ran, payload["dir"], "transform", ctx.attempt)

    def publish():
        if ctx.attempt == 1:
            time.sleep(120)  # killed here by the test
        return _ran(payload["dir"], "publish", ctx.attempt)

    return {"fetch": first, "transform": second, "publish": ctx.step("publish", publish)}


@job("it_sleeper", max_attempts=1, num_cpus=0.25)
def sleeper(ctx, payload):
    before = ctx.step("before", _ran, payload["dir"], "before", ctx.attempt)
    until = ctx.step("until", lambda: time.time() + payload["seconds"])
    ctx.sleep_until(until)
    return {"before": before, "until": until, "woke_at": time.time()}


@job("it_approval", max_attempts=1, num_cpus=0.25)
def approval(ctx, payload):
    ctx.step("prepared", _ran, payload["dir"], "prepared", ctx.attempt)
    try:
        message = ctx.wait_for("approvals", match={"job": ctx.job_id}, timeout=payload.get("timeout"))
    except WaitTimeout:
        return {"approved": None, "timed_out": True}
    return {"approved": message, "timed_out": False}


@job("it_renamed_steps", max_attempts=2, num_cpus=0.25, isolation="process")
def renamed_steps(ctx, payload):
    """The second attempt names its first step differently: the job must fail, not mix up results."""
    ctx.step("one" if ctx.attempt == 1 else "uno", lambda: 1)
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails after its first step")
    return "unreachable"
