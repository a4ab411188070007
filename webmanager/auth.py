"""Who is calling and may they: the cluster token, users' bearer tokens and session cookies (with CSRF), and the role each route needs."""

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
    via: str  # cluster | token | session


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
        return Identity(user.name, user.role, "token") if user else "wrong bearer token (see `tandem token` or `tandem user token`)"
    cookie = request.cookies.get(sessions.SESSION_COOKIE)
    if cookie:
        user = sessions.session_user(node.config.session_key, node.image, cookie)
        return Identity(user.name, user.role, "session") if user else "the session has expired or ended: log in again"
    return "log in (POST /api/v1/login) or send a bearer token (see `tandem token`)"


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
