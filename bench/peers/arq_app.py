"""arq peer: ``arq arq_app.WorkerSettings`` in 2 processes, default ``max_jobs`` (10) and
``poll_delay`` (0.5 s). ``job_timeout`` is 10 s (default 300 s): arq re-runs a job whose worker
died only when its in-progress key expires (job_timeout + 10 s), so this keeps the kill test's
recovery within its wait; no job here runs near that long.
"""

import os
import time

from arq.connections import RedisSettings

import marks


async def mark(ctx, folder, i):
    marks.mark(folder, i)


async def nap(ctx, folder, i, seconds):
    import asyncio

    await asyncio.sleep(seconds)
    marks.mark(folder, i)


async def stamp(ctx, key, i):
    started = time.time()
    await ctx["redis"].rpush(key, f"{i} {started!r}")


class WorkerSettings:
    functions = [mark, nap, stamp]
    redis_settings = RedisSettings.from_dsn(os.environ["REDIS_URL"])
    job_timeout = 10


if __name__ == "__main__":
    # `arq arq_app.WorkerSettings` with arq's CLI logging config prints every job at INFO; the bench
    # runs every system without per-job log lines, so start the worker the documented Python way.
    from arq import run_worker

    run_worker(WorkerSettings)
