"""One OpenTelemetry trace from the enqueue to a child's attempt (actors/tracing.py), with the SDK's in-memory
exporter: the spans the API and the runner make, linked through the job's ``trace`` field and its lease."""


import pytest

from actors import tracing
from actors.exceptions import InvalidInput

from .conftest import make_queue

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def spans():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    assert tracing.setup("dojo-test", exporter=exporter)
    return exporter


@pytest.fixture
def q(path):
    return make_queue(path)


def test_one_trace_from_the_request_through_the_wait_and_attempt_to_a_child(spans, q):
    spans.clear()
    client = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"  # a caller's own trace, sent as its traceparent header
    specs = [{"type": "echo", "payload": 1}]
    with tracing.enqueue_span({"traceparent": client}, specs):
        [(job, _)] = q.enqueue_many(specs, T0)
    assert job["trace"] and job["trace"].split("-")[1] == "ab" * 16
    [lease] = q.lease("r", None, 1, T0 + 2)
    with tracing.attempt_span(lease) as attempt:
        attempt.set_attribute("user.note", "the job's own attribute")  # what ctx.span offers job code
        [(child, _)] = q.enqueue_many(tracing.child_specs([{"type": "echo", "parent_id": job["id"]}]), T0 + 3)
    [child_lease] = q.lease("r", None, 1, T0 + 4)
    with tracing.attempt_span(child_lease):
        pass
    finished = {s.name + (" child" if s.attributes.get("dojo.job_id") == child["id"] else ""): s
                for s in spans.get_finished_spans()}
    request, enqueue = finished["POST /v1/jobs"], finished["dojo.enqueue"]
    wait, run = finished["dojo.wait echo"], finished["dojo.attempt echo"]
    child_wait, child_run = finished["dojo.wait echo child"], finished["dojo.attempt echo child"]
    assert {s.context.trace_id for s in finished.values()} == {int("ab" * 16, 16)}
    assert request.parent.span_id == int("cd" * 8, 16)
    assert enqueue.parent.span_id == request.context.span_id
    assert wait.parent.span_id == enqueue.context.span_id and run.parent.span_id == enqueue.context.span_id
    assert child_wait.parent.span_id == run.context.span_id and child_run.parent.span_id == run.context.span_id
    assert (wait.end_time - wait.start_time) == pytest.approx(2e9, rel=1e-6)  # from due to the attempt's start
    assert run.attributes["user.note"] == "the job's own attribute"


def test_a_job_without_a_trace_gets_no_spans_and_a_bad_trace_is_refused(spans, q):
    spans.clear()
    [(job, _)] = q.enqueue_many([{"type": "echo"}], T0)
    [lease] = q.lease("r", None, 1, T0)
    with tracing.attempt_span(lease) as span:
        assert not span.get_span_context().is_valid
    assert spans.get_finished_spans() == ()
    with pytest.raises(InvalidInput) as caught:
        q.enqueue_many([{"type": "echo", "trace": "not-a-traceparent"}], T0)
    assert caught.value.context["field"] == "trace"
