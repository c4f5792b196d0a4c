"""The OpenAPI document can be trusted: a property test (schemathesis) against the live Serve app.

Every operation gets requests generated from its declared parameters and bodies, valid and not,
plus methods it does not support; every answer must be declared (status, content type, body
schema), never a 5xx, and a 405 says what is allowed. Bounded: a few examples per operation.

Operations that would change what later tests of the session see (pausing or purging a queue,
bulk actions, creating queues or schedules) are left out of the fuzzing; their declarations are
checked by the unit test below.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from schemathesis.engine import Status
from schemathesis.engine import events

pytestmark = pytest.mark.ray

#: schemathesis.toml, inline: its coverage phase (boundary and invalid values, methods a path does not
#: support) and its fuzzing phase, a few examples per operation; the checks that hold for every answer.
#: Left out: positive_data_acceptance (a request valid by the schema may still be refused, e.g. an
#: unknown job type), and the stateful checks (they need links between operations).
CONFIG = """
[generation]
max-examples = 12
[phases.examples]
enabled = false
[phases.stateful]
enabled = false
[checks]
enabled = false
[checks.not_a_server_error]
enabled = true
[checks.status_code_conformance]
enabled = true
[checks.content_type_conformance]
enabled = true
[checks.response_headers_conformance]
enabled = true
[checks.response_schema_conformance]
enabled = true
[checks.negative_data_rejection]
enabled = true
[checks.missing_required_header]
enabled = true
[checks.unsupported_method]
enabled = true
[checks.allow_header_conformance]
enabled = true
[checks.ignored_auth]
enabled = true
"""
#: (method, path) left out: they change state other tests share.
STATEFUL = [("POST", "/v1/queues/{queue}/pause"), ("POST", "/v1/queues/{queue}/resume"),
            ("POST", "/v1/queues/{queue}/purge"), ("POST", "/v1/jobs/cancel"), ("POST", "/v1/jobs/retry"),
            ("POST", "/v1/jobs/delete"), ("PUT", "/v1/queues/{queue}"), ("POST", "/v1/schedules"),
            ("POST", "/v1/jobs"), ("POST", "/v1/renders"), ("POST", "/v1/queues/{queue}/lease"),
            ("PUT", "/v1/triggers/{name}"), ("PUT", "/v1/hooks/{name}")]


def fuzz(url: str, token: str) -> tuple[int, list[str]]:
    """Run schemathesis's engine (what ``st run`` runs) against ``url``; the failed checks, one line each."""
    config = schemathesis.config.SchemathesisConfig.from_str(CONFIG)
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config,
                                          headers={"Authorization": f"Bearer {token}"})
    schema.config.update(headers={"Authorization": f"Bearer {token}"})
    for method, path in STATEFUL:
        schema = schema.exclude(method=method, path=path)
    requests, problems = 0, []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            requests += len(event.recorder.interactions)
            for case_id, checks in event.recorder.checks.items():
                node = event.recorder.cases.get(case_id)
                case = getattr(node, "value", None)
                sent = {k: v for k, v in (("path", getattr(case, "path_parameters", None)),
                                          ("query", getattr(case, "query", None)),
                                          ("body", getattr(case, "body", None)))
                        if v and type(v).__name__ != "NotSet"}
                problems += [f"{event.label}: {check.name}: {check.failure_info.failure.title} {str(sent)[:300]}"
                             for check in checks if check.status == Status.FAILURE and check.failure_info]
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            problems.append(f"{getattr(event, 'label', 'run')}: error: {event.info.message}")
    return requests, problems


def test_every_answer_is_declared(api, settings):
    requests, problems = fuzz(api, settings.api_token)
    assert requests > 200, requests
    assert not problems, "\n".join(f"{n} x {p}" for p, n in Counter(problems).most_common())


def test_every_route_declares_its_body_parameters_and_errors(tmp_path):
    from actors.settings import Settings
    from serve.app import create_app
    from serve.openapi import missing_bodies

    app = create_app(Settings(state_dir=str(tmp_path), api_token="a", worker_token="w", secret="s"))
    spec = app.openapi()
    assert missing_bodies(spec) == []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for param in op.get("parameters", ()):
                if param["in"] == "path":
                    shape = param["schema"]
                    assert "pattern" in shape or "enum" in shape, (method, path, param)
            if path != "/healthz":
                assert {"401", "404", "422"} <= set(op["responses"]), (method, path, sorted(op["responses"]))
            for code, answer in op["responses"].items():
                if code.startswith("4"):
                    schema_ref = answer["content"]["application/json"]["schema"]
                    assert schema_ref == {"$ref": "#/components/schemas/Error"}, (method, path, code)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
