"""Event triggers and incoming webhooks: channel messages that start jobs, and outside systems that publish.

- **Trigger** (``PUT /v1/triggers/{name}``): ``{"channel", "match", "job": <a job spec>}``. Each message
  published to ``channel`` that has every key-value of ``match`` enqueues one job from the spec, in the
  same commit as the message, so each committed message starts exactly one job, across restarts. The
  job's payload is the spec's payload (an object, default ``{}``) with ``"message"`` set to the message;
  its ``unique_key`` is ``trigger:<name>:<gseq of the message>``.
- **Hook** (``PUT /v1/hooks/{name}``): ``{"channel"}`` makes a hook and answers its secret, once
  (``"rotate": true`` replaces it). ``POST /v1/hooks/{name}`` with a JSON body and
  ``X-Dojo-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` (the scheme of callbacks, keyed
  with the hook's secret) publishes the body to the hook's channel: it can wake ``ctx.wait_for`` and
  fire triggers. Signatures older than ``callbacks.REPLAY_WINDOW_S`` and ones already used are refused.
  The replay memory lives in the queue actor: a restart forgets it, and the time window still holds.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from . import callbacks
from .durable import matches
from .exceptions import InvalidInput, NotFound, Unauthorized

NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
MAX_TRIGGERS = 100
MAX_HOOKS = 100


def _name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(f"{kind} names are 1-100 characters of letters, digits, '_', '.', ':' or '-'")
    return name


def _channel(value: Any) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise InvalidInput("channel must be a channel name: 1-100 characters of letters, digits, '_', '.', ':' or '-'")
    return value


class Triggers:
    """A queue's triggers and hooks (the store keeps them as controls ``trigger`` and ``hook``)."""

    def __init__(self, store):
        self.store = store
        self.triggers: dict[str, dict] = store.controls("trigger")
        self.hooks: dict[str, dict] = store.controls("hook")
        self._seen: dict[str, float] = {}  # signatures used, until they are too old to be accepted anyway

    # -- triggers -------------------------------------------------------------------------
    def put_trigger(self, name: str, data: Any, check_spec, now: float) -> dict:
        """Create or replace a trigger; ``check_spec(spec)`` validates its job spec like an enqueue."""
        _name("trigger", name)
        if not isinstance(data, dict) or set(data) - {"channel", "match", "job"} or "job" not in data:
            raise InvalidInput("send {'channel': name, 'match': {key: value, ...}, 'job': {'type': ..., "
                               "'payload': {...}}}; a trigger has no other fields")
        match = data.get("match") or {}
        if not isinstance(match, dict):
            raise InvalidInput("match must be an object of key-values a message must have")
        spec = data["job"]
        if not isinstance(spec, dict) or not isinstance(spec.get("payload", {}), dict):
            raise InvalidInput("job must be a job spec whose payload, if any, is an object (the message is added "
                               "to it as 'message')")
        if "unique_key" in spec or "parent_id" in spec:
            raise InvalidInput("a trigger's job spec has no unique_key or parent_id: each message makes its own job")
        if name not in self.triggers and len(self.triggers) >= MAX_TRIGGERS:
            raise InvalidInput(f"a queue holds at most {MAX_TRIGGERS} triggers")
        check_spec({**spec, "payload": {**spec.get("payload", {}), "message": None}})
        previous = self.triggers.get(name) or {}
        trigger = {"name": name, "channel": _channel(data.get("channel")), "match": match, "job": spec,
                   "created_at": previous.get("created_at", now), "fired": previous.get("fired", 0),
                   "last_job_id": previous.get("last_job_id"), "last_error": None}
        self.triggers[name] = trigger
        self.store.put_control("trigger", name, trigger)
        return trigger

    def delete_trigger(self, name: str) -> None:
        if self.triggers.pop(name, None) is None:
            raise NotFound(f"no trigger {name!r}; GET /v1/triggers lists them")
        self.store.put_control("trigger", name, None)

    def firing(self, channel: str, message: Any, gseq: int) -> list[tuple[dict, dict]]:
        """(trigger, job spec) for each trigger this message fires."""
        out = []
        for trigger in self.triggers.values():
            if trigger["channel"] == channel and matches(message, trigger["match"]):
                spec = trigger["job"]
                out.append((trigger, {**spec, "payload": {**spec.get("payload", {}), "message": message},
                                      "unique_key": f"trigger:{trigger['name']}:{gseq}"}))
        return out

    def fired(self, trigger: dict, job_id: str | None, error: str | None) -> None:
        if job_id is not None:
            trigger.update(fired=trigger["fired"] + 1, last_job_id=job_id, last_error=None)
        else:
            trigger["last_error"] = error
        self.store.put_control("trigger", trigger["name"], trigger)

    # -- hooks ----------------------------------------------------------------------------
    def put_hook(self, name: str, data: Any, now: float) -> dict:
        """Create a hook (answering its secret) or change its channel; ``rotate`` makes a new secret."""
        _name("hook", name)
        if not isinstance(data, dict) or set(data) - {"channel", "rotate"} or not isinstance(data.get("rotate", False),
                                                                                     bool):
            raise InvalidInput("send {'channel': name} (and 'rotate': true for a new secret)")
        channel = _channel(data.get("channel"))
        previous = self.hooks.get(name)
        if previous is None and len(self.hooks) >= MAX_HOOKS:
            raise InvalidInput(f"a queue holds at most {MAX_HOOKS} hooks")
        fresh = previous is None or data.get("rotate") is True
        hook = {"name": name, "channel": channel, "created_at": (previous or {}).get("created_at", now),
                "secret": secrets.token_hex(32) if fresh else previous["secret"],
                "received": (previous or {}).get("received", 0)}
        self.hooks[name] = hook
        self.store.put_control("hook", name, hook)
        return self.view(hook, with_secret=fresh)

    @staticmethod
    def view(hook: dict, with_secret: bool = False) -> dict:
        out = {k: v for k, v in hook.items() if k != "secret"}
        if with_secret:
            out["secret"] = hook["secret"]
        return out

    def delete_hook(self, name: str) -> None:
        if self.hooks.pop(name, None) is None:
            raise NotFound(f"no hook {name!r}; GET /v1/hooks lists them")
        self.store.put_control("hook", name, None)

    def verify(self, name: str, body: bytes, header: str, now: float | None = None) -> dict:
        """The hook a signed request is for; Unauthorized if the signature is wrong, old or used before."""
        now = time.time() if now is None else now
        hook = self.hooks.get(name)
        # An unknown hook answers like a bad signature: a caller without a secret learns nothing.
        if hook is None or not header or not header.isascii() or not callbacks.verify(hook["secret"], body, header,
                                                                                       now=now):
            raise Unauthorized("no such hook, or the X-Dojo-Signature header is missing, wrong or older than "
                               f"{callbacks.REPLAY_WINDOW_S} s; sign 't.<body>' with the hook's secret")
        self._seen = {sig: until for sig, until in self._seen.items() if until > now}
        if header in self._seen:
            raise Unauthorized("this signed request was received already (a replay); sign each request anew")
        self._seen[header] = now + 2 * callbacks.REPLAY_WINDOW_S
        hook["received"] += 1
        self.store.put_control("hook", name, hook)
        return hook
