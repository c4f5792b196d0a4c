"""OpenTelemetry traces of a job, off unless configured: the request, the enqueue, the wait, each attempt.

One trace follows a job from ``POST /v1/jobs`` through the queue to each of
its attempts and on to the children those attempts enqueue::

    POST /v1/jobs (the API) ── dojo.enqueue ─┬─ dojo.wait <type>     (due → the attempt's start)
                                              └─ dojo.attempt <type>  (ctx.span: add your own spans)
                                                   └─ a child's dojo.wait / dojo.attempt ...

The link between processes is the job's ``trace`` field, a W3C ``traceparent``
kept in its record: the API sets it from its enqueue span (a client may send
its own, to join the job to its trace), the lease hands it to the runner, and
``ctx.enqueue_many`` gives children the attempt's. Spans are recorded only
where a tracer provider is configured: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (needs
``pip install .[tracing]``) or ``DOJO_TRACING=console``, in the environment of
``dojo up``; otherwise the OpenTelemetry API's no-op spans cost next to nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re

from .exceptions import InvalidInput

log = logging.getLogger(__name__)

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_configured: bool | None = None


def check(value) -> str | None:
    """A spec's ``trace``: None or a W3C traceparent ('00-<trace id>-<span id>-<flags>')."""
    if value is None:
        return None
    if not isinstance(value, str) or not TRACEPARENT.match(value):
        raise InvalidInput(f"trace must be a W3C traceparent like '00-<32 hex>-<16 hex>-01', got {value!r}",
                           field="trace")
    return value


def setup(service: str, exporter=None) -> bool:
    """Install a tracer provider for this process when tracing is configured (or ``exporter`` is given).

    Idempotent; returns whether spans are recorded. Tests pass an in-memory exporter.
    """
    global _configured
    if _configured is not None and exporter is None:
        return _configured
    endpoint, mode = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"), os.environ.get("DOJO_TRACING", "")
    if exporter is None and not endpoint and not mode:
        _configured = False
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed; "
                        "pip install '.[tracing]' (opentelemetry-exporter-otlp-proto-http)")
            _configured = False
            return False
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def tracer():
    from opentelemetry import trace

    return trace.get_tracer("dojo")


def traceparent(span=None) -> str | None:
    """The traceparent of ``span`` (default: the current one), or None when it records nothing."""
    from opentelemetry import trace
    from opentelemetry.propagate import inject

    span = span or trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def _parent(value: str | None):
    from opentelemetry.propagate import extract

    return extract({"traceparent": value}) if value else None


@contextlib.contextmanager
def enqueue_span(headers, specs: list):
    """The API's span around an enqueue: its parent is the request's ``traceparent``, if any; specs that
    carry no ``trace`` of their own get the span's, so their jobs join this trace."""
    if not setup("dojo-api"):
        yield None
        return
    from opentelemetry.trace import SpanKind

    with tracer().start_as_current_span("POST /v1/jobs", context=_parent(headers.get("traceparent")),
                                        kind=SpanKind.SERVER, attributes={"http.request.method": "POST",
                                                                          "url.path": "/v1/jobs"}):
        with tracer().start_as_current_span("dojo.enqueue", attributes={"dojo.jobs": len(specs)}) as span:
            parent = traceparent(span)
            for spec in specs:
                if isinstance(spec, dict) and "trace" not in spec and parent:
                    spec["trace"] = parent
            yield span


@contextlib.contextmanager
def attempt_span(lease: dict, now_ns: int | None = None):
    """Spans of one attempt in the runner: its wait in the queue (ended), then the attempt (current)."""
    from opentelemetry import trace

    if not lease.get("trace") or not setup("dojo-runner"):
        yield trace.INVALID_SPAN
        return
    parent = _parent(lease["trace"])
    attrs = {"dojo.job_id": lease["job_id"], "dojo.queue": lease["queue"], "dojo.attempt": lease["attempt"]}
    if lease.get("ready_at") and lease.get("started_at"):
        wait = tracer().start_span(f"dojo.wait {lease['type']}", context=parent, attributes=attrs,
                                   start_time=int(lease["ready_at"] * 1e9))
        wait.end(end_time=int(max(lease["started_at"], lease["ready_at"]) * 1e9))
    with tracer().start_as_current_span(f"dojo.attempt {lease['type']}", context=parent, attributes=attrs,
                                        record_exception=True) as span:
        yield span


def error_status(message: str):
    from opentelemetry.trace import Status, StatusCode

    return Status(StatusCode.ERROR, message[:200])


def child_specs(specs: list[dict]) -> list[dict]:
    """Specs enqueued from inside an attempt carry the attempt's span as their ``trace`` (unless they have one)."""
    parent = traceparent() if _configured else None
    if not parent:
        return specs
    return [spec if not isinstance(spec, dict) or "trace" in spec else {**spec, "trace": parent} for spec in specs]
