"""Session cookies for the Web Manager UI: stateless, HMAC-signed with a key from the cluster secret (so every server
accepts them), a CSRF token derived from the session, and POST /api/v1/login and /logout with rate limiting.

Cookie `tandem_session`: base64url(JSON {"u": user, "e": expiry (epoch s), "p": password stamp}) "." base64url(HMAC-SHA256).
The password stamp changes with the password, so setting a new password ends the user's sessions everywhere.
Cookie `tandem_csrf` (readable by scripts): HMAC of the session cookie; send it back as X-CSRF-Token on POST/PUT/DELETE.
The login answer also carries the session value as `session`: the UI keeps it in the tab's sessionStorage and sends it as
a bearer token to the other servers after a failover, whose origins the cookie does not reach (no CSRF there: a
bearer is never sent by the browser on its own).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from aiohttp import web

from cluster.state import ProcessImage

from . import users
from .appkeys import NODE
from .bodies import Login, read_body
from .ratelimit import LoginLimiter
from .replies import error

logger = logging.getLogger(__name__)

SESSION_COOKIE = "tandem_session"
CSRF_COOKIE = "tandem_csrf"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 8 * 3600
HASHING_NICENESS = 10  # the hashing thread yields the CPU to the Raft thread: a burst of logins must not cost the lease
LIMITER = web.AppKey("login_limiter", LoginLimiter)
HASHING = web.AppKey("password_hashing", ThreadPoolExecutor)  # one niced thread for every argon2 hash and verification
T = TypeVar("T")


async def hashing(app: web.Application, work: Callable[..., T], *args: object) -> T:
    """Run argon2 `work(*args)` (tens of ms, 64 MiB) in the app's one niced hashing thread, one at a time."""
    return await asyncio.get_running_loop().run_in_executor(app[HASHING], work, *args)


def _nice() -> None:
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


async def _hashing_thread(app: web.Application) -> AsyncIterator[None]:
    with ThreadPoolExecutor(1, "argon2", initializer=_nice) as executor:
        app[HASHING] = executor
        yield


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def issue(key: bytes, user: users.User, now: float) -> str:
    payload = _b64(json.dumps({"u": user.name, "e": int(now + SESSION_SECONDS), "p": users.password_stamp(user)}).encode())
    return f"{payload}.{_sign(key, payload)}"


def session_user(key: bytes, image: ProcessImage, cookie: str) -> users.User | None:
    """The user of a valid, unexpired session cookie whose password has not changed since, else None."""
    payload, _, signature = cookie.partition(".")
    if not hmac.compare_digest(signature.encode(), _sign(key, payload).encode()):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        name, expiry, stamp = claims["u"], claims["e"], claims["p"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        return None
    user = users.find(image, name) if isinstance(name, str) else None
    if user is None or not isinstance(expiry, int) or expiry < time.time() or stamp != users.password_stamp(user):
        return None
    return user


def csrf_token(key: bytes, cookie: str) -> str:
    return hmac.new(key, b"csrf:" + cookie.encode(), hashlib.sha256).hexdigest()


def csrf_valid(request: web.Request, key: bytes) -> bool:
    """Whether the request carries the CSRF token of its session cookie in the X-CSRF-Token header."""
    expected = csrf_token(key, request.cookies.get(SESSION_COOKIE, ""))
    return hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), expected.encode())


async def login(request: web.Request) -> web.Response:
    """Check a user's password and set the session and CSRF cookies; failures count towards a lock-out (429)."""
    body = await read_body(request, Login, '{"user": "alice", "password": "..."}')
    if isinstance(body, web.Response):
        return body
    name, password = body.user, body.password
    limiter, node = request.app[LIMITER], request.app[NODE]
    keys = (f"user:{name}", f"addr:{request.remote}")
    wait = limiter.retry_after(keys)
    if wait is not None:
        return web.json_response({"error": f"too many failed logins: try again in {math.ceil(wait)} s"}, status=429,
                                 headers={"Retry-After": str(math.ceil(wait))})
    user = users.find(node.image, name)
    if not await hashing(request.app, users.verify_password, user, password):
        limiter.failed(keys)
        logger.info("failed login for user %r from %s", name, request.remote)
        return error(401, "wrong user name or password")
    assert user is not None
    limiter.succeeded(keys[0])
    key = node.config.session_key
    cookie = issue(key, user, time.time())
    csrf = csrf_token(key, cookie)
    logger.info("user %s logged in from %s", user.name, request.remote)
    answer = {"user": user.name, "role": user.role.name, "csrf": csrf, "session": cookie, "expires_in": SESSION_SECONDS}
    response = web.json_response(answer)
    options = {"max_age": SESSION_SECONDS, "path": "/", "samesite": "Strict", "secure": request.secure}
    response.set_cookie(SESSION_COOKIE, cookie, httponly=True, **options)
    response.set_cookie(CSRF_COOKIE, csrf, **options)
    return response


async def logout(request: web.Request) -> web.Response:
    """Clear the session cookies in this browser (a copy of the cookie stays valid until it expires or the password changes)."""
    response = web.json_response({"logged_out": True})
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.del_cookie(name, path="/", samesite="Strict", secure=request.secure)
    return response


def install(app: web.Application) -> None:
    app[LIMITER] = LoginLimiter()
    app.cleanup_ctx.append(_hashing_thread)
    app.router.add_post("/api/v1/login", login)
    app.router.add_post("/api/v1/logout", logout)
