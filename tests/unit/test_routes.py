"""serve/routes: one router per resource, put together by create_app; answered here without Ray or a server."""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path

import pytest

from actors.settings import Settings
from serve.app import create_app

ROOT = Path(__file__).resolve().parents[2]
JOB = "j_0123456789abcdef0123"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(Settings(state_dir=str(tmp_path_factory.mktemp("state")), api_token="a", worker_token="w",
                               secret="s"))


async def _ask(app, method: str, path: str) -> tuple[int, dict, dict]:
    """One body-less request straight to the ASGI app: (status, headers, JSON body)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"127.0.0.1:8000"), (b"authorization", b"Bearer a")]}
    answer: dict = {"body": b""}
    received = []

    async def receive():
        if not received:
            received.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = {k.decode(): v.decode() for k, v in message.get("headers", ())}
        else:
            answer["body"] += message.get("body", b"")

    await asyncio.wait_for(app(scope, receive, send), 10)
    return answer["status"], answer["headers"], json.loads(answer["body"])


@pytest.mark.parametrize("method, path, allow", [
    ("PATCH", "/v1/jobs", "GET, HEAD, POST"),
    ("PUT", f"/v1/jobs/{JOB}", "DELETE, GET, HEAD"),
    ("DELETE", "/v1/queues/default", "GET, HEAD, PUT"),
    ("GET", "/v1/tokens", "POST"),
    ("PUT", f"/v1/jobs/{JOB}/logs", "GET, HEAD"),  # the routers' routes, not only the app's own
    ("PUT", "/dashboard/api/queues", "GET, HEAD"),
    ("GET", "/v1/renders", "POST"),  # a job package's router
])
async def test_a_wrong_method_is_told_the_methods_of_every_router(app, method, path, allow):
    status, headers, body = await _ask(app, method, path)
    assert (status, headers.get("allow"), body["error"]) == (405, allow, "MethodNotAllowed")
    assert f"use {allow} (see /docs)" in body["message"]


def test_each_router_module_says_what_it_owns_and_stays_small():
    for path in [*(ROOT / "serve" / "routes").glob("*.py"), ROOT / "serve" / "deps.py", ROOT / "serve" / "errors.py"]:
        module = ast.parse(path.read_text())
        assert ast.get_docstring(module), f"{path.name} opens with no docstring"
        assert len(path.read_text().splitlines()) <= 500, path.name


def test_ray_errors_are_translated_once_in_the_facade():
    """The queue facade (``Queues._ask``) turns Ray's errors into dojo's; no module of serve/ catches one, and
    the dashboard keeps no copy of an API handler."""
    assert "ray.exceptions" in (ROOT / "actors" / "facade.py").read_text()
    assert not [p.name for p in (ROOT / "serve").rglob("*.py") if "ray.exceptions" in p.read_text()]
    source = (ROOT / "serve" / "dashboard" / "routes.py").read_text()
    defined = {node.name for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.FunctionDef,
                                                                                      ast.AsyncFunctionDef))}
    assert not defined & {"call", "view", "job_logs"}
