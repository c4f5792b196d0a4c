"""Dramatiq peer: RedisBroker with its defaults (acks after the actor ran, retries on),
run as ``dramatiq dramatiq_app --processes 2`` with the default 8 threads each.

``heartbeat_timeout`` is 5 s (default 60 s) so messages of killed workers are requeued
within the kill test's wait, like dojo's 5 s lease; in the kill test only, queue
maintenance (which does that requeue) runs on 10% of commands instead of 0.1%.
"""

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

import marks

broker = RedisBroker(url=os.environ["REDIS_URL"], heartbeat_timeout=5000,
                     maintenance_chance=100_000 if os.environ.get("BENCH_KILL") else 1000)
dramatiq.set_broker(broker)
_client = redis.Redis.from_url(os.environ["REDIS_URL"])


@dramatiq.actor(queue_name="bench")
def mark(folder, i):
    marks.mark(folder, i)


@dramatiq.actor(queue_name="bench")
def nap(folder, i, seconds):
    marks.nap(folder, i, seconds)


@dramatiq.actor(queue_name="bench")
def stamp(key, i):
    started = time.time()
    _client.rpush(key, f"{i} {started!r}")
