"""One OpenTelemetry trace, end to end, as an operator gets it: ``dojo up`` with an OTLP endpoint set.

The collector is a local OTLP/HTTP receiver speaking the real wire format (protobuf
``ExportTraceServiceRequest`` on ``POST /v1/traces``), so the spans are the ones the
exporter in each process really sends: the API replica's request and enqueue spans, the
runner's wait and attempt spans, and those of the children the attempt enqueues, each in
its own Ray worker process. A caller's ``traceparent`` header makes the job part of the
caller's trace. The cluster is this test's own, started from an empty HOME.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.acceptance.test_first_run import BIN, _fresh_env, _run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CALLER_TRACE = "5e" * 16
CALLER_SPAN = "c0" * 8


class Collector(ThreadingHTTPServer):
    """Keeps every span it is sent, with its service's name."""

    def __init__(self):
        self.spans: list[dict] = []
        super().__init__(("127.0.0.1", 0), _Receive)

    def serve(self) -> str:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Receive(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (the http.server interface)
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                              ExportTraceServiceResponse)

        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.server.spans.append({
                        "service": service, "name": span.name, "trace": span.trace_id.hex(),
                        "id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                        "attributes": {a.key: a.value.string_value or a.value.int_value for a in span.attributes},
                    })
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def _spans_of(collector: Collector, job_ids: set[str], timeout: float = 60) -> list[dict]:
    """The spans of the caller's trace, once every job has its attempt span."""
    deadline = time.monotonic() + timeout
    while True:
        mine = [span for span in list(collector.spans) if span["trace"] == CALLER_TRACE]
        attempted = {s["attributes"].get("dojo.job_id") for s in mine if s["name"].startswith("dojo.attempt")}
        if job_ids <= attempted or time.monotonic() > deadline:
            return mine
        time.sleep(0.2)


def test_one_trace_from_the_callers_request_to_each_childs_attempt(tmp_path):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    collector = Collector()
    home = tmp_path / "home"
    home.mkdir()
    env = {**_fresh_env(home), "OTEL_EXPORTER_OTLP_ENDPOINT": collector.serve(),
           "OTEL_BSP_SCHEDULE_DELAY": "200"}  # export every 200 ms instead of every 5 s
    dojo = str(BIN / "dojo")
    try:
        _run([dojo, "up"], env, tmp_path)
        token = _run([dojo, "token"], env, tmp_path).stdout.strip()
        url = f"http://127.0.0.1:{env['DOJO_PORT']}"
        auth = {"Authorization": f"Bearer {token}"}
        response = requests.post(f"{url}/v1/jobs", json={"type": "fanout", "payload": {"count": 2}},
                                 headers={**auth, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}, timeout=60)
        assert response.status_code == 201, response.text
        parent_id = response.json()["id"]
        deadline = time.monotonic() + 120
        while (job := requests.get(f"{url}/v1/jobs/{parent_id}", headers=auth, timeout=30).json())["status"] \
                not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.3)
        assert job["status"] == "succeeded", json.dumps(job)
        children = set(job["result"]["children"])
        assert len(children) == 2

        spans = _spans_of(collector, {parent_id, *children})
    finally:
        subprocess.run([dojo, "down"], env=env, cwd=tmp_path, capture_output=True, timeout=120)
        collector.shutdown()

    by_id = {span["id"]: span for span in spans}

    def one(name: str, job_id: str | None = None) -> dict:
        found = [s for s in spans if s["name"] == name and (job_id is None or s["attributes"].get("dojo.job_id") == job_id)]
        assert len(found) == 1, f"{name} {job_id}: {len(found)} spans in {json.dumps(spans, indent=1)[:4000]}"
        return found[0]

    request = one("POST /v1/jobs")
    assert request["parent"] == CALLER_SPAN and request["service"] == "dojo-api"
    enqueue = one("dojo.enqueue")
    assert by_id[enqueue["parent"]] is request
    for name in ("dojo.wait fanout", "dojo.attempt fanout"):
        span = one(name, parent_id)
        assert span["parent"] == enqueue["id"] and span["service"] == "dojo-runner"
    attempt = one("dojo.attempt fanout", parent_id)
    for child in children:  # each child's wait and attempt hang under the attempt that enqueued it
        for name in ("dojo.wait echo", "dojo.attempt echo"):
            assert one(name, child)["parent"] == attempt["id"]
