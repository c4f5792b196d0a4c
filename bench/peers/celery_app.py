"""Celery peer: prefork pool, settings from Celery's docs for reliable short tasks.

- ``task_acks_late`` + ``task_reject_on_worker_lost``: acknowledge after the task ran
  (what the docs advise when a lost task matters; dojo acknowledges after the run too).
- ``worker_prefetch_multiplier = 4``: the default, which the docs keep for many short tasks.
- results ignored (no result backend), as the docs advise when results are not used.
- Redis ``visibility_timeout`` 10 s (default 1 h) and a 1 s restore sweep, so unacknowledged
  messages of a killed worker come back within the kill test's wait, like dojo's 5 s lease.
"""

import os

from celery import Celery

import marks

app = Celery("bench", broker=os.environ["REDIS_URL"])
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 10, "unacked_restore_interval": 1,
                              "unacked_restore_throttle": 1},
    worker_hijack_root_logger=False,
)


@app.task(name="mark")
def mark(folder, i):
    marks.mark(folder, i)


@app.task(name="nap")
def nap(folder, i, seconds):
    marks.nap(folder, i, seconds)


@app.task(name="stamp")
def stamp(key, i):
    import time

    started = time.time()
    _redis().rpush(key, f"{i} {started!r}")


_client = None


def _redis():
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _client
