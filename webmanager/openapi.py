"""The OpenAPI 3.1 document of a node's API (GET /api/v1/openapi.json), built from the routes its app registers."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from pydantic import BaseModel, create_model
from pydantic.json_schema import models_json_schema

from cluster.names import MAX_NAME_LENGTH, NAME_SCHEMA
from plugins.building import Building, Name
from plugins.manager import PluginSet

from . import bodies, ui
from .appkeys import MAX_BUCKETS, MAX_SAMPLES, NDJSON, PLUGINS
from .auth import required_role
from .sessions import CSRF_HEADER, SESSION_COOKIE
from .users import Role

logger = logging.getLogger(__name__)

PATH = "/api/v1/openapi.json"
DOCUMENT = web.AppKey("openapi_document", dict)
SCHEMAS = "#/components/schemas/"
INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMAS + name}


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False, example: Any = None) -> dict[str, Any]:
    param = {"name": name, "in": where, "required": required or where == "path", "schema": schema, "description": description}
    return param if example is None else {**param, "example": example}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


POINT_NAME = _param("name", "path", NAME_SCHEMA, "The point's name.", example="ahu1.temp")
ALARM_NAME = _param("name", "path", NAME_SCHEMA, "The alarm's name.", example="ahu1.temp.high")
TREND_NAME = _param("name", "path", {"type": "string", "minLength": 1}, "A trend's name, or a point with exactly one trend.", example="ahu1.temp")
JOURNAL = [
    _param("after", "query", INT64, "Entries after this sequence number (default 0)."),
    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 10_000}, "At most this many entries (default 1000)."),
]
KINDS = _param(
    "kinds", "query", {"type": "string"}, "Only these sections, comma-separated: the others are not sent and not changed.", example="logic"
)
USER_NAME = _param("name", "path", NAME_SCHEMA, "The user's name.", example="alice")
# status -> (components/responses name, description); 401 and 403 are in every authenticated operation
ERRORS = {
    400: ("BadRequest", "The request is invalid; `error` says why (and `field` or `problems` where, when it can)."),
    401: ("Unauthorized", "No valid credentials: a bearer token (see `tandem token`, `tandem user token`) or a session cookie (log in)."),
    403: ("Forbidden", f"The caller's role is too low (`role` names the one needed), or a session's state change lacks its {CSRF_HEADER} header."),
    404: ("NotFound", "No such point, alarm, trend or user."),
    409: ("Conflict", "This server is not the active one (`active`, `active_api` name it), or the state changed meanwhile."),
    412: ("PreconditionFailed", "The building configuration changed since the ETag given as If-Match was read."),
    413: ("TooLarge", "The body is larger than the server takes: a building over 8 MiB of JSON goes as application/x-ndjson."),
    422: ("Unprocessable", "The transfer was refused or did not complete in time."),
    429: ("TooManyRequests", "Too many failed logins for this user or from this address: locked out for `Retry-After` seconds."),
    503: ("Unavailable", "The change was not committed (no quorum, or not in time), or the active server is still applying."),
}


def _op(summary: str, tag: str, ok: dict[str, Any], errors: tuple[int, ...] = (), params: list[dict[str, Any]] | None = None, body: type[BaseModel] | str | None = None) -> dict[str, Any]:
    """One operation: `ok` maps success status -> response; `errors` are the error statuses it answers besides 401 and 403
    (which document() adds to authenticated operations)."""
    responses = {str(status): response for status, response in ok.items()}
    responses |= {str(status): {"$ref": f"#/components/responses/{ERRORS[status][0]}"} for status in sorted(errors)}
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {"required": True, "content": _json(_ref(body if isinstance(body, str) else body.__name__))}
    return operation


def _building_upload(operation: dict[str, Any]) -> dict[str, Any]:
    """POST /api/v1/config also takes a building of any size as NDJSON, one {"section": entry} per line (gzip allowed)."""
    lines = {"schema": {"type": "string"}, "example": '{"devices": {"name": "ahu1", "driver": "modbus", "host": "10.0.0.5"}}\n'}
    operation["requestBody"]["content"][NDJSON] = lines
    return operation


def _ok(description: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": content or JSON_OBJECT}


def _journal(function: str) -> dict[str, Any]:
    return _op(f"The {function} journal, oldest first", function, {200: _ok("`entries`: seq, ts and the event.")}, (400,), JOURNAL)


# (method, path as aiohttp's canonical form) -> operation; document() takes those the app registers
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/api/v1/node"): _op("This node's own status", "cluster", {200: _ok("Role, term, indexes, lag, peers, plugins.")}),
    ("GET", "/api/v1/status"): _op(
        "The cluster status, as seen from this node",
        "cluster",
        {200: _ok("Every node with role, lag and problems; `activations`: the failover history, newest first, each with the gap its new active measured.")},
    ),
    ("POST", "/api/v1/cluster/transfer"): _op(
        "Hand the active role to another server", "cluster", {200: _ok("The transfer's result: from, to, term.")}, (400, 409, 422), body=bodies.Transfer
    ),
    ("GET", "/metrics"): _op(
        "Metrics in the Prometheus text format", "cluster", {200: _ok("Role, term, commit and apply counters, lag, devices.", {"text/plain": {"schema": {"type": "string"}}})}
    ),
    ("GET", PATH): _op("This document", "cluster", {200: _ok("The OpenAPI 3.1 document of this node's API.")}),
    ("POST", "/api/v1/points"): _op(
        "Report a batch of field values (one log entry)", "points", {200: _ok("`accepted`: how many updates.")}, (400, 409, 503), body=bodies.PointBatch
    ),
    ("GET", "/api/v1/points"): _op(
        "One page of the points, sorted by name, with value, quality, time stamp, pending write, device and whether writable",
        "points",
        {200: _ok("`points` (at most `limit`), `total` (how many match in all) and `next` (the `after` of the next page; null on the last).")},
        (400,),
        [
            _param("prefix", "query", {"type": "string"}, "Only names starting with this."),
            _param("search", "query", {"type": "string"}, "Only names containing this (any case)."),
            _param(
                "after", "query", {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH}, "Only names sorting after this: the `next` of the previous page."
            ),
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 10000}, "At most this many (default 1000)."),
        ],
    ),
    ("GET", "/api/v1/devices"): _op(
        "The devices: settings, point count and their qualities, and whether each runs and its last error as the active server sees it",
        "devices",
        {200: _ok("`devices` and `health_from` (the active server, None when it could not be asked).")},
    ),
    ("GET", "/api/v1/plugins"): _op(
        "The plugins this server asked for and loaded, the drivers, functions and notifiers they registered, and problems",
        "plugins",
        {200: _ok("`node`, `required`, `loaded`, `drivers`, `functions`, `notifiers`, `problems`.")},
    ),
    ("GET", "/api/v1/points/{name}"): _op(
        "A point's value, quality, time stamp and pending write",
        "points",
        {200: _ok("The point.", _json(_ref(bodies.Point.__name__)))},
        (404, 409, 503),
        [POINT_NAME, _param("consistent", "query", {"type": "boolean"}, "Read on the active only, after it applied every committed entry.")],
    ),
    ("PUT", "/api/v1/points/{name}"): _op(
        "Write a point (an operator write, committed first)",
        "points",
        {200: _ok("A virtual point: its new value.", _json(_ref(bodies.Point.__name__))), 202: _ok("A device point: committed as desired state (`seq`).")},
        (400, 409, 503),
        [POINT_NAME],
        bodies.PointWrite,
    ),
    ("GET", "/api/v1/live"): _op(
        "The live feed: a WebSocket of point values, alarm states and role changes (frames: webmanager/live.py)",
        "points",
        {101: {"description": "Switching to the WebSocket protocol."}},
        (400,),
        [_param("token", "query", {"type": "string"}, "A bearer token (the cluster's or a user's), for clients that cannot set headers on a WebSocket.")],
    ),
    ("GET", "/api/v1/audit"): _op(
        "The audit trail, oldest first: configuration changes, user changes, operator writes and actions, with user and time",
        "audit",
        {200: _ok("`entries`: seq, ts, user, action, target, detail.")},
        (400,),
        JOURNAL,
    ),
    ("POST", "/api/v1/login"): _op(
        "Log in: sets the session cookie (HttpOnly) and the CSRF cookie; answers the CSRF token to send as " + CSRF_HEADER,
        "users",
        {200: _ok("`user`, `role`, `csrf`, `session` (the session as a bearer token, for the other servers after a failover), `expires_in` (seconds).")},
        (400, 401, 429),
        body=bodies.Login,
    ),
    ("POST", "/api/v1/logout"): _op("Log out: clears this browser's session cookies", "users", {200: _ok("`logged_out`.")}),
    ("GET", "/api/v1/me"): _op("Who is calling: user, role and how authenticated", "users", {200: _ok("`user`, `role`, `via` (cluster, token, session, session-token).")}),
    ("GET", "/api/v1/users"): _op("The users: name, role, whether a password is set, token ids (never secrets)", "users", {200: _ok("`users`.")}),
    ("PUT", "/api/v1/users/{name}"): _op(
        "Create a user (role required) or change its role and/or password (committed, audited)",
        "users",
        {200: _ok("The user, changed."), 201: _ok("The user, created.")},
        (400, 409, 503),
        [USER_NAME],
        bodies.UserChange,
    ),
    ("DELETE", "/api/v1/users/{name}"): _op("Delete a user (its sessions and tokens stop working)", "users", {200: _ok("`deleted`.")}, (404, 409, 503), [USER_NAME]),
    ("POST", "/api/v1/users/{name}/tokens"): _op(
        "A new API token for the user, returned this once", "users", {201: _ok("`user` and `token`.")}, (404, 409, 503), [USER_NAME]
    ),
    ("GET", "/api/v1/config"): _op(
        "The building configuration (devices, points, functions' entries); its ETag names this revision",
        "config",
        {200: _ok("The building.", _json(_ref("BuildingConfig")))},
        (400,),
        [KINDS],
    ),
    ("POST", "/api/v1/config"): _building_upload(
        _op(
            "Apply a building configuration (validated, then committed in bounded log entries that become visible at once), or"
            " with check=1 only validate it (on any server)",
            "config",
            {200: _ok("`changed`: documents changed (or that would change, with `checked`). With Accept: application/x-ndjson, a"
                      " line per step ({\"progress\": {\"step\": ...}}), the last one the outcome with its `status`.",
                      {**JSON_OBJECT, NDJSON: {"schema": {"type": "string"}}})},
            (400, 409, 412, 413, 503),
            [
                _param("check", "query", {"type": "boolean"}, "Validate only; commit nothing."),
                _param("If-Match", "header", {"type": "string"}, "The ETag of GET /api/v1/config: apply only if nothing changed since."),
                KINDS,
            ],
            "BuildingConfig",
        )
    ),
    ("GET", "/api/v1/alarms"): _op("Alarms and their states, and the notifiers' progress", "alarms", {200: _ok("`alarms` and `notifiers`.")}),
    ("GET", "/api/v1/alarms/journal"): _journal("alarms"),
    ("POST", "/api/v1/alarms/{name}/{action}"): _op(
        "Acknowledge, shelve or unshelve an alarm",
        "alarms",
        {200: _ok("The alarm after the action.")},
        (400, 404, 409, 503),
        [ALARM_NAME, _param("action", "path", {"type": "string", "enum": ["ack", "shelve", "unshelve"]}, "What to do.")],
        bodies.AlarmAction,
    ),
    ("GET", "/api/v1/logic"): _op("Logic rules and their state", "logic", {200: _ok("`rules`.")}),
    ("GET", "/api/v1/logic/journal"): _journal("logic"),
    ("GET", "/api/v1/schedules"): _op("Schedules, their current and next values", "schedules", {200: _ok("`schedules`.")}),
    ("GET", "/api/v1/schedules/journal"): _journal("schedules"),
    ("GET", "/api/v1/trends"): _op(
        "Trends and the trend store's state",
        "trends",
        {200: _ok("`trends` (each with its newest sample, `latest`, and its oldest sample's time, `first`) and `store` (its queue and dropped samples).")},
    ),
    ("GET", "/api/v1/trends/_samples"): _op(
        "For a peer filling its gap: the samples of commands (after, upto]",
        "trends",
        {200: _ok("`samples` and the last command covered (`upto`).")},
        (400,),
        [_param("after", "query", INT64, "Log position (exclusive).", True), _param("upto", "query", INT64, "Log position (inclusive).", True)],
    ),
    ("GET", "/api/v1/trends/{name}"): _op(
        "A trend's samples in [from, to), raw or in buckets; JSON or CSV",
        "trends",
        {200: _ok("Samples or buckets.", {**JSON_OBJECT, "text/csv": {"schema": {"type": "string"}}})},
        (400, 404),
        [
            TREND_NAME,
            _param("from", "query", {"type": "string"}, "Start: seconds since the epoch or ISO 8601 (default: an hour before `to`).", example="2026-11-26T08:00:00Z"),
            _param("to", "query", {"type": "string"}, "End (exclusive), like `from` (default: now).", example="1795000000"),
            _param("step", "query", {"type": "number", "exclusiveMinimum": 0}, f"Bucket width in seconds (at most {MAX_BUCKETS} buckets)."),
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_SAMPLES}, "At most this many raw samples."),
            _param("format", "query", {"type": "string", "enum": ["json", "csv"]}, "Answer as JSON (default) or CSV."),
        ],
    ),
}

def _body_schemas() -> dict[str, Any]:
    """The request and response bodies' JSON schemas, generated from their pydantic models."""
    _, schema = models_json_schema([(model, "validation") for model in bodies.MODELS], ref_template=SCHEMAS + "{model}")
    return schema["$defs"]


def _building_schemas(plugins: PluginSet) -> dict[str, Any]:
    """The building's JSON schemas from its pydantic models: the base sections plus one per loaded function."""
    sections = {
        kind: (list[create_model(spec.model.__name__, __base__=spec.model, name=(Name, ...))], [])  # type: ignore[valid-type]
        for kind, spec in sorted(plugins.functions.items())
    }
    model = create_model("BuildingConfig", __base__=Building, **sections)  # type: ignore[call-overload]
    schema = model.model_json_schema(ref_template=SCHEMAS + "{model}")
    return {**schema.pop("$defs", {}), "BuildingConfig": schema}


def _secured(operation: dict[str, Any], role: Role | None) -> dict[str, Any]:
    """The operation with the role it needs (`x-role`) and its 401/403 answers, or open to anyone (`security: []`)."""
    if role is None:
        return {**operation, "security": []}
    refs = {str(status): {"$ref": f"#/components/responses/{ERRORS[status][0]}"} for status in (401, 403)}
    return {**operation, "x-role": role.name, "responses": dict(sorted({**operation["responses"], **refs}.items()))}


def document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of the routes `app` registers (HEAD aside); a route without an entry in OPERATIONS is left out
    with a warning (and fails tests/test_openapi.py)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        key = (route.method, route.resource.canonical)
        if route.method == "HEAD" or key in ui.ROUTES:
            continue
        if key not in OPERATIONS:
            logger.warning("route %s %s is not described in webmanager/openapi.py", *key)
            continue
        paths.setdefault(key[1], {})[key[0].lower()] = _secured(OPERATIONS[key], required_role(*key))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tandem node API", "version": "1", "description": "A Tandem BMS server's (or the witness's) HTTP API."},
        "paths": paths,
        "components": {
            "schemas": {**_body_schemas(), **_building_schemas(app[PLUGINS])},
            "responses": {name: {"description": text, "content": _json(_ref(bodies.Error.__name__))} for name, text in ERRORS.values()},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},  # the cluster token (role admin) or a user's API token
                "cookieAuth": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE, "description": f"After POST /api/v1/login; state changes also need {CSRF_HEADER}."},
            },
        },
        "security": [{"bearerAuth": []}, {"cookieAuth": []}],
    }


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT])


async def _build(app: web.Application) -> None:
    app[DOCUMENT] = document(app)  # at startup: every module has registered its routes by then


def add_openapi(app: web.Application) -> None:
    """Serve GET /api/v1/openapi.json on `app`, built when it starts."""
    app.on_startup.append(_build)
    app.router.add_get(PATH, openapi)
