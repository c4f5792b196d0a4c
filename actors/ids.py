"""The queue's names for things: job statuses, queue names, job ids, and dispatch lanes.

A job id sorts by creation time and names its queue (``j_<ms><counter><random>[.<queue>]``), so any
process can route a job id to its queue actor without asking anyone. A lane is a job type with the
resources each attempt needs: one kind of runner serves one lane.
"""

from __future__ import annotations

import os
import re

import orjson

from .exceptions import InvalidInput

STATUSES = ("queued", "scheduled", "running", "retrying", "waiting", "sleeping", "succeeded", "failed", "cancelled",
            "expired")
QUEUE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
LANE_SEP = "\x1f"  # a lane is "<type><LANE_SEP><resources as sorted JSON>"


def lane_of(job: dict) -> str:
    """A job's dispatch lane: its type and the resources each attempt needs (one runner kind per lane)."""
    return job["type"] + LANE_SEP + orjson.dumps(job["resources"], option=orjson.OPT_SORT_KEYS).decode()


def split_lane(lane: str) -> tuple[str, dict]:
    type_name, _, resources = lane.partition(LANE_SEP)
    return type_name, orjson.loads(resources) if resources else {}


class JobIds:
    """Server-generated ids that sort by creation time: ``j_<ms><counter><random>``."""

    def __init__(self, queue: str):
        self.suffix = "" if queue == "default" else "." + queue
        self.last_ms = 0
        self.counter = 0

    def next(self, now: float) -> str:
        ms = int(now * 1000)
        if ms <= self.last_ms:
            ms = self.last_ms
            self.counter += 1
        else:
            self.last_ms, self.counter = ms, 0
        return f"j_{ms:011x}{self.counter:05x}{os.urandom(2).hex()}{self.suffix}"


def queue_of(job_id: str) -> str:
    """The queue a job id belongs to (ids of non-default queues end in '.<queue>')."""
    if not isinstance(job_id, str) or not re.fullmatch(r"j_[0-9a-f]{20}(\.[a-z0-9][a-z0-9_-]{0,39})?", job_id):
        raise InvalidInput(f"malformed job id {job_id!r}; job ids look like 'j_0192ab34cd5600001a2b'")
    return job_id.split(".", 1)[1] if "." in job_id else "default"


def actor_name(queue: str) -> str:
    """The name of the queue's actor in Ray (namespace ``settings.NAMESPACE``)."""
    return f"queue:{queue}"
