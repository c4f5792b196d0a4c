"""Job types for the isolation tests: each one reacts to a stop in a different way.

Loaded by the runners of the tests' own queues (``DOJO_JOB_MODULES``), so the
shared sample types stay as users know them.
"""

from __future__ import annotations

import subprocess
import time

from actors.jobs import job


def _child(ctx, payload) -> dict:
    """Spawn ``sleep`` and wait for it without looking at ``ctx``: only killing the child ends it early."""
    if not payload.get("block"):
        time.sleep(float(payload.get("seconds", 0)))
        return {"pid": None}
    child = subprocess.Popen(["sleep", str(payload["block"])])
    ctx.progress(0.0, stage="child", pid=child.pid)
    child.wait()
    return {"pid": child.pid}


def _stubborn(ctx, payload) -> dict:
    """Ignores ``ctx.cancelled`` and has no child to kill: only the process's end stops it."""
    if payload.get("block"):
        ctx.progress(0.0, stage="blocking")
    time.sleep(float(payload.get("block") or payload.get("seconds", 0)))
    return {}


threaded_child = job("iso_threaded_child", max_attempts=1, num_cpus=0.25, threads=8)(_child)
serial_child = job("iso_serial_child", max_attempts=1, num_cpus=0.25)(_child)
threaded_stubborn = job("iso_threaded_stubborn", max_attempts=1, num_cpus=0.25, threads=8)(_stubborn)
serial_stubborn = job("iso_serial_stubborn", max_attempts=1, num_cpus=0.25)(_stubborn)
#: Each attempt in a runner process of its own: ending that process after the grace harms nobody.
alone_stubborn = job("iso_alone_stubborn", max_attempts=1, num_cpus=0.25, isolation="process")(_stubborn)
