"""Webhooks out: a job's ``callback`` is POSTed the job when it reaches a status the callback names.

A spec carries ``"callback": {"url": "https://...", "events": ["succeeded", "failed"]}``
(``events`` defaults to the final statuses). The queue rules stage a *delivery* row in the same
group commit as the status change that calls for it (``JobQueue._status``), so a delivery exists
exactly when its status is durable: a crash before the commit loses both, a crash after keeps both.
The ``Sender`` in the queue actor then POSTs each delivery until the receiver answers 2xx, at least
once: a kill between the POST and the commit of its outcome sends it again, with the same
``X-Dojo-Delivery`` id for the receiver to deduplicate.

- **Body**: ``{"id": <delivery id>, "event": <status>, "at": <epoch s>, "job": <the job's public view>}``.
- **Signature** (Stripe's scheme): ``X-Dojo-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
  "<t>.<body>">`` with the queue's callback key (``DOJO_CALLBACK_KEY``, else derived from the secret;
  ``dojo token --callback-key`` prints it). ``verify`` is the receiver's check, replay window included.
- **Retries**: 408, 429, 5xx, timeouts and connection errors are retried after 1, 2, 4 ... s (at most
  10 min apart) up to ``MAX_ATTEMPTS``; any other answer ends the delivery as ``failed``. Each try is
  logged on the delivery (``GET /v1/jobs/{id}/deliveries``).
- **Where to**: http(s) only. The host's resolved addresses are checked at every try (a name that
  resolves to a private, loopback, link-local or otherwise non-public address is refused), unless
  the host is listed in ``DOJO_CALLBACK_HOSTS`` (comma-separated host names or addresses).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import time
from typing import Callable
from urllib.parse import urlsplit

from .exceptions import InvalidInput

log = logging.getLogger(__name__)

#: Statuses a callback may ask for; the final ones are the default.
EVENTS = ("running", "retrying", "waiting", "succeeded", "failed", "cancelled", "expired")
DEFAULT_EVENTS = ("succeeded", "failed", "cancelled", "expired")
MAX_URL = 2048
MAX_ATTEMPTS = 8
RETRY_CAP_S = 600.0
TIMEOUT_S = 10.0
IN_FLIGHT = 16
REPLAY_WINDOW_S = 300
RETRIED = {408, 429}


def parse(value) -> dict | None:
    """A spec's ``callback`` checked and normalized, or None; InvalidInput names what is wrong."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        raise InvalidInput("callback must be an object like {'url': 'https://example.com/hook', "
                           "'events': ['succeeded', 'failed']}")
    unknown = set(value) - {"url", "events"}
    if unknown:
        raise InvalidInput(f"unknown callback fields {sorted(unknown)}; allowed: ['events', 'url']")
    url = value["url"]
    parts = urlsplit(url)
    if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"callback.url must be an http(s) URL of at most {MAX_URL} characters, got {url[:100]!r}")
    if parts.username or parts.password:
        raise InvalidInput("callback.url must not carry credentials; the body is signed instead "
                           "(X-Dojo-Signature, see `dojo token --callback-key`)")
    events = value.get("events", list(DEFAULT_EVENTS))
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise InvalidInput(f"callback.events must be a non-empty list of statuses from {list(EVENTS)}")
    wrong = sorted(set(events) - set(EVENTS))
    if wrong:
        raise InvalidInput(f"callback.events has unknown statuses {wrong}; choose from {list(EVENTS)}")
    return {"url": url, "events": sorted(set(events), key=EVENTS.index)}


def delivery_for(job: dict, event: dict) -> dict | None:
    """The delivery a status event calls for (None if the job's callback does not ask for it)."""
    callback = job.get("callback")
    status = event["data"].get("status")
    if not callback or status not in callback["events"]:
        return None
    return {"id": f"{job['id']}.{event['gseq']}", "job_id": job["id"], "event": status, "at": event["at"],
            "url": callback["url"], "state": "pending", "attempts": 0, "next_at": event["at"], "log": []}


def signing_key(settings) -> bytes:
    """DOJO_CALLBACK_KEY, else a key derived from the secret (the queue actor holds it; jobs do not)."""
    explicit = os.environ.get("DOJO_CALLBACK_KEY", "")
    if explicit:
        return explicit.encode()
    return hmac.new(settings.secret.encode(), b"dojo callbacks", hashlib.sha256).hexdigest().encode()


def signature(key: bytes, body: bytes, t: int) -> str:
    mac = hmac.new(key, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(key: bytes | str, body: bytes, header: str, now: float | None = None,
           window: float = REPLAY_WINDOW_S) -> bool:
    """A receiver's check of ``X-Dojo-Signature``: made with ``key`` over ``body``, and recent."""
    key = key.encode() if isinstance(key, str) else key
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > window:
        return False
    return hmac.compare_digest(signature(key, body, t), header.strip())


def allowed_hosts() -> set[str]:
    return {h.strip().lower() for h in os.environ.get("DOJO_CALLBACK_HOSTS", "").split(",") if h.strip()}


def refusal(url: str, allowed: set[str]) -> str | None:
    """Why ``url`` may not be called (None if it may): only public addresses, unless the host is allowed."""
    host = (urlsplit(url).hostname or "").lower()
    if host in allowed:
        return None
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global or address.is_multicast:
            return (f"{host} resolves to {address}, which is not a public address; list the host in "
                    "DOJO_CALLBACK_HOSTS to allow it")
    return None


def retry_delay(attempts: int) -> float:
    return min(RETRY_CAP_S, 2.0 ** (attempts - 1))


class Sender:
    """Sends the queue's deliveries from the actor's event loop; outcomes are staged in the store.

    ``view(job_id)`` gives the job's public view (None once the job is deleted: the delivery ends).
    The caller commits what ``tick`` staged (the store is dirty after a try).
    """

    def __init__(self, store, key: bytes, view: Callable[[str], dict | None], allowed: set[str] | None = None):
        self.store = store
        self.key = key
        self.view = view
        self.allowed = allowed_hosts() if allowed is None else allowed
        self.pending: dict[str, dict] = {d["id"]: d for d in store.pending_deliveries()}
        self._flying: set[str] = set()
        self._session = None

    def add(self, deliveries: list[dict]) -> None:
        """Deliveries whose status change is now committed."""
        for delivery in deliveries:
            self.pending[delivery["id"]] = delivery

    def tick(self, now: float) -> None:
        """Start the tries that are due (at most IN_FLIGHT at once)."""
        for delivery in list(self.pending.values()):
            if len(self._flying) >= IN_FLIGHT:
                return
            if delivery["id"] not in self._flying and delivery["next_at"] <= now:
                self._flying.add(delivery["id"])
                asyncio.get_running_loop().create_task(self._try(delivery))

    async def _try(self, delivery: dict) -> None:
        try:
            await self._send(delivery)
        except Exception:  # a bug here must not stop the others; the delivery is tried again
            log.exception("callback delivery %s", delivery["id"])
            delivery["next_at"] = time.time() + retry_delay(delivery["attempts"] + 1)
        finally:
            self._flying.discard(delivery["id"])

    async def _send(self, delivery: dict) -> None:
        import aiohttp

        job = self.view(delivery["job_id"])
        started = time.time()
        entry = {"at": round(started, 3)}
        if job is None:
            return self._end(delivery, "failed", {**entry, "error": "the job was deleted"})
        why = await asyncio.to_thread(refusal, delivery["url"], self.allowed)
        if why:
            return self._end(delivery, "failed", {**entry, "error": why})
        body = json.dumps({"id": delivery["id"], "event": delivery["event"], "at": delivery["at"], "job": job},
                          separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "dojo-callbacks",
                   "X-Dojo-Delivery": delivery["id"], "X-Dojo-Event": delivery["event"],
                   "X-Dojo-Signature": signature(self.key, body, int(started))}
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        delivery["attempts"] += 1
        try:
            async with self._session.post(delivery["url"], data=body, headers=headers, allow_redirects=False) as r:
                status = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            status, entry["error"] = None, f"{type(exc).__name__}: {exc}"[:300]
        entry["ms"] = round((time.time() - started) * 1000, 1)
        if status is not None:
            entry["status"] = status
        if status is not None and 200 <= status < 300:
            return self._end(delivery, "delivered", entry)
        retry = status is None or status in RETRIED or status >= 500
        if not retry or delivery["attempts"] >= MAX_ATTEMPTS:
            return self._end(delivery, "failed", entry)
        delivery["next_at"] = time.time() + retry_delay(delivery["attempts"])
        delivery["log"].append(entry)
        self.store.put_delivery(delivery)

    def _end(self, delivery: dict, state: str, entry: dict) -> None:
        delivery["state"] = state
        delivery["log"].append(entry)
        self.pending.pop(delivery["id"], None)
        self.store.put_delivery(delivery)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
