"""Durable steps, sleeps and waits: a job written as plain code whose finished steps survive crashes.

Inside a job::

    thumbnail = ctx.step("thumbnail", make_thumbnail, deck)      # runs once per job
    ctx.sleep(3600)                                                # frees the runner for an hour
    approval = ctx.wait_for("approvals", match={"job": ctx.job_id}, timeout=86400)
    ctx.step("publish", publish, thumbnail, approval["by"])

- ``ctx.step(name, fn, *args)`` runs ``fn`` and has the queue actor commit its JSON result (same size
  limit as a job's result) before returning it. A later attempt of the job (a retry, a lost worker, a
  resume after a sleep) replays the log: each ``step`` call gets the recorded result back, in order,
  without running ``fn``. Names are unique within a job; a step list that changed between attempts
  (another name at a recorded position) fails the job with ``StepMismatch``, which is not retried.
- ``ctx.sleep(seconds)`` / ``ctx.sleep_until(t)`` records the wake time as a step and ends the attempt
  without failing or spending it: the job is ``sleeping``, holding no runner, Ray task or CPU — a row.
  At the wake time (within one tick of the queue actor) it is queued again and replays to the sleep,
  which then returns at once.
- ``ctx.wait_for(channel, match=None, timeout=None)`` sleeps the same way until a message published to
  the queue's ``channel`` (``POST /v1/channels/{name}/messages``) has every key-value of ``match``
  (top-level equality; ``None`` matches any message), and returns that message. A message published
  after the job was created counts, even before the wait began (the approval may come first; the
  latest ``WAIT_LOOKBACK`` messages of the channel are checked). After ``timeout`` seconds it raises
  ``WaitTimeout``, which the job may catch.

Sleeps and waits are steps too (named ``sleep#N`` and ``wait#N`` by their order in the job), so they
take part in the same positional replay.
"""

from __future__ import annotations

from typing import Any

#: Steps one job may record (its record is read whole by every attempt).
MAX_STEPS = 1000
#: Channel messages a new wait looks back through for one published before it began.
WAIT_LOOKBACK = 1000
STEP_NAME_MAX = 200


class Suspend(BaseException):
    """Ends the attempt without failing it: the job sleeps until ``until`` or a matching channel message.

    A BaseException, so a job's own ``except Exception`` does not swallow it.
    """

    def __init__(self, until: float, wait: dict | None = None, step: dict | None = None):
        super().__init__(f"suspended until {until}")
        self.until = until
        self.wait = wait
        self.step = step  # a sleep's own step ({index, name, result}), recorded with the suspension


class WaitTimeout(Exception):
    """``ctx.wait_for`` saw no matching message within its timeout."""

    retryable = False


class StepMismatch(Exception):
    """The job's steps differ from the ones an earlier attempt recorded; the job cannot be resumed.

    Give steps stable names and a stable order, or retry the job under a new id.
    """

    retryable = False


def matches(message: Any, match: dict | None) -> bool:
    """Every key-value of ``match`` is in ``message`` (a dict); None matches anything."""
    if not match:
        return True
    return isinstance(message, dict) and all(k in message and message[k] == v for k, v in match.items())


class Steps:
    """One attempt's view of the job's step log: what is recorded, and the position of the next call."""

    def __init__(self, recorded: list[dict] | None):
        self.recorded = list(recorded or [])
        self.position = 0
        self.counters: dict[str, int] = {}

    def auto_name(self, kind: str) -> str:
        self.counters[kind] = self.counters.get(kind, 0) + 1
        return f"{kind}#{self.counters[kind]}"

    def next(self, name: str) -> tuple[int, dict | None]:
        """The position of a step called ``name`` and its recorded entry, if an earlier attempt made it."""
        if not isinstance(name, str) or not 0 < len(name) <= STEP_NAME_MAX:
            raise ValueError(f"a step name is a string of 1..{STEP_NAME_MAX} characters, got {name!r}")
        index = self.position
        self.position += 1
        if any(entry["name"] == name for entry in self.recorded[:index]):
            raise ValueError(f"step {name!r} was already taken in this job; step names are unique within a job")
        if index < len(self.recorded):
            entry = self.recorded[index]
            if entry["name"] != name:
                raise StepMismatch(f"step {index + 1} is {name!r} now but was {entry['name']!r} when the job "
                                   "last ran; steps must keep their names and order between attempts")
            return index, entry
        if index >= MAX_STEPS:
            raise ValueError(f"a job may record at most {MAX_STEPS} steps")
        return index, None

    def add(self, name: str, result: Any) -> None:
        self.recorded.append({"name": name, "result": result})
