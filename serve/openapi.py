"""The API's OpenAPI document: what every route accepts and every status it answers.

FastAPI writes the skeleton from the routes; ``document(app)`` completes it in
one place, so a client generated from it (or a fuzzer) can trust it:

- every path and query parameter with a known shape has its pattern or enum
  (a job id, a queue name, a lease id, a channel, a schedule, an action);
- every route that reads a body declares its schema (``BODIES``, unless the
  route declares one itself with ``openapi_extra``);
- every route declares its errors, all with dojo's ``{"error", "message"}``
  body (``Error``), not FastAPI's validation body that dojo never sends;
- bearer-token security is declared, with the public routes marked public.

The patterns document what the handlers check; the handlers still check them
with their own messages (a malformed job id is a 422 that says how ids look).
"""

from __future__ import annotations

import copy

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import iter_route_contexts
from starlette.routing import Match

from actors.ids import QUEUE_NAME, STATUSES

JOB_ID = r"^j_[0-9a-f]{20}(\.[a-z0-9][a-z0-9_-]{0,39})?$"
QUEUE = {"type": "string", "pattern": QUEUE_NAME.pattern}
CHANNEL = {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,100}$"}  # channels, triggers, hooks
STRING_LIST = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200}, "maxItems": 100}

#: Parameters by name (and, where one name means different things, by path).
PARAMS: dict[str, dict] = {
    "job_id": {"type": "string", "pattern": JOB_ID},
    "cursor": {"type": "string", "pattern": rf"^({JOB_ID[1:-1]})?$", "description": "empty: the first page"},
    "queue": QUEUE,
    "lease_id": {"type": "string", "pattern": JOB_ID[:-1] + r":[0-9]+$"},
    "key": {"type": "string", "pattern": r"^[A-Za-z0-9._\-/=+@ ]{1,1024}$"},
    "status": {"type": "string", "pattern": rf"^(({'|'.join(STATUSES)})(,({'|'.join(STATUSES)}))*)?$",
               "description": "comma-separated statuses; empty: any"},
}
PATH_PARAMS: dict[tuple[str, str], dict] = {
    ("/v1/channels/{name}/messages", "name"): CHANNEL,
    ("/v1/schedules/{name}", "name"): {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"},
    ("/v1/schedules/{name}/{action}", "name"): {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"},
    ("/v1/schedules/{name}/{action}", "action"): {"type": "string", "enum": ["pause", "resume", "run"]},
    ("/v1/triggers/{name}", "name"): CHANNEL,
    ("/v1/hooks/{name}", "name"): CHANNEL,
    ("/v1/ratelimits/{name}", "name"): {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"},
    ("/v1/leases/{lease_id}/{action}", "action"): {"type": "string",
                                                   "enum": ["heartbeat", "progress", "complete", "fail"]},
}


def _json(schema: dict, required: bool = True, description: str = "") -> dict:
    body = {"required": required, "content": {"application/json": {"schema": schema}}}
    if description:
        body["description"] = description
    return body


FILTER = {"type": "object", "additionalProperties": False, "properties": {
    "queue": QUEUE, "type": {"oneOf": [{"type": "string"}, STRING_LIST]},
    "status": {"oneOf": [{"type": "string", "enum": list(STATUSES)},
                         {"type": "array", "items": {"type": "string", "enum": list(STATUSES)}}]},
    "created_after": {"type": "number"}, "created_before": {"type": "number"},
    "limit": {"type": "integer", "minimum": 1, "maximum": 1000}, "cursor": {"type": "string", "pattern": JOB_ID}}}
TYPES = {"type": "object", "additionalProperties": False, "properties": {"types": STRING_LIST}}

#: Request bodies of the routes that do not declare theirs, by (method, path).
BODIES: dict[tuple[str, str], dict] = {
    ("post", "/v1/channels/{name}/messages"): _json({"description": "Any JSON value: the message."},
                                                    description="The message to publish (any JSON)."),
    ("put", "/v1/ratelimits/{name}"): _json({"type": "object", "required": ["rate"], "properties": {
        "rate": {"type": "number", "exclusiveMinimum": 0, "description": "tokens per second"},
        "burst": {"type": "number", "exclusiveMinimum": 0, "description": "bucket size (default: rate)"}}}),
    ("post", "/v1/tokens"): _json({"type": "object", "required": ["scope", "name"], "properties": {
        "scope": {"type": "string", "enum": ["job", "channel"]},
        "name": {"type": "string", "minLength": 1, "maxLength": 200, "description": "a job id or a channel"},
        "queue": {**QUEUE, "description": "the channel's queue (default: default)"},
        "ttl": {"type": "number", "minimum": 1, "maximum": 30 * 86400}}}),
    ("post", "/v1/queues/{queue}/lease"): _json({"type": "object", "properties": {
        "worker": {"type": "string", "minLength": 1, "maxLength": 100},
        "types": {"type": "array", "items": {"type": "string"}, "description": "external job types"},
        "n": {"type": "integer", "minimum": 1, "maximum": 100},
        "visibility_timeout": {"type": "number", "minimum": 1, "maximum": 3600}}}),
    ("post", "/v1/leases/{lease_id}/{action}"): _json({"type": "object", "properties": {
        "fraction": {"type": "number", "minimum": 0, "maximum": 1}, "stage": {"type": "string"},
        "message": {"type": "string"}, "result": {"description": "complete: the job's result (any JSON)"},
        "result_key": {"type": "string"}, "error": {"description": "fail: a message or {type, message}"},
        "retry": {"type": "boolean"}}}, required=False,
        description="progress: {fraction, stage, message}; complete: {result}; fail: {error, retry}; "
                    "heartbeat: nothing"),
    ("put", "/v1/triggers/{name}"): _json({"type": "object", "required": ["channel", "job"],
                                           "additionalProperties": False, "properties": {
        "channel": CHANNEL,
        "match": {"type": "object", "description": "key-values a message must have"},
        "job": {"type": "object", "required": ["type"], "description": "the job spec; the message is added to "
                                                                         "its payload as 'message'"}}}),
    ("put", "/v1/hooks/{name}"): _json({"type": "object", "required": ["channel"], "additionalProperties": False,
                                        "properties": {
        "channel": CHANNEL,
        "rotate": {"type": "boolean", "description": "make a new secret"}}}),
    ("post", "/v1/hooks/{name}"): _json({"description": "Any JSON value: published to the hook's channel."},
                                        description="Signed with the hook's secret in X-Dojo-Signature."),
    ("post", "/v1/jobs/cancel"): _json(FILTER),
    ("post", "/v1/jobs/retry"): _json(FILTER),
    ("post", "/v1/jobs/delete"): _json(FILTER),
    ("post", "/v1/queues/{queue}/pause"): _json(TYPES, required=False),
    ("post", "/v1/queues/{queue}/resume"): _json(TYPES, required=False),
    ("post", "/v1/queues/{queue}/purge"): _json({**TYPES, "required": ["confirm"], "properties": {
        **TYPES["properties"], "confirm": {"type": "string", "description": "the queue's name"}}}),
}

#: Routes that take no body at all (the rest of POST/PUT must declare one).
NO_BODY = {("post", "/v1/jobs/{job_id}/cancel"), ("post", "/v1/jobs/{job_id}/retry"), ("put", "/v1/queues/{queue}"),
           ("post", "/v1/schedules/{name}/{action}")}

ERROR = {"type": "object", "required": ["error", "message"], "additionalProperties": True, "properties": {
    "error": {"type": "string", "description": "the kind of error, e.g. InvalidInput"},
    "message": {"type": "string", "description": "what was wrong and how to fix it"}}}
STATUS_TEXT = {400: "Malformed body (not JSON, too deep)", 401: "No token, or not a valid one",
               403: "The token does not grant this", 404: "No such job, queue or object",
               409: "Not in a state that allows this (or a stale lease)", 413: "Body over the size limit",
               422: "Invalid input: the message names the field", 429: "Too many requests or streams",
               503: "The queue's actor is restarting; retry"}
PUBLIC = {"/healthz", "/v1/objects/{key}"}  # no token: nothing, and a signed URL
#: (method, path) public on a path whose other methods need a token: a hook is called with its signature.
PUBLIC_OPERATIONS = {("post", "/v1/hooks/{name}")}


def _errors(path: str, method: str, has_body: bool, public: bool) -> list[int]:
    if path == "/healthz":
        return []
    codes = [401, 404, 422, 503] if public else [401, 403, 404, 422, 429, 503]
    if has_body:
        codes += [400, 413]
    if method in ("post", "put", "delete"):
        codes.append(409)
    return sorted(set(codes))


def document(app: FastAPI) -> dict:
    """The OpenAPI document of ``app``, complete (see the module docstring)."""
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR
    for unused in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(unused, None)
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer", "description":
                                                "the API token, the worker token (pull API) or a scoped read token"}}
    spec["security"] = [{"bearer": []}]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for param in op.get("parameters", ()):
                shape = PATH_PARAMS.get((path, param["name"])) or PARAMS.get(param["name"])
                if shape and param["in"] in ("path", "query"):
                    schema = param.setdefault("schema", {})
                    default = schema.get("default")
                    schema.clear()
                    schema.update(copy.deepcopy(shape))
                    if default is not None:
                        schema["default"] = default
            if "requestBody" not in op and (method, path) in BODIES:
                op["requestBody"] = copy.deepcopy(BODIES[(method, path)])
            # Public: listed here, or declared by the route itself (openapi_extra={"security": []}).
            public = path in PUBLIC or (method, path) in PUBLIC_OPERATIONS or op.get("security") == []
            responses = op.setdefault("responses", {})
            for code in _errors(path, method, "requestBody" in op, public):
                responses[str(code)] = {"description": STATUS_TEXT[code], "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            if public:
                op["security"] = []
    objects = spec["paths"].get("/v1/objects/{key}", {}).get("get")
    if objects:
        objects["responses"]["200"] = {"description": "The object's bytes", "content": {
            "*/*": {"schema": {"type": "string", "format": "binary"}}}}
    return spec


def missing_bodies(spec: dict) -> list[str]:
    """POST/PUT operations that declare no request body and are not known to take none (for the tests)."""
    return [f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method, op in ops.items()
            if method in ("post", "put") and "requestBody" not in op and (method, path) not in NO_BODY]


def allowed_methods(app: FastAPI, scope) -> list[str]:
    """The methods some route of ``app`` answers at the request's path (the ``Allow`` of a 405), the
    routes of included routers too."""
    methods = set()
    for route in iter_route_contexts(app.routes):
        if getattr(route, "methods", None) and route.matches({**scope, "method": "GET"})[0] != Match.NONE:
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Serve ``document(app)`` as the app's OpenAPI (computed once, on first use)."""
    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi
