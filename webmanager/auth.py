"""Who is calling and may they: the cluster token, users' bearer tokens, session cookies (with CSRF) and session tokens,
the role each route needs, and which other origins (the cluster's servers, for the UI after a failover) may call."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from aiohttp import web

from . import live, sessions, users
from .appkeys import NODE
from .replies import error
from .users import Role

logger = logging.getLogger(__name__)

CLUSTER_USER = "cluster"  # the service identity of the cluster token (CLI, peers, scripts holding the cluster secret)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# (method, route) -> the least role allowed; None: no authentication. A route not named here needs viewer to read
# (GET) and admin for anything else.
ROUTE_ROLES: dict[tuple[str, str], Role | None] = {
    ("GET", "/"): None,  # the UI's page and files: it logs in itself
    ("GET", "/ui"): None,
    ("POST", "/api/v1/login"): None,
    ("POST", "/api/v1/logout"): None,
    ("PUT", "/api/v1/points/{name}"): Role.operator,
    ("POST", "/api/v1/alarms/{name}/{action}"): Role.operator,
    ("POST", "/api/v1/points"): Role.engineer,
    ("POST", "/api/v1/config"): Role.engineer,
    ("GET", "/api/v1/audit"): Role.engineer,
    ("POST", "/api/v1/cluster/transfer"): Role.admin,
    ("GET", "/api/v1/users"): Role.admin,
    ("PUT", "/api/v1/users/{name}"): Role.admin,
    ("DELETE", "/api/v1/users/{name}"): Role.admin,
    ("POST", "/api/v1/users/{name}/tokens"): Role.admin,
}


class Identity(NamedTuple):
    name: str
    role: Role
    via: str  # cluster | token | session (cookie) | session-token (the session as a bearer, from the UI on another server)


IDENTITY = web.RequestKey("identity", Identity)


def required_role(method: str, route: str) -> Role | None:
    method = "GET" if method == "HEAD" else method
    return ROUTE_ROLES.get((method, route), Role.viewer if method in SAFE_METHODS else Role.admin)


def identity(request: web.Request) -> Identity:
    """The authenticated caller of a request that passed the middleware."""
    return request[IDENTITY]


def _identify(request: web.Request) -> Identity | str:
    """The caller, or why not (the 401 message)."""
    node = request.app[NODE]
    scheme, _, token = live.credentials(request).partition(" ")
    if scheme == "Bearer" and token:
        if hmac.compare_digest(token.encode(), node.config.api_token.encode()):
            return Identity(CLUSTER_USER, Role.admin, "cluster")
        user = users.token_user(node.image, token)
        if user is not None:
            return Identity(user.name, user.role, "token")
        user = sessions.session_user(node.config.session_key, node.image, token)
        if user is not None:
            return Identity(user.name, user.role, "session-token")
        return "wrong bearer token (see `tandem token` or `tandem user token`), or the session has expired"
    cookie = request.cookies.get(sessions.SESSION_COOKIE)
    if cookie:
        user = sessions.session_user(node.config.session_key, node.image, cookie)
        return Identity(user.name, user.role, "session") if user else "the session has expired or ended: log in again"
    return "log in (POST /api/v1/login) or send a bearer token (see `tandem token`)"


def _allowed_origin(request: web.Request) -> str | None:
    """The request's Origin when it is another server of the cluster (whose UI follows a failover to this one)."""
    origin = request.headers.get("Origin")
    node = request.app[NODE]
    return origin if origin and any(n.url == origin for n in node.config.cluster.nodes if n.is_server) else None


@web.middleware
async def cross_origin(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """CORS for the cluster's own servers only: answers their preflights and lets their pages read the answers. The UI
    sends the session as a bearer token there (no cookies cross origins), so no credentials mode is allowed."""
    origin = _allowed_origin(request)
    if origin is None:
        return await handler(request)
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin", "Access-Control-Expose-Headers": "ETag"}
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        headers |= {
            "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
            "Access-Control-Max-Age": "600",
        }
        return web.Response(status=204, headers=headers)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(headers)
        raise
    response.headers.update(headers)
    return response


@web.middleware
async def authenticate(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """401 without valid credentials, 403 for a session's state change without its CSRF token or a role too low."""
    resource = request.match_info.route.resource
    needed = required_role(request.method, resource.canonical if resource is not None else request.path)
    if needed is None:
        return await handler(request)
    caller = _identify(request)
    if isinstance(caller, str):
        return error(401, caller)
    if caller.via == "session" and request.method not in SAFE_METHODS and not sessions.csrf_valid(request, request.app[NODE].config.session_key):
        return error(403, f"missing or wrong {sessions.CSRF_HEADER} header (the {sessions.CSRF_COOKIE} cookie's value)")
    if caller.role < needed:
        return error(403, f"needs the {needed.name} role; {caller.name} is {caller.role.name}", role=needed.name)
    request[IDENTITY] = caller
    return await handler(request)
