"""Every limit on how fast or how much work goes out, in one place.

- ``buckets.py``: named token buckets (a rate and a burst; paused by a remote API's "slow down"),
  persisted with the queue's state. The queue actor grants their tokens.
- ``places.py``: in-flight places (at most N requests at once to one host), held by the actor in memory.
- ``shared.py``: ``SharedLimiter``, the worker's side of both: tokens and places leased from the actor
  in batches, shared by every attempt of a process. It uses Ray, so it is loaded only when asked for.
- ``handoff.py``: the first-come, first-served line of waiters across threads and event loops that the
  worker's side (and the crawler's ``pipelines/clips/limits.py``) hand freed capacity through.

Job concurrency (``concurrency_key``, groups, throttles) is part of dispatch: ``actors/queue.py``,
``actors/groups.py`` and ``actors/admission.py``.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "SharedLimiter":  # Ray comes with it: the queue's rules import this package without Ray
        from .shared import SharedLimiter
        return SharedLimiter
    raise AttributeError(f"module 'actors.limits' has no attribute {name!r}")
