"""What the dashboard remembers about logins, shared by every API replica: ended sessions and failed attempts.

A session cookie is signed, so the server needs no table to accept one; to
end one before it expires (logging out) the server must remember its nonce
until then. Failed logins are counted per client and in total over a sliding
window, so a token cannot be guessed at the speed of HTTP: past the limit a
login answers 429 before the token is even compared. Both live in one small
SQLite file in the state dir (0600), which every replica on the head shares.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from actors.exceptions import DojoError
from actors.settings import private_dir

#: Failed logins allowed per client, and from all clients together, within WINDOW_S seconds.
PER_CLIENT = 10
IN_TOTAL = 100
WINDOW_S = 300.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS ended (nonce TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS failures (client TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failures_at ON failures (at);
"""


class TooManyLogins(DojoError):
    """Too many failed logins; wait a few minutes before trying again."""

    status = 429


class LoginBook:
    """Ended sessions and recent failed logins, in ``<state dir>/dashboard.sqlite3``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        private_dir(self.path.parent)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def end(self, nonce: str, expires: float, now: float | None = None) -> None:
        """Remember that the session ``nonce`` ended (until it would have expired anyway)."""
        now = now or time.time()
        with self._lock:
            self._db.execute("DELETE FROM ended WHERE expires < ?", (now,))
            self._db.execute("INSERT OR REPLACE INTO ended VALUES (?, ?)", (nonce, expires))

    def ended(self, nonce: str | None) -> bool:
        if not nonce:
            return False
        with self._lock:
            return self._db.execute("SELECT 1 FROM ended WHERE nonce = ?", (nonce,)).fetchone() is not None

    def check(self, client: str, now: float | None = None) -> None:
        """TooManyLogins (with ``retry_after``) when ``client``, or everyone, failed too often lately."""
        now = now or time.time()
        since = now - WINDOW_S
        with self._lock:
            self._db.execute("DELETE FROM failures WHERE at < ?", (since,))
            mine, first_mine = self._db.execute("SELECT count(*), min(at) FROM failures WHERE client = ?",
                                                (client,)).fetchone()
            total, first = self._db.execute("SELECT count(*), min(at) FROM failures").fetchone()
        if mine >= PER_CLIENT:
            raise TooManyLogins(f"{mine} failed logins from this client in {WINDOW_S:.0f} s; try again later",
                                retry_after=max(1, int(first_mine + WINDOW_S - now) + 1))
        if total >= IN_TOTAL:
            raise TooManyLogins(f"{total} failed logins in {WINDOW_S:.0f} s; logins pause for a while",
                                retry_after=max(1, int(first + WINDOW_S - now) + 1))

    def failed(self, client: str, now: float | None = None) -> None:
        with self._lock:
            self._db.execute("INSERT INTO failures VALUES (?, ?)", (client, now or time.time()))
