"""The dashboard's browser session: a signed cookie and the CSRF token bound to it.

Logging in with the API token sets ``dojo_session`` =
``<expiry>.<nonce>.<signature>`` (HMAC-SHA256 with the server secret), an
HttpOnly, SameSite=Strict cookie limited to ``/dashboard``: the ``/v1`` API
never sees it, and page scripts cannot read it. Every state-changing request
made with the cookie must also send ``X-CSRF-Token`` (or a ``csrf`` form
field) equal to ``csrf_token(nonce)``, which the server writes into the page
it serves; another site can neither read it nor make the browser send it.
Requests with ``Authorization: Bearer <API token>`` need no CSRF token (the
browser never attaches one on its own).

Sessions end on the server, not only in the browser: the signing key is
derived from the secret *and* the API token (``session_key``), so a new API
token ends every session; logging out records the session's nonce as ended
(``logins.LoginBook``) until it would have expired. The cookie is ``Secure``
when the dashboard is reached over https (``DOJO_PUBLIC_URL=https://...``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass

from actors.exceptions import Forbidden, Unauthorized

from ..auth import same

COOKIE = "dojo_session"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL = 12 * 3600
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def session_key(secret: str, api_token: str) -> str:
    """The key of cookies and CSRF tokens: changes with the secret and with the API token."""
    fingerprint = hashlib.sha256(api_token.encode()).hexdigest()
    return hmac.new(secret.encode(), f"dashboard sessions|{fingerprint}".encode(), hashlib.sha256).hexdigest()


def _sign(secret: str, purpose: str, message: str) -> str:
    digest = hmac.new(secret.encode(), f"{purpose}|{message}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


@dataclass(frozen=True)
class Session:
    """Who is calling the dashboard: a cookie session (``nonce`` set) or a bearer API token."""

    via: str  # "cookie" or "bearer"
    nonce: str | None = None
    expires: int | None = None


def new_session(secret: str, now: float | None = None, ttl: float = SESSION_TTL) -> tuple[str, Session]:
    """A fresh cookie value and the session it stands for."""
    expiry = int((now or time.time()) + ttl)
    nonce = base64.urlsafe_b64encode(os.urandom(18)).decode()
    body = f"{expiry}.{nonce}"
    return f"{body}.{_sign(secret, 'session', body)}", Session("cookie", nonce, expiry)


def read_session(secret: str, cookie: str | None, now: float | None = None) -> Session | None:
    """The session a cookie value stands for, or None when it is missing, forged or expired."""
    if not cookie or cookie.count(".") != 2:
        return None
    expiry, nonce, signature = cookie.split(".")
    if not same(signature, _sign(secret, "session", f"{expiry}.{nonce}")):
        return None
    if not (expiry.isascii() and expiry.isdigit()) or int(expiry) < (now or time.time()):
        return None
    return Session("cookie", nonce, int(expiry))


def csrf_token(secret: str, session: Session) -> str:
    return _sign(secret, "csrf", session.nonce or "")


def check_csrf(secret: str, session: Session, method: str, sent: str | None) -> None:
    """Refuse a state-changing cookie request without the session's CSRF token."""
    if session.via != "cookie" or method.upper() in SAFE_METHODS:
        return
    if not sent or not same(sent, csrf_token(secret, session)):
        raise Forbidden("this request needs the dashboard's CSRF token in the X-CSRF-Token header; "
                        "reload the dashboard page and try again")


def same_origin(origin: str | None, host: str | None) -> bool:
    """True when a browser's Origin header names the host it is talking to (or there is none)."""
    if not origin:
        return True
    if origin == "null" or not host:
        return False
    return origin.split("://", 1)[-1].rstrip("/") == host


def require(auth, secret: str, authorization: str | None, cookie: str | None, ended=None) -> Session:
    """The caller's session: a valid bearer API token, else a valid session cookie that has not ended."""
    if authorization:
        auth.principal(authorization).require_admin()
        return Session("bearer")
    session = read_session(secret, cookie)
    if session is None:
        raise Unauthorized("log in to the dashboard at /dashboard (or send 'Authorization: Bearer <API token>')")
    if ended is not None and ended(session.nonce):
        raise Unauthorized("this dashboard session has ended (logged out); log in again at /dashboard")
    return session
