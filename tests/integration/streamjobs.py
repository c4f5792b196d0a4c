"""Job types for the attempt-stream tests: jobs that report progress and log lines as fast as they can.

Loaded by the runners of the tests' own queues (``DOJO_JOB_MODULES``).
"""

from __future__ import annotations

from actors.jobs import job


def _emit(ctx, payload) -> dict:
    """``n`` progress reports, each followed by a ``ctx.log`` line and a printed line; then return."""
    n = payload["n"]
    for i in range(n):
        ctx.progress(i / n, stage="step", i=i)
        ctx.log(f"log {i}")
        print(f"out {i}")
    return {"n": n}


job("chatty", max_attempts=1)(_emit)
job("chatty-threads", max_attempts=1, threads=4)(_emit)  # several at once: their streams share one outbox
