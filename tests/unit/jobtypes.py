"""The job types the queue rules' tests enqueue, made here and handed to ``JobQueue(types=...)``.

The rules only read a type's options (attempts, backoff, resources, validation, callbacks), never run it,
so these perform nothing; no job module is imported and the process's registry is left alone.
"""

from __future__ import annotations

from actors.exceptions import InvalidInput
from actors.jobs import Backoff, JobType, Resources


def _nothing(ctx, payload):
    return payload


def _check_sleep(payload):
    if not isinstance(payload, dict) or not isinstance(payload.get("seconds"), (int, float)) \
            or not 0 <= payload["seconds"] <= 86400:
        raise InvalidInput("sleep needs a payload like {'seconds': 1.5} with 0 <= seconds <= 86400")


def _type(name: str, max_attempts: int = 1, cpus: float = 1.0, **options) -> JobType:
    return JobType(name=name, perform=_nothing, max_attempts=max_attempts, resources=Resources(cpus), **options)


TYPES: dict[str, JobType] = {t.name: t for t in [
    _type("echo"),
    _type("noop"),
    _type("stamp", cpus=0.5),
    _type("sleep", cpus=0.5, validate=_check_sleep),
    _type("flaky", max_attempts=5, backoff=Backoff("exponential", 0.05, 300.0, 0.0)),
    _type("countdown", max_attempts=3, cpus=0.5),
    _type("fanout", cpus=0.25),
    _type("with-callback", on_children_done=lambda ctx, payload, outcomes: len(outcomes)),
    JobType(name="outside", perform=None, max_attempts=3, external=True),
]}
