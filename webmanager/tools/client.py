"""TandemClient: the one client that follows the active Tandem server by itself (aiohttp), for visualization apps and the CLI."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import ssl as ssl_module
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import aiohttp

from cluster.config import Standing

logger = logging.getLogger(__name__)

POLL_FIRST = 0.05  # seconds between role polls while there is no active server, doubling up to POLL_MAX
POLL_MAX = 0.5
RECONNECT_MAX = 2.0  # longest pause between failed connection attempts

Message = dict[str, Any]


class TandemError(Exception):
    """The cluster refused a request (`status` is the HTTP status, None if no active server was found in time)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(TandemError):
    """No server of the cluster answered at all until the deadline."""


SAFE_TO_REPEAT = frozenset({"GET", "HEAD", "PUT", "DELETE"})  # idempotent: may be sent again after an unsure outcome


class TandemClient:
    """A live-feed subscription and point writes that follow the active server across failovers:

        async with TandemClient(["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"], token) as client:
            await client.subscribe(points=["ahu1.temp", "ahu1.fan"], alarms=True)
            await client.write("ahu1.setpoint", 21.5)
            async for message in client.updates():  # the live feed's messages (see webmanager/live.py)
                ...

    It asks every server for its role (GET /api/v1/node), connects the live feed (/api/v1/live) to the active one and
    keeps the subscription: when the connection drops or the server says it is no longer active, it finds the new
    active, reconnects and subscribes again, which starts with a fresh snapshot ("snapshot": true).

    `servers` are the API addresses of all cluster nodes: host:port (http), or https://host:port for nodes with TLS, whose
    certificates `ssl` verifies (an ssl.SSLContext, e.g. one trusting a self-signed certificate; default: the system's
    trust store). `token` is the API's bearer token. Messages go to `on_message` (a function or coroutine function) if
    given, else to `updates()`, which holds at most `buffer` of them: a reader that falls behind stops the client
    reading, and the server drops it, so it reconnects with a fresh snapshot. `heartbeat` seconds between pings detects a server that vanished without closing the connection.
    `request_timeout` bounds each request to one server. With `live=False` there is no live feed: only `request()`,
    `write()` and `find_active()` (what the `tandem` CLI uses).
    """

    def __init__(
        self,
        servers: Sequence[str],
        token: str,
        *,
        on_message: Callable[[Message], Awaitable[None] | None] | None = None,
        buffer: int = 1000,
        heartbeat: float = 1.0,
        request_timeout: float = 1.0,
        ssl: ssl_module.SSLContext | bool = True,
        live: bool = True,
    ) -> None:
        if not servers:
            raise ValueError("name at least one server (host:port)")
        self.servers = list(servers)
        self.connected_to: str | None = None  # the server the live feed is connected to, as `servers` names it
        self.active: str | None = None  # the active server's name, as last learned
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ssl = ssl
        self._on_message = on_message
        self._messages: asyncio.Queue[Message] = asyncio.Queue(buffer)
        self._heartbeat = heartbeat
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._active_api: str | None = None
        self._subscription: Message | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task | None = None
        self._live = live

    async def __aenter__(self) -> TandemClient:
        self._session = aiohttp.ClientSession(headers=self._headers, connector=aiohttp.TCPConnector(ssl=self._ssl))
        if self._live:
            self._runner = asyncio.create_task(self._run(), name="tandem live feed")
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        assert self._session is not None
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        await self._session.close()

    # ---- the public API ----

    async def subscribe(self, points: Iterable[str] | str = "*", alarms: bool = False) -> None:
        """Replace the subscription: point names (or "*" for all) and whether to follow the alarm list. Kept across
        reconnects; each (re)subscription starts with a snapshot."""
        if isinstance(points, str) and points != "*":
            raise ValueError('points: a list of point names, or "*" for all')
        self._subscription = {"points": points if points == "*" else list(points), "alarms": alarms}
        if self._ws is not None and not self._ws.closed:
            await self._ws.send_json({"subscribe": self._subscription})

    async def updates(self) -> AsyncIterator[Message]:
        """The live feed's messages, in order, across reconnects (without `on_message`)."""
        while True:
            yield await self._messages.get()

    async def write(self, point: str, value: Any, timeout: float = 10.0) -> Message:
        """Write a point through the active server, retrying while the active role moves; returns the API's answer
        (the point, or {"pending": true, ...} for a device point). TandemError if refused or no active in time."""
        status, answer = await self.request("PUT", f"/api/v1/points/{urllib.parse.quote(point, safe='')}", {"value": value}, timeout=timeout)
        if status not in (200, 202):
            raise TandemError(answer.get("error", f"HTTP {status}"), status)
        return answer

    async def request(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> tuple[int, Any]:
        """Send a request to the active server and return its (status, answer: JSON, or text for CSV). While the active
        role moves it is sent again, elsewhere, but only where that cannot do it twice: after a 409 that names another
        active (refused before anything was done) and, for idempotent methods (SAFE_TO_REPEAT), after a 503 (not
        committed, or outcome unknown) or no answer. TandemError (Unreachable if no server answered) at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = POLL_FIRST
        while True:
            api = self._active_api or await self._find_active(deadline)
            status, answer = await self._send(api, method, path, body)
            redirected = status == 409 and isinstance(answer, dict) and "active" in answer
            unsure = status is None or status == 503
            if not redirected and not (unsure and method in SAFE_TO_REPEAT):
                if status is None:
                    raise TandemError(f"the active server {self.active} ({api}) did not answer")
                return status, answer
            self._active_api = self._named(answer.get("active_api")) if redirected else None  # not (or no longer) the active
            if loop.time() + delay > deadline:
                raise TandemError(f"no active server took the request within {timeout} s", status)
            await asyncio.sleep(delay)
            delay = min(2 * delay, POLL_MAX)

    async def find_active(self, timeout: float) -> tuple[str, str]:
        """(name, address) of the active server, asking every server until one says it is (TandemError after `timeout`)."""
        api = await self._find_active(asyncio.get_running_loop().time() + timeout)
        assert self.active is not None
        return self.active, api

    # ---- finding the active server ----

    async def _find_active(self, deadline: float | None = None) -> str:
        """The active server's address, polling every server until one says it is active (or the deadline passes)."""
        loop = asyncio.get_running_loop()
        delay = POLL_FIRST
        while True:
            found, answered = await self._poll()
            if found is not None:
                self.active, self._active_api = found
                return found[1]
            if deadline is not None and loop.time() + delay > deadline:
                raise TandemError("there is no active server right now") if answered else Unreachable("no server of the cluster answered")
            await asyncio.sleep(delay)
            delay = min(2 * delay, POLL_MAX)

    async def _poll(self) -> tuple[tuple[str, str] | None, bool]:
        """(name, address) of the first server that answers it is active, asking all at once, or None if none does; and
        whether any server answered at all."""
        tasks = [asyncio.create_task(self._role(api)) for api in self.servers]
        answered = False
        try:
            for answer in asyncio.as_completed(tasks):
                role, found = await answer
                answered = answered or role is not None
                if found is not None:
                    return found, True
            return None, answered
        finally:
            for task in tasks:
                task.cancel()

    async def _role(self, api: str) -> tuple[str | None, tuple[str, str] | None]:
        """The role a server says it has (None: no answer), and its (name, address) if that is the active role."""
        assert self._session is not None
        try:
            async with self._session.get(f"{_url(api)}/api/v1/node", timeout=self._timeout) as response:
                view = await response.json() if response.status == 200 else {}
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None, None
        role = view.get("role", "")
        return role, ((view["name"], api) if role == Standing.ACTIVE else None)

    async def _send(self, api: str, method: str, path: str, body: Any) -> tuple[int | None, Any]:
        """One request; (None, {}) when the server did not answer."""
        assert self._session is not None
        try:
            async with self._session.request(method, f"{_url(api)}{path}", json=body, timeout=self._timeout) as response:
                if response.content_type == "text/csv":
                    return response.status, await response.text()
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None, {}

    # ---- the live feed ----

    async def _run(self) -> None:
        failures = 0
        while True:
            api = await self._find_active()
            try:
                greeted = await self._follow(api)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                greeted = False
                logger.warning("live feed on %s: %s", api, exc or type(exc).__name__)
            finally:
                self._ws, self.connected_to = None, None
            failures = 0 if greeted else failures + 1
            if failures:  # pause only when connecting did not work, not after a connection that ended
                await asyncio.sleep(min(RECONNECT_MAX, POLL_FIRST * 2**failures))

    async def _follow(self, api: str) -> bool:
        """Connect the live feed to `api` and pass its messages on until it closes or stops being the active; whether
        any message came."""
        assert self._session is not None
        greeted = False
        async with asyncio.timeout(self._timeout.total):
            ws = await self._session.ws_connect(f"{_url(api)}/api/v1/live", heartbeat=self._heartbeat, max_msg_size=0)
        async with ws:
            self._ws, self.connected_to = ws, api
            if self._subscription is not None:
                await ws.send_json({"subscribe": self._subscription})
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    break
                greeted = True
                message = json.loads(frame.data)
                await self._deliver(message)
                if message.get("type") == "role" and not self._still_active(message):
                    break
        logger.info("live feed on %s ended (close code %s)", api, ws.close_code)
        return greeted

    def _still_active(self, role: Message) -> bool:
        """Note what a role message says about the active server; False if the connected server is not it."""
        if role["role"] == Standing.ACTIVE:
            self.active, self._active_api = role["node"], self.connected_to
            return True
        self.active, self._active_api = role.get("active"), self._named(role.get("active_api"))
        return False

    def _named(self, api: str | None) -> str | None:
        """The server as `servers` names it, for an address (host:port) the cluster answered, which has no scheme."""
        return next((server for server in self.servers if server.split("://", 1)[-1] == api), api)

    async def _deliver(self, message: Message) -> None:
        if self._on_message is None:
            await self._messages.put(message)
            return
        outcome = self._on_message(message)
        if inspect.isawaitable(outcome):
            await outcome


def _url(api: str) -> str:
    """A server's base URL: as given when it names a scheme, else plain http."""
    return api if "://" in api else f"http://{api}"
