"""Job types for the attempt-stream tests: chatty jobs (progress and lines as fast as they can) and a quiet one.

Loaded by the runners of the tests' own queues (``DOJO_JOB_MODULES``).
"""

from __future__ import annotations

import time

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


@job("quiet-then-progress", max_attempts=1)
def quiet_then_progress(ctx, payload) -> dict:
    """Quiet long enough for the heartbeat to be long-polling, then one progress report, then quiet again."""
    time.sleep(payload["quiet"])
    ctx.progress(0.5, stage="late", sent_at=time.time())
    time.sleep(payload["quiet"])
    return {}
