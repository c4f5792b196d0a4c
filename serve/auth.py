"""Who may do what: the API token, the worker token and scoped, expiring tokens.

Scoped tokens let a browser open one job's (or one channel's) event stream
without holding the API token: ``dojo.<scope>.<name>.<expiry>.<signature>``,
signed with HMAC-SHA256 by the server secret. A channel token names its queue
too (``<queue>/<channel>``): it reads that channel of that queue and nothing else.

A token travels in ``Authorization: Bearer``. ``?token=`` is read only where a
browser cannot send that header (a WebSocket handshake, an ``EventSource``),
so it does not end up in URLs that are bookmarked, shared or logged elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from actors.exceptions import Forbidden, InvalidInput, Unauthorized

SCOPES = ("job", "channel")


@dataclass(frozen=True)
class Principal:
    """What a request's token grants: 'admin' (API token), 'worker', or one job's / channel's reads."""

    role: str
    scope: str | None = None
    name: str | None = None

    def require_admin(self) -> None:
        if self.role != "admin":
            raise Forbidden(f"this action needs the API token; a {self.role} token cannot do it")

    def require_worker(self) -> None:
        if self.role not in ("admin", "worker"):
            raise Forbidden("the pull API needs the worker token (or the API token)")

    def require_read(self, scope: str, name: str) -> None:
        if self.role == "admin":
            return
        if self.role == "scoped" and self.scope == scope and self.name == name:
            return
        raise Forbidden(f"this token cannot read {scope} {name!r}; mint one with POST /v1/tokens")


def same(sent: str, expected: str) -> bool:
    """Constant-time equality of a value a client sent (any characters) and the one expected."""
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode())


def _sign(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


def mint(secret: str, scope: str, name: str, ttl: float, now: float | None = None) -> str:
    if scope not in SCOPES:
        raise InvalidInput(f"token scope must be one of {list(SCOPES)}, got {scope!r}")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 1 <= ttl <= 30 * 86400:
        raise InvalidInput("ttl must be between 1 second and 30 days")
    if not name or len(name) > 200:
        raise InvalidInput("the name of a token's scope must be 1-200 characters")
    if scope == "channel" and "/" not in name:
        raise InvalidInput("a channel token names its queue: channel_stream(queue, channel)")
    expiry = int((now or time.time()) + ttl)
    body = f"{scope}.{_b64(name)}.{expiry}"
    return f"dojo.{body}.{_sign(secret, body)}"


def channel_stream(queue: str, channel: str) -> str:
    """The name a channel token is bound to: one channel of one queue."""
    return f"{queue}/{channel}"


def query_token_allowed(method: str, accept: str | None, websocket: bool = False) -> bool:
    """Where ``?token=`` counts: a WebSocket handshake or an event stream (``EventSource``).

    Everywhere else a client can send ``Authorization: Bearer``, and a token in a
    URL is one that lands in histories, proxies' logs and Referer headers.
    """
    return websocket or (method in ("GET", "HEAD") and "text/event-stream" in (accept or ""))


class Authenticator:
    def __init__(self, api_token: str, worker_token: str, secret: str):
        if not (api_token and worker_token and secret):
            raise ValueError("the API token, worker token and secret must all be set")
        self.api_token = api_token
        self.worker_token = worker_token
        self.secret = secret

    def principal(self, authorization: str | None, query_token: str | None = None) -> Principal:
        token = None
        if authorization:
            kind, _, value = authorization.partition(" ")
            if kind.lower() != "bearer" or not value:
                raise Unauthorized("the Authorization header must be 'Bearer <token>'")
            token = value.strip()
        token = token or query_token
        if not token:
            raise Unauthorized()
        if same(token, self.api_token):
            return Principal("admin")
        if same(token, self.worker_token):
            return Principal("worker")
        if token.startswith("dojo."):
            parts = token.split(".")
            if len(parts) == 5:
                _, scope, name, expiry, signature = parts
                body = f"{scope}.{name}.{expiry}"
                if same(signature, _sign(self.secret, body)):
                    if not (expiry.isascii() and expiry.isdigit()) or int(expiry) < time.time():
                        raise Unauthorized("this scoped token has expired; mint a new one with POST /v1/tokens")
                    return Principal("scoped", scope, _unb64(name))
        raise Unauthorized("the token is not valid for this server (check `dojo token` or DOJO_API_TOKEN)")
