"""RQ peer: 2 ``rq worker`` processes (the default Worker, a forked work horse per job).

Jobs are enqueued with ``Retry(max=3)`` so a job abandoned by a killed worker is re-run,
and a 5 s job timeout; RQ notices an abandoned job when its heartbeat (timeout + 60 s)
expires at the next registry maintenance, which the kill test runs every 5 s.
"""

import os
import time

import redis

import marks

_client = None


def mark(folder, i):
    marks.mark(folder, i)


def nap(folder, i, seconds):
    marks.nap(folder, i, seconds)


def stamp(key, i):
    global _client
    started = time.time()
    if _client is None:
        _client = redis.Redis.from_url(os.environ["REDIS_URL"])
    _client.rpush(key, f"{i} {started!r}")
