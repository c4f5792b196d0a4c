"""The clip collector's settings, read from the environment (``DOJO_*``) once.

Every field documents its variable. Defaults talk to the real Helix; point
``DOJO_HELIX_URL`` at ``python -m pipelines.clips.fake_helix`` for a local run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from actors.settings import _default_state_dir

from .exceptions import ClipsConfigError


def _number(env, name: str, default: float | None, *, minimum: float = 0.0, integer: bool = False) -> float | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ClipsConfigError(f"{name} must be a number, got {raw!r}") from None
    if integer and value != int(value):
        raise ClipsConfigError(f"{name} must be a whole number, got {raw!r}")
    if value < minimum:
        raise ClipsConfigError(f"{name} must be >= {minimum}, got {raw!r}")
    return int(value) if integer else value


def _optional_rate(env) -> float | None:
    if env.get("DOJO_HELIX_RATE", "").strip().lower() in ("none", "off"):
        return None
    return _number(env, "DOJO_HELIX_RATE", ClipsSettings.rate, minimum=0.001)


@dataclass(frozen=True)
class ClipsSettings:
    #: DOJO_HELIX_URL: Helix base URL; requests go to <url>/clips.
    helix_url: str = "https://api.twitch.tv/helix"
    #: DOJO_HELIX_CLIENT_ID: the app's client id (sent as Client-Id).
    client_id: str = ""
    #: DOJO_HELIX_TOKEN: an app access token (sent as Authorization: Bearer).
    token: str = ""
    #: DOJO_CLIPS_DB: path of the clip database (SQLite) on the head node; default <DOJO_STATE_DIR>/clips.sqlite3.
    #: Jobs on other nodes never open it: they write through its actor (cluster_db.open_clip_db).
    db_path: str = ""
    #: DOJO_CLIPS_STREAMERS: where streamers come from: 'db' (the streamers table) or a .csv/.parquet path.
    streamers: str = "db"
    #: DOJO_CLIPS_LOOKBACK_HOURS: a crawl without explicit times covers the last this many hours.
    lookback_hours: float = 24.0
    #: DOJO_CLIPS_WINDOW_HOURS: long ranges are split into windows this long (one cursor walk each).
    window_hours: float = 24.0
    #: DOJO_CLIPS_PAGE_SIZE: Helix ``first`` (1..100).
    page_size: int = 100
    #: DOJO_HELIX_RATE: requests per second the client id may make (Twitch: 800/min); empty/none = no bucket.
    rate: float | None = 800 / 60
    #: DOJO_HELIX_BURST: the bucket's size (Twitch: 800).
    burst: int = 800
    #: DOJO_HELIX_MAX_IN_FLIGHT: most requests in flight to the Helix host at once.
    max_in_flight: int = 32
    #: DOJO_HELIX_RETRIES: attempts per request on 5xx / dropped connections before giving up.
    retries: int = 6
    #: DOJO_HELIX_TIMEOUT: seconds one HTTP request may take.
    timeout: float = 30.0
    #: DOJO_HELIX_LIMITER: 'auto' (shared inside Ray, else local), 'shared' (the queue actor's bucket, for
    #: every worker), 'local' (one per process) or 'module:callable' returning a Limiter.
    limiter: str = "auto"

    @classmethod
    def from_env(cls, env=None) -> "ClipsSettings":
        env = os.environ if env is None else env
        state_dir = env.get("DOJO_STATE_DIR") or _default_state_dir()
        settings = cls(
            helix_url=(env.get("DOJO_HELIX_URL") or cls.helix_url).rstrip("/"),
            client_id=env.get("DOJO_HELIX_CLIENT_ID", ""),
            token=env.get("DOJO_HELIX_TOKEN", ""),
            db_path=env.get("DOJO_CLIPS_DB") or str(Path(state_dir) / "clips.sqlite3"),
            streamers=env.get("DOJO_CLIPS_STREAMERS") or "db",
            lookback_hours=_number(env, "DOJO_CLIPS_LOOKBACK_HOURS", cls.lookback_hours, minimum=0.001),
            window_hours=_number(env, "DOJO_CLIPS_WINDOW_HOURS", cls.window_hours, minimum=0.001),
            page_size=_number(env, "DOJO_CLIPS_PAGE_SIZE", cls.page_size, minimum=1, integer=True),
            rate=_optional_rate(env),
            burst=_number(env, "DOJO_HELIX_BURST", cls.burst, minimum=1, integer=True),
            max_in_flight=_number(env, "DOJO_HELIX_MAX_IN_FLIGHT", cls.max_in_flight, minimum=1, integer=True),
            retries=_number(env, "DOJO_HELIX_RETRIES", cls.retries, minimum=1, integer=True),
            timeout=_number(env, "DOJO_HELIX_TIMEOUT", cls.timeout, minimum=0.001),
            limiter=env.get("DOJO_HELIX_LIMITER") or "auto",
        )
        if settings.page_size > 100:
            raise ClipsConfigError(f"DOJO_CLIPS_PAGE_SIZE must be within 1..100 (Helix's limit), got {settings.page_size}")
        return settings

    def require_credentials(self) -> None:
        """Raise a clear error before any request when credentials are missing."""
        missing = [name for name, value in (("DOJO_HELIX_CLIENT_ID", self.client_id),
                                            ("DOJO_HELIX_TOKEN", self.token)) if not value]
        if missing:
            raise ClipsConfigError(f"{' and '.join(missing)} must be set to call Helix at {self.helix_url} "
                                   "(an app's client id and an app access token)")
