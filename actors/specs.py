"""What a job spec may say, checked: the one place an enqueue's input becomes a job record.

``new_job`` validates every field of a spec (with the job type's own ``validate`` of its payload) and
returns the record ``JobQueue`` stores, or raises ``InvalidInput`` saying what was wrong; it changes
nothing, so a batch is checked whole before any job of it is added. Queue control fields (dedup,
debounce, throttle, groups, expiry, tracing, callbacks) are parsed by their own components.
"""

from __future__ import annotations

from typing import Any, Mapping

import orjson

from . import admission, callbacks, groups, tracing
from .exceptions import InvalidInput, PayloadTooLarge
from .expiry import expires_at
from .ids import queue_of
from .jobs import Backoff, JobType, Resources, lookup
from .triggers import NAME as CHANNEL_NAME

KEY_MAX = 200
SPEC_KEYS = {"type", "payload", "queue", "priority", "delay", "run_at", "max_attempts", "timeout", "backoff",
             "unique_key", "concurrency_key", "concurrency_limit", "resources", "parent_id",
             "expires_in", "dedup", "debounce", "throttle", "group", "trace", "callback"}


def _number(spec: dict, key: str, kind=float, minimum=None, default=None):
    value = spec.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise InvalidInput(f"{key} must be {'a whole number' if kind is int else 'a number'}, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidInput(f"{key} must be >= {minimum}, got {value!r}")
    return kind(value)


def check_channel(channel) -> None:
    if not isinstance(channel, str) or not CHANNEL_NAME.match(channel):
        raise InvalidInput("channel names are 1-100 characters of letters, digits, '_', '.', ':' or '-'")


def _key(spec: dict, key: str) -> str | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > KEY_MAX:
        raise InvalidInput(f"{key} must be a non-empty string of at most {KEY_MAX} characters")
    return value


def check_size(value: Any, limit: int, what: str) -> int:
    """The JSON size of ``value``; InvalidInput if it is not JSON, PayloadTooLarge if over ``limit`` bytes."""
    try:
        size = 4 if value is None else len(orjson.dumps(value))
    except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
        raise InvalidInput(f"{what} must be JSON-serializable: {exc}") from None
    if size > limit:
        raise PayloadTooLarge(f"{what} is {size} bytes, over the limit of {limit} bytes; "
                              "put large inputs in object storage and pass their keys", size=size, limit=limit)
    return size


def new_job(spec: Any, now: float, queue_name: str, types: Mapping[str, JobType], max_payload_bytes: int) -> dict:
    """Turn an enqueue spec for queue ``queue_name`` into a new job record (no id, no status yet), or raise
    InvalidInput; changes nothing. ``types``: the job types the queue accepts."""
    if not isinstance(spec, dict):
        raise InvalidInput(f"a job spec must be an object with at least 'type', got {type(spec).__name__}")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise InvalidInput(f"unknown job fields {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}")
    type_name = spec.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise InvalidInput("'type' is required: the name of a registered job type")
    job_type: JobType = lookup(types, type_name)
    queue = spec.get("queue", queue_name)
    if queue != queue_name:
        raise InvalidInput(f"spec is for queue {queue!r} but was sent to queue {queue_name!r}")
    payload = spec.get("payload")
    check_size(payload, max_payload_bytes, "payload")
    if job_type.validate is not None:
        job_type.validate(payload)
    if "delay" in spec and "run_at" in spec:
        raise InvalidInput("give either 'delay' (seconds) or 'run_at' (epoch seconds), not both")
    delay = _number(spec, "delay", float, 0, 0.0)
    run_at = _number(spec, "run_at", float, 0, None)
    run_at = now + delay if run_at is None else run_at
    backoff = job_type.backoff
    if spec.get("backoff") is not None:
        if not isinstance(spec["backoff"], dict):
            raise InvalidInput("backoff must be an object like {'strategy': 'exponential', 'delay': 1, 'cap': 60}")
        try:
            backoff = Backoff(**{**backoff.to_dict(), **spec["backoff"]})
        except TypeError:
            raise InvalidInput("backoff keys are strategy, delay, cap and jitter") from None
    resources = Resources.from_dict(spec["resources"]) if spec.get("resources") else job_type.resources
    concurrency_key = _key(spec, "concurrency_key")
    limit = _number(spec, "concurrency_limit", int, 1, 1 if concurrency_key else None)
    if limit is not None and not concurrency_key:
        raise InvalidInput("concurrency_limit needs a concurrency_key")
    timeout = _number(spec, "timeout", float, 0.001, job_type.timeout)
    max_attempts = _number(spec, "max_attempts", int, 1, job_type.max_attempts)
    parent_id = spec.get("parent_id")
    if parent_id is not None:
        queue_of(parent_id)
    control = {**admission.parse(spec), "group": groups.parse(spec), "trace": tracing.check(spec.get("trace"))}
    if control["debounce"]:
        run_at = now + control["debounce"]["period"]
    expires = expires_at(spec, run_at, now)
    return {
        "id": None, "queue": queue_name, "type": type_name, "payload": payload, "status": None,
        "priority": _number(spec, "priority", int, None, 0),
        "run_at": run_at, "created_at": now, "updated_at": now, "started_at": None, "finished_at": None,
        "attempts": 0, "max_attempts": max_attempts, "budget": max_attempts,
        "backoff": backoff.to_dict(), "timeout": timeout,
        "unique_key": _key(spec, "unique_key"), "concurrency_key": concurrency_key,
        "concurrency_limit": limit, "resources": resources.to_dict(),
        "result": None, "result_key": None, "error": None, "progress": None,
        "parent_id": parent_id, "phase": "perform", "children": None, "lease": None, "history": [], "cancel_requested": False,
        "expires_at": expires, "callback": callbacks.parse(spec.get("callback")), **control,
    }
