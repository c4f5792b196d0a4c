"""Defining job types: the ``@job`` decorator, the registry and ``JobContext``.

A job type is a function ``perform(ctx, payload) -> result`` plus its defaults::

    from actors.jobs import job

    @job("thumbnail", max_attempts=5, timeout=120, num_cpus=1)
    def thumbnail(ctx, payload):
        ctx.progress(0.5, stage="resize")
        return {"ok": True}

The returned value (JSON-able, small) is kept as the job's result. Types are
found by name; the queue refuses an unknown name and lists the known ones.
"""

from __future__ import annotations

import importlib
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from . import durable
from .exceptions import ConfigError, InvalidInput, UnknownJobType

try:
    from opentelemetry.trace import INVALID_SPAN as _NO_SPAN
except ImportError:  # pragma: no cover  (ray[serve] brings opentelemetry-api)
    _NO_SPAN = None


@dataclass(frozen=True)
class Backoff:
    """How long to wait before attempt n+1 after attempt n failed."""

    strategy: str = "exponential"  # "exponential" or "fixed"
    delay: float = 1.0
    cap: float = 300.0
    jitter: float = 0.1  # fraction of the delay, spread both ways

    def __post_init__(self):
        if self.strategy not in ("exponential", "fixed"):
            raise InvalidInput(f"backoff must be 'exponential' or 'fixed', got {self.strategy!r}")
        if self.delay < 0 or self.cap < 0 or not 0 <= self.jitter <= 1:
            raise InvalidInput("backoff delay and cap must be >= 0 and jitter within 0..1")

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay after the failure of ``attempt`` (1-based): within 0..cap, jitter included.

        Jitter spreads a delay ``jitter`` of itself both ways, but never past the cap: a delay at the
        cap is spread below it only, so capped retries still do not all land at the same instant.
        """
        base = self.delay if self.strategy == "fixed" else self.delay * 2.0 ** min(attempt - 1, 1000)
        base = min(base, self.cap)
        if self.jitter:
            spread = base * self.jitter
            base = (rng or random).uniform(base - spread, min(base + spread, self.cap))
        return min(self.cap, max(0.0, base))

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "delay": self.delay, "cap": self.cap, "jitter": self.jitter}


@dataclass(frozen=True)
class Resources:
    """What one attempt needs from a Ray node."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    custom: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        if self.num_cpus < 0 or self.num_gpus < 0 or any(v < 0 for _, v in self.custom):
            raise InvalidInput("resources must be >= 0")

    @classmethod
    def from_dict(cls, data: dict | None) -> "Resources":
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise InvalidInput(f"resources must be an object like {{'num_cpus': 1}}, got {type(data).__name__}")
        unknown = set(data) - {"num_cpus", "num_gpus", "custom"}
        if unknown:
            raise InvalidInput(f"unknown resource keys {sorted(unknown)}; expected num_cpus, num_gpus, custom")
        custom = data.get("custom") or {}
        try:
            return cls(
                num_cpus=float(data.get("num_cpus", 1.0)),
                num_gpus=float(data.get("num_gpus", 0.0)),
                custom=tuple(sorted((str(k), float(v)) for k, v in custom.items())),
            )
        except (TypeError, ValueError, AttributeError):
            raise InvalidInput("resources values must be numbers, e.g. {'num_cpus': 1, 'custom': {'tts': 1}}") from None

    def to_dict(self) -> dict:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "custom": dict(self.custom)}

    def ray_options(self) -> dict:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.custom:
            options["resources"] = dict(self.custom)
        return options


@dataclass(frozen=True)
class JobType:
    name: str
    perform: Callable[["JobContext", Any], Any] | None
    max_attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float | None = None
    resources: Resources = field(default_factory=Resources)
    #: Jobs of an external type are never dispatched as Ray tasks; workers lease them over HTTP.
    external: bool = False
    #: Called with the payload at enqueue; raises InvalidInput to refuse it.
    validate: Callable[[Any], None] | None = None
    #: Called once when all children of a job of this type are final (flows).
    on_children_done: Callable[["JobContext", Any, list], Any] | None = None
    #: Jobs one runner process runs at once on threads (for I/O-bound work; CPU-bound keeps 1).
    threads: int = 1
    #: "thread" (default): attempts share runner processes and are stopped on their own (cancel event,
    #: their child processes killed); "process": each attempt has a runner process to itself, for code that
    #: cannot be stopped cooperatively (a long C call): after the grace its process ends, harming nobody.
    isolation: str = "thread"


REGISTRY: dict[str, JobType] = {}


def job(
    name: str | None = None,
    *,
    max_attempts: int = 3,
    backoff: str = "exponential",
    retry_delay: float = 1.0,
    retry_cap: float = 300.0,
    retry_jitter: float = 0.1,
    timeout: float | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    resources: dict[str, float] | None = None,
    validate: Callable[[Any], None] | None = None,
    on_children_done: Callable[["JobContext", Any, list], Any] | None = None,
    threads: int = 1,
    isolation: str = "thread",
):
    """Register ``perform(ctx, payload)`` as a job type (the function's name by default).

    A cancel or timeout stops one attempt: ``ctx.cancelled`` is set (``ctx.check_cancelled()``
    raises), the child processes it spawned are killed, and it has a short grace to return. Code
    that cannot look at ``ctx`` should use ``isolation="process"`` (one attempt per runner process):
    a thread cannot be killed, so an attempt that ignores its stop ends its whole process once its
    neighbours are done.

    ``on_children_done(ctx, payload, outcomes)`` runs once all children the job
    enqueued (``ctx.enqueue_many``) are final; ``outcomes`` is a list of
    ``{"id", "type", "status", "result", "error"}``; its return value becomes
    the job's result.
    """

    def register(perform):
        job_type = JobType(
            name=name or perform.__name__,
            perform=perform,
            max_attempts=max_attempts,
            backoff=Backoff(backoff, retry_delay, retry_cap, retry_jitter),
            timeout=timeout,
            resources=Resources(num_cpus, num_gpus, tuple(sorted((resources or {}).items()))),
            validate=validate,
            on_children_done=on_children_done,
            threads=threads,
            isolation=isolation,
        )
        register_type(job_type)
        perform.job_type = job_type
        return perform

    return register


def external_job(name: str, *, max_attempts: int = 3, timeout: float | None = None, **backoff) -> JobType:
    """Register a type that only workers outside Ray run, through the pull API."""
    job_type = JobType(name=name, perform=None, max_attempts=max_attempts, timeout=timeout, external=True,
                       backoff=Backoff(**backoff) if backoff else Backoff())
    register_type(job_type)
    return job_type


def register_type(job_type: JobType) -> None:
    if job_type.max_attempts < 1:
        raise ConfigError(f"job type {job_type.name!r}: max_attempts must be >= 1")
    if not 1 <= job_type.threads <= 256:
        raise ConfigError(f"job type {job_type.name!r}: threads must be within 1..256")
    if job_type.isolation not in ("thread", "process"):
        raise ConfigError(f"job type {job_type.name!r}: isolation must be 'thread' or 'process', "
                          f"got {job_type.isolation!r}")
    if job_type.isolation == "process" and job_type.threads != 1:
        raise ConfigError(f"job type {job_type.name!r}: isolation='process' runs one attempt per process; "
                          f"drop threads={job_type.threads}")
    REGISTRY[job_type.name] = job_type


def load_modules(modules) -> dict[str, JobType]:
    """Import the modules that register job types; return the registry."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"cannot import job module {module!r} listed in DOJO_JOB_MODULES: {exc}") from exc
    return REGISTRY


def extensions(modules, kind: str) -> list:
    """What job packages offer beside their job types, imported only by whoever asks for it.

    The package of a job module (the module itself when it is top-level) names its extras in
    module-level strings, ``"package.module:attribute"``: ``ROUTES`` (a FastAPI ``APIRouter`` the API
    mounts) and ``CLI`` (a function ``add_commands(subparsers, kit)`` the ``dojo`` command calls).
    Only the package's ``__init__`` is imported to read them, so the ``dojo`` command starts fast, and
    job processes, which import the job modules only, never load a web framework.
    """
    found, seen = [], set()
    for module_name in modules:
        package = module_name.rpartition(".")[0] or module_name
        if package in seen:
            continue
        seen.add(package)
        try:
            spec = getattr(importlib.import_module(package), kind, None)
        except ImportError as exc:
            raise ConfigError(f"cannot import {package!r} (of the job module {module_name!r}): {exc}") from exc
        if spec is None:
            continue
        target, _, attribute = spec.partition(":")
        try:
            found.append(getattr(importlib.import_module(target), attribute))
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{package!r} names {kind} = {spec!r}, which cannot be loaded: {exc}") from exc
    return found


def lookup(types: Mapping[str, JobType], name: str) -> JobType:
    """The job type ``name`` of ``types`` (a registry: the queue rules are given theirs), or UnknownJobType."""
    try:
        return types[name]
    except KeyError:
        known = ", ".join(sorted(types)) or "none registered"
        raise UnknownJobType(f"unknown job type {name!r}; known types: {known}", known=sorted(types)) from None


def get_type(name: str) -> JobType:
    """A type of this process's registry (what the job modules it imported registered)."""
    return lookup(REGISTRY, name)


#: Children per enqueue call from a job (the queue's ``Limits.max_batch``).
ENQUEUE_CHUNK = 1000


class PermanentFailure(Exception):
    """Raise from a job to fail it now, without the retries left."""


class JobCancelled(Exception):
    """The attempt was cancelled or timed out; raised by ``ctx.check_cancelled()``."""


class Reporter(Protocol):
    """Where a context sends what the job reports (the queue actor, or a list in tests)."""

    def progress(self, event: dict) -> None: ...

    def heartbeat(self) -> None: ...

    def log(self, line: str) -> None: ...

    def enqueue(self, specs: list[dict]) -> list[dict]: ...

    def step(self, index: int, name: str, result: Any) -> None:
        """Commit a step's result (returns once it is durable)."""


class JobContext:
    """What a running job sees: who it is, and how to report progress."""

    def __init__(self, *, job_id: str, type: str, queue: str, attempt: int, max_attempts: int,
                 reporter: Reporter, cancelled: threading.Event | None = None, steps: list[dict] | None = None):
        self.job_id = job_id
        self.type = type
        self.queue = queue
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.cancelled = cancelled or threading.Event()
        #: The attempt's OpenTelemetry span (actors/tracing.py): ``with tracer.start_as_current_span(...)``
        #: inside the job nests under it. A non-recording span unless tracing is configured.
        self.span = _NO_SPAN
        self._reporter = reporter
        self._steps = durable.Steps(steps)

    def progress(self, fraction: float | None = None, stage: str | None = None, message: str | None = None,
                 **data) -> None:
        """Report progress; it becomes an event on the job's stream."""
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be within 0..1, got {fraction}")
        self._reporter.progress({"fraction": fraction, "stage": stage, "message": message, **data})

    def heartbeat(self) -> None:
        """Extend the lease; dojo does this in the background, call it only from long C calls' gaps."""
        self._reporter.heartbeat()

    def log(self, line: str) -> None:
        """Add a line to the job's log; lines are sent in batches, in order with its progress."""
        self._reporter.log(str(line))

    def check_cancelled(self) -> None:
        """Raise JobCancelled if the attempt was cancelled or timed out."""
        if self.cancelled.is_set():
            raise JobCancelled(f"job {self.job_id} attempt {self.attempt} was cancelled")

    # -- durable steps (actors/durable.py) ------------------------------------------------
    def step(self, name: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Run ``fn(*args, **kwargs)`` once per job: its JSON result is committed before it is returned,
        and a later attempt gets the recorded result instead of running ``fn`` again."""
        index, recorded = self._steps.next(name)
        if recorded is not None:
            return recorded["result"]
        result = fn(*args, **kwargs)
        self._reporter.step(index, name, result)
        self._steps.add(name, result)
        return result

    def sleep(self, seconds: float) -> float:
        """Sleep durably: the attempt ends, the job holds no runner, and it resumes here after ``seconds``.

        Returns the time it was due to wake (the same on every replay)."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 366 * 86400:
            raise ValueError(f"sleep takes 0..{366 * 86400} seconds, got {seconds!r}")
        return self.sleep_until(time.time() + seconds)

    def sleep_until(self, t: float) -> float:
        """Sleep durably until the epoch time ``t`` (see ``sleep``); returns ``t`` as first recorded."""
        name = self._steps.auto_name("sleep")
        index, recorded = self._steps.next(name)
        if recorded is not None:
            until = recorded["result"]["until"]
            if time.time() >= until:
                return until
            step = None  # woken early (a clock step back): sleep the rest
        else:
            until = float(t)
            step = {"index": index, "name": name, "result": {"until": until}}
        if time.time() >= until or not getattr(self._reporter, "durable", False):
            if step is not None:
                self._reporter.step(index, name, step["result"])
                self._steps.add(name, step["result"])
            time.sleep(max(0.0, until - time.time()))  # no queue to hand the wait to (a local context), or none due
            return until
        raise durable.Suspend(until, step=step)  # the step is recorded with the suspension, in one report

    def wait_for(self, channel: str, match: dict | None = None, timeout: float | None = None) -> Any:
        """Suspend the job until a message on ``channel`` matches ``match``; return that message.

        Raises ``WaitTimeout`` after ``timeout`` seconds (None: a year).
        """
        if match is not None and not isinstance(match, dict):
            raise ValueError("match must be a dict of key-values the message must have, or None")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 <= timeout <= 366 * 86400):
            raise ValueError(f"timeout takes 0..{366 * 86400} seconds, got {timeout!r}")
        name = self._steps.auto_name("wait")
        index, recorded = self._steps.next(name)
        if recorded is not None:
            if recorded["result"].get("timeout"):
                raise durable.WaitTimeout(f"no message on channel {channel!r} matched {match!r} within "
                                          f"{timeout} s")
            return recorded["result"]["message"]
        if not getattr(self._reporter, "durable", False):
            raise RuntimeError("wait_for needs a queue: run the job through dojo, not in a local context")
        until = time.time() + (366 * 86400 if timeout is None else timeout)
        raise durable.Suspend(until, {"channel": channel, "match": match or {}, "step": name, "index": index})

    def enqueue(self, type: str, payload: Any = None, **options) -> dict:
        """Enqueue one child job of this job (a flow)."""
        return self.enqueue_many([{"type": type, "payload": payload, **options}])[0]

    def enqueue_many(self, specs: list[dict]) -> list[dict]:
        """Enqueue children (any number: sent in calls of ``ENQUEUE_CHUNK``); the callback runs when all are final.

        Give children a ``unique_key``: if this attempt is a retry, a child that an earlier attempt
        enqueued and that already finished is returned again instead of being run and counted twice.
        """
        specs = list(specs)
        out: list[dict] = []
        for start in range(0, len(specs), ENQUEUE_CHUNK):
            out += self._reporter.enqueue(specs[start:start + ENQUEUE_CHUNK])
        return out


class LocalReporter:
    """Keeps what a job reports in lists: run a job type in a test without a queue."""

    def __init__(self):
        self.events: list[dict] = []
        self.logs: list[str] = []
        self.heartbeats = 0
        self.children: list[dict] = []
        self.steps: list[dict] = []

    def progress(self, event: dict) -> None:
        self.events.append({"at": time.time(), **event})

    def step(self, index: int, name: str, result: Any) -> None:
        self.steps.append({"index": index, "name": name, "result": result})

    def heartbeat(self) -> None:
        self.heartbeats += 1

    def log(self, line: str) -> None:
        self.logs.append(line)

    def enqueue(self, specs: list[dict]) -> list[dict]:
        self.children.extend(specs)
        return [{"id": f"local-{len(self.children) - len(specs) + i}", **spec} for i, spec in enumerate(specs)]


def local_context(type: str = "local", job_id: str = "j_local", attempt: int = 1) -> JobContext:
    """A context whose reports land in ``ctx._reporter`` (a LocalReporter)."""
    return JobContext(job_id=job_id, type=type, queue="default", attempt=attempt, max_attempts=1,
                      reporter=LocalReporter())
