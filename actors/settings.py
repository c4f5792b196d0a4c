"""One settings object, read from the environment (``DOJO_*``) once.

Every field documents its variable; the CLI flags of ``dojo up`` mirror them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from .exceptions import ConfigError

#: Ray namespace shared by every dojo process, so named actors are found.
NAMESPACE = "dojo"
#: The job types a new user gets: samples, presentation rendering, clip crawling.
DEFAULT_JOB_MODULES = ("pipelines.sample", "pipelines.render.job", "pipelines.clips.jobs", "pipelines.batch.job")
#: DOJO_INGRESS values: who listens on DOJO_PORT (see Settings.ingress).
INGRESS_MODES = ("replica", "serve")
#: Bounds of DOJO_URL_TTL: a signed object URL lives at least a minute and at most a week.
URL_TTL_RANGE = (60.0, 7 * 86400.0)
#: What a job's process must never hold: they mint any token, cookie or URL. Jobs parse untrusted
#: decks and media, and so do their children (ffmpeg); they get DOJO_OBJECTS_KEY instead.
JOB_SECRETS = ("DOJO_API_TOKEN", "DOJO_WORKER_TOKEN", "DOJO_SECRET", "DOJO_CALLBACK_KEY")


def _default_state_dir() -> str:
    return platformdirs.user_data_dir("dojo", appauthor=False)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _env_int(name: str, default: int) -> int:
    value = _env_float(name, default)
    if value != int(value):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _env_list(name: str, default: str) -> tuple[str, ...]:
    raw = os.environ.get(name, default)
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    #: DOJO_STATE_DIR: where queue databases, tokens and local objects live.
    state_dir: str = field(default_factory=_default_state_dir)
    #: DOJO_HOST / DOJO_PORT: where the HTTP API listens (127.0.0.1 unless configured).
    host: str = "127.0.0.1"
    port: int = 8000
    #: DOJO_API_TOKEN: bearer token for the API; read from <state_dir>/tokens.json when unset.
    api_token: str = ""
    #: DOJO_WORKER_TOKEN: bearer token for the pull API used by workers outside Ray.
    worker_token: str = ""
    #: DOJO_SECRET: key that signs job-scoped tokens and object URLs.
    secret: str = ""
    #: DOJO_JOB_MODULES: comma-separated modules whose import registers job types.
    job_modules: tuple[str, ...] = DEFAULT_JOB_MODULES
    #: DOJO_CONCURRENCY: default number of jobs a queue runs at once.
    concurrency: int = 16
    #: DOJO_LEASE_TTL: seconds an attempt's lease lasts without a heartbeat.
    lease_ttl: float = 30.0
    #: DOJO_PRIORITY_AGING: seconds of waiting worth one priority point, across every job type of a queue:
    #: a job that has waited 60 s longer ranks with one of a point more, so low priorities never starve.
    #: 0: strict priority (a higher priority always goes first; age only breaks ties).
    priority_aging: float = 60.0
    #: DOJO_MAX_PAYLOAD_BYTES: largest JSON payload accepted for a job.
    max_payload_bytes: int = 256 * 1024
    #: DOJO_MAX_RESULT_BYTES: largest JSON result kept inline (bigger ones must go to storage).
    max_result_bytes: int = 256 * 1024
    #: DOJO_MAX_UPLOAD_BYTES: largest upload accepted (render decks).
    max_upload_bytes: int = 200 * 1024 * 1024
    #: DOJO_SQLITE_SYNC: SQLite `synchronous` pragma (FULL survives power loss, NORMAL only crashes).
    sqlite_sync: str = "FULL"
    #: DOJO_SERVE_REPLICAS: number of API replicas.
    serve_replicas: int = 1
    #: DOJO_INGRESS: who listens on DOJO_PORT. ``replica`` (default): each API replica serves it itself
    #: (uvicorn on a socket bound with SO_REUSEPORT), Serve runs no proxy; ``serve``: Serve's proxy does and
    #: forwards each request to a replica (an actor call per request, ~5-10x slower). Switching it on a
    #: running cluster needs ``dojo down`` first (Serve keeps its proxy's placement until it shuts down).
    ingress: str = "replica"
    #: DOJO_PUBLIC_URL: the API's base URL as users reach it (behind a proxy, another host);
    #: empty means http://DOJO_HOST:DOJO_PORT. Signed object URLs are built on it.
    public_url: str = ""
    #: DOJO_URL_TTL: seconds a signed object URL handed out by dojo stays valid (60 s .. 7 days).
    url_ttl: float = 86400.0
    #: DOJO_OBJECTS_KEY: signs object URLs and nothing else; derived from DOJO_SECRET (leave it unset).
    #: Job processes get it in place of the secret, so a job can hand out its outputs' URLs but mint no token.
    objects_key: str = ""
    #: DOJO_MAX_QUEUES: most queues this dojo holds (each is an actor process on the head);
    #: creating one more is refused with 409. Queues are made only by the API token's enqueues.
    max_queues: int = 64
    #: DOJO_PULL_TYPES: job types that pull workers (the worker token) may lease besides the external
    #: ones, comma-separated; ``type`` for every queue, ``queue:type`` for one. Empty: external types only.
    pull_types: tuple[str, ...] = ()
    #: DOJO_MAX_STREAMS / DOJO_MAX_STREAMS_PER_TOKEN: live streams (WebSocket, event-stream) an API replica
    #: keeps open in all, and for one token or dashboard session; one more is refused (429, close code 4429).
    max_streams: int = 1000
    max_streams_per_token: int = 100

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        settings = cls(
            state_dir=env.get("DOJO_STATE_DIR") or _default_state_dir(),
            host=env.get("DOJO_HOST", "127.0.0.1"),
            port=_env_int("DOJO_PORT", 8000),
            api_token=env.get("DOJO_API_TOKEN", ""),
            worker_token=env.get("DOJO_WORKER_TOKEN", ""),
            secret=env.get("DOJO_SECRET", ""),
            job_modules=_env_list("DOJO_JOB_MODULES", ",".join(DEFAULT_JOB_MODULES)),
            concurrency=_env_int("DOJO_CONCURRENCY", 16),
            lease_ttl=_env_float("DOJO_LEASE_TTL", 30.0),
            priority_aging=_env_float("DOJO_PRIORITY_AGING", 60.0),
            max_payload_bytes=_env_int("DOJO_MAX_PAYLOAD_BYTES", 256 * 1024),
            max_result_bytes=_env_int("DOJO_MAX_RESULT_BYTES", 256 * 1024),
            max_upload_bytes=_env_int("DOJO_MAX_UPLOAD_BYTES", 200 * 1024 * 1024),
            sqlite_sync=env.get("DOJO_SQLITE_SYNC", "FULL").upper(),
            serve_replicas=_env_int("DOJO_SERVE_REPLICAS", 1),
            ingress=env.get("DOJO_INGRESS", "replica").strip().lower() or "replica",
            public_url=env.get("DOJO_PUBLIC_URL", "").strip().rstrip("/"),
            url_ttl=_env_float("DOJO_URL_TTL", 86400.0),
            max_queues=_env_int("DOJO_MAX_QUEUES", 64),
            pull_types=_env_list("DOJO_PULL_TYPES", ""),
            max_streams=_env_int("DOJO_MAX_STREAMS", 1000),
            max_streams_per_token=_env_int("DOJO_MAX_STREAMS_PER_TOKEN", 100),
            objects_key=env.get("DOJO_OBJECTS_KEY", ""),
        )
        if not URL_TTL_RANGE[0] <= settings.url_ttl <= URL_TTL_RANGE[1]:
            raise ConfigError(f"DOJO_URL_TTL must be within {URL_TTL_RANGE[0]:.0f}..{URL_TTL_RANGE[1]:.0f} seconds, "
                              f"got {settings.url_ttl}")
        if settings.sqlite_sync not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError(f"DOJO_SQLITE_SYNC must be FULL, NORMAL or EXTRA, got {settings.sqlite_sync!r}")
        if settings.ingress not in INGRESS_MODES:
            raise ConfigError(f"DOJO_INGRESS must be replica (each API replica serves DOJO_PORT) or serve "
                              f"(Ray Serve's proxy does), got {settings.ingress!r}")
        if settings.serve_replicas < 1:
            raise ConfigError(f"DOJO_SERVE_REPLICAS must be at least 1, got {settings.serve_replicas}")
        if settings.max_queues < 1:
            raise ConfigError(f"DOJO_MAX_QUEUES must be at least 1, got {settings.max_queues}")
        if not settings.priority_aging >= 0:
            raise ConfigError(f"DOJO_PRIORITY_AGING must be 0 (strict priority) or more seconds per priority "
                              f"point, got {settings.priority_aging}")
        if settings.concurrency < 1:
            raise ConfigError(f"DOJO_CONCURRENCY must be at least 1, got {settings.concurrency}")
        if settings.objects_key and not settings.secret:
            return settings  # a job's process: it holds no tokens, on purpose (see job_env)
        return settings.with_tokens()

    def with_tokens(self) -> "Settings":
        """Fill missing tokens from ``<state_dir>/tokens.json``, creating it on first use."""
        if self.api_token and self.worker_token and self.secret:
            return self
        stored = load_or_create_tokens(Path(self.state_dir))
        return dataclasses.replace(
            self,
            api_token=self.api_token or stored["api_token"],
            worker_token=self.worker_token or stored["worker_token"],
            secret=self.secret or stored["secret"],
        )

    @property
    def tokens_path(self) -> Path:
        return Path(self.state_dir) / "tokens.json"

    @property
    def public_base(self) -> str:
        """The API's base URL for links handed to users (DOJO_PUBLIC_URL, else the listening address)."""
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def object_signing_key(self) -> str:
        """The key of signed object URLs: DOJO_OBJECTS_KEY, else derived from the secret ("" without one)."""
        if self.objects_key or not self.secret:
            return self.objects_key
        return hmac.new(self.secret.encode(), b"dojo object urls", hashlib.sha256).hexdigest()

    @property
    def objects_dir(self) -> Path:
        return Path(self.state_dir) / "objects"

    def env(self) -> dict[str, str]:
        """The environment that reproduces these settings in another process.

        Other DOJO_* variables of this process (job types' own settings, such as
        DOJO_HELIX_URL) travel along, so the queue actor and its jobs see them.
        """
        return {
            **{k: v for k, v in os.environ.items() if k.startswith("DOJO_")},
            "DOJO_STATE_DIR": self.state_dir,
            "DOJO_HOST": self.host,
            "DOJO_PORT": str(self.port),
            "DOJO_API_TOKEN": self.api_token,
            "DOJO_WORKER_TOKEN": self.worker_token,
            "DOJO_SECRET": self.secret,
            "DOJO_JOB_MODULES": ",".join(self.job_modules),
            "DOJO_CONCURRENCY": str(self.concurrency),
            "DOJO_LEASE_TTL": str(self.lease_ttl),
            "DOJO_PRIORITY_AGING": str(self.priority_aging),
            "DOJO_MAX_PAYLOAD_BYTES": str(self.max_payload_bytes),
            "DOJO_MAX_RESULT_BYTES": str(self.max_result_bytes),
            "DOJO_MAX_UPLOAD_BYTES": str(self.max_upload_bytes),
            "DOJO_SQLITE_SYNC": self.sqlite_sync,
            "DOJO_SERVE_REPLICAS": str(self.serve_replicas),
            "DOJO_INGRESS": self.ingress,
            "DOJO_PUBLIC_URL": self.public_url,
            "DOJO_URL_TTL": str(self.url_ttl),
            "DOJO_MAX_QUEUES": str(self.max_queues),
            "DOJO_PULL_TYPES": ",".join(self.pull_types),
            "DOJO_MAX_STREAMS": str(self.max_streams),
            "DOJO_MAX_STREAMS_PER_TOKEN": str(self.max_streams_per_token),
        }

    def pull_types_of(self, queue: str) -> set[str]:
        """The non-external job types pull workers may lease in ``queue`` (DOJO_PULL_TYPES)."""
        out = set()
        for entry in self.pull_types:
            where, _, name = entry.rpartition(":")
            if not where or where == queue:
                out.add(name)
        return out

    def job_env(self) -> dict[str, str]:
        """The environment of a job's process: ``env()`` without JOB_SECRETS, with the object URL key."""
        env = {k: v for k, v in self.env().items() if k not in JOB_SECRETS}
        env["DOJO_OBJECTS_KEY"] = self.object_signing_key
        return env


def scrub_job_secrets(environ=os.environ) -> None:
    """Remove JOB_SECRETS from a job process's environment (a Ray worker inherits the raylet's)."""
    for name in JOB_SECRETS:
        environ.pop(name, None)


def private_dir(path: str | os.PathLike) -> Path:
    """``path`` as a directory, creating it and its missing parents readable by this user only (0700).

    The state dir holds tokens, queue databases and objects; a directory dojo did not create
    keeps the mode its owner gave it.
    """
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by another process
            continue
        folder.chmod(0o700)  # whatever the umask
    return path


def load_or_create_tokens(state_dir: Path) -> dict[str, str]:
    """Read the generated tokens, or write new random ones (mode 0600)."""
    import json

    path = state_dir / "tokens.json"
    if path.exists():
        return json.loads(path.read_text())
    private_dir(state_dir)
    tokens = {
        "api_token": "dojo_api_" + secrets.token_urlsafe(24),
        "worker_token": "dojo_wrk_" + secrets.token_urlsafe(24),
        "secret": secrets.token_urlsafe(32),
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(tokens, fh)
    os.replace(tmp, path)
    return tokens
