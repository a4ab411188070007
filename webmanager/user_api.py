"""User management (admin) and who-am-I over the API, and the first admin created with a one-time password."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from cluster.guard import NotActive
from cluster.node import ClusterNode, RoleEvent
from cluster.raft import ProposalFailed

from . import users
from .appkeys import NODE
from .auth import CLUSTER_USER, identity
from .bodies import UserChange, read_body
from .replies import commit, error, not_active
from .sessions import CSRF_COOKIE, hashing

logger = logging.getLogger(__name__)

PASSWORD_LINE = "initial admin password: "  # printed once per cluster, on the stdout of the server that created the admin
RESERVED_NAMES = frozenset({CLUSTER_USER, users.SYSTEM_USER})
RETRY_DELAY = 1.0  # seconds before looking again after a commit of unknown outcome
UNCERTAIN_WAIT = 30.0  # seconds a proposal of unknown outcome is looked for in the image, once this server cannot retry


async def me(request: web.Request) -> web.Response:
    caller = identity(request)
    answer: dict[str, Any] = {"user": caller.name, "role": caller.role.name, "via": caller.via}
    if caller.via == "session":
        answer["csrf"] = request.cookies.get(CSRF_COOKIE)
    return web.json_response(answer)


async def list_users(request: web.Request) -> web.Response:
    return web.json_response({"users": users.listing(request.app[NODE].image)})


def _user_json(node: ClusterNode, name: str) -> dict[str, Any]:
    return next(user for user in users.listing(node.image) if user["name"] == name)


async def put_user(request: web.Request) -> web.Response:
    """Create a user (role required, password optional: without one it can use API tokens only) or change role/password."""
    node, name = request.app[NODE], request.match_info["name"]
    body = await read_body(request, UserChange, '{"role": "operator", "password": "..."}')
    if isinstance(body, web.Response):
        return body
    if name in RESERVED_NAMES:
        return error(400, f"{name!r} is reserved for the system's own identities")
    role = users.Role[body.role] if body.role is not None else None
    password = body.password
    if not node.is_active():
        return not_active(node)
    hashed = await hashing(request.app, users.hash_password, password) if password is not None else None
    try:
        command = users.put_user(node.image, name, role, hashed, identity(request).name)
    except ValueError as exc:  # a bad name (CommandError), or a new user without a role
        return error(400, str(exc))
    result = await commit(node, command, "the user changed meanwhile ({reason}); try again")
    if isinstance(result, web.Response):
        return result
    return web.json_response(_user_json(node, name), status=201 if result == 1 else 200)


async def delete_user(request: web.Request) -> web.Response:
    node, name = request.app[NODE], request.match_info["name"]
    try:
        command = users.delete_user(node.image, name, identity(request).name)
    except LookupError as exc:
        return error(404, str(exc))
    result = await commit(node, command, "the user changed meanwhile ({reason}); try again")
    return result if isinstance(result, web.Response) else web.json_response({"deleted": name})


async def new_token(request: web.Request) -> web.Response:
    """A new API token for the user: returned this once, stored as its SHA-256."""
    node, name = request.app[NODE], request.match_info["name"]
    try:
        command, token = users.new_token(node.image, name, identity(request).name)
    except LookupError as exc:
        return error(404, str(exc))
    except ValueError as exc:
        return error(409, str(exc))
    result = await commit(node, command, "the user changed meanwhile ({reason}); try again")
    if isinstance(result, web.Response):
        return result
    return web.json_response({"user": name, "token": token}, status=201)


class FirstAdmin:
    """Creates `admin` with a one-time password when this server becomes active and there are no users, and prints the
    password on stdout (never to the log). The password is hashed when the app starts, so activation costs no hashing."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.password = users.one_time_password()
        self.hashed: asyncio.Future[str] | None = None
        self.tasks: set[asyncio.Task] = set()
        self.printed = False

    def on_role(self, event: RoleEvent) -> None:  # the Raft thread
        if event.node == self.node.name and event.role == "active" and self.hashed is not None:
            self.hashed.get_loop().call_soon_threadsafe(self.start)

    def start(self) -> None:
        task = asyncio.create_task(self.create(), name="first admin")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def create(self) -> None:
        """Propose the admin until one exists; then print the password if the admin that exists is this server's. The
        answer to a proposal is not enough: one whose outcome was unknown may still commit later, under the next leader
        (a retry is then refused, or this server is no longer active), so the replicated image decides."""
        assert self.hashed is not None
        hashed = await self.hashed
        uncertain = False  # a proposal of this server's may still commit
        while (command := users.first_admin(self.node.image, hashed)) is not None:
            try:
                await self.node.submit(command)
            except NotActive as exc:
                if not uncertain:
                    logger.warning("the first admin user was not created (%s); it will be when a server next becomes active", exc)
                    return
                break
            except ProposalFailed as exc:  # the outcome is unknown: look at the image again (it may have applied)
                logger.warning("creating the first admin user: %s; looking again", exc)
                uncertain = True
                await asyncio.sleep(RETRY_DELAY)
                continue
            break  # applied, or refused because an admin exists (maybe from this server's earlier proposal)
        deadline = asyncio.get_running_loop().time() + UNCERTAIN_WAIT
        while uncertain and self._admin() is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(RETRY_DELAY)
        created = self._admin()
        if created is None or created.body.get("password") != hashed or self.printed:
            return  # not this server's admin, or announced already
        self.printed = True
        print(f"{PASSWORD_LINE}{self.password}", flush=True)
        logger.info("created user %s with a one-time password (printed on stdout); log in and change it", users.FIRST_ADMIN)

    def _admin(self) -> Any:
        return self.node.image.documents.get(users.KIND, {}).get(users.FIRST_ADMIN)

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        """The app's cleanup context: hash the password, then watch for activations until the app stops."""
        self.hashed = asyncio.ensure_future(hashing(app, users.hash_password, self.password))
        unsubscribe = self.node.on_role(self.on_role)
        if self.node.is_active():
            self.start()
        yield
        unsubscribe()
        for task in (*self.tasks, self.hashed):
            task.cancel()
        await asyncio.gather(*self.tasks, self.hashed, return_exceptions=True)


def install(app: web.Application, node: ClusterNode) -> None:
    """Serve the user routes on `app` and create the first admin whenever this server becomes active without users."""
    app.router.add_get("/api/v1/me", me)
    app.router.add_get("/api/v1/users", list_users)
    app.router.add_put("/api/v1/users/{name}", put_user)
    app.router.add_delete("/api/v1/users/{name}", delete_user)
    app.router.add_post("/api/v1/users/{name}/tokens", new_token)
    app.cleanup_ctx.append(FirstAdmin(node).run)
