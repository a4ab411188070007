"""The live feed: WebSocket /api/v1/live streaming point values, alarm states and role changes from the replicated image.

Served by every server (active and standby, never the witness); authenticated like the API (webmanager/auth.py): a
bearer token (the cluster's or a user's) in the Authorization header or as `?token=` (browsers cannot set headers on a
WebSocket), or the UI's session cookie. JSON text frames:

client -> server
    {"subscribe": {"points": ["a", "b"] | "*", "alarms": true | false}}   replaces the subscription (both keys optional:
                                                                           no points, no alarms); points not in the
                                                                           image yet are sent once they get a value
    {"ping": <anything>}                                                   answered {"type": "pong", "pong": <the same>}
server -> client
    {"type": "role", "node", "role", "active", "active_api"}    on connecting and whenever this node's role changes
                                                                (active / standby); "active" names the active server
                                                                as far as this node knows (None while there is none)
    {"type": "points", "values": [{"name", "value", "quality", "ts"}, ...], "snapshot": true}
                                                                on every subscribe (and after this node installs a
                                                                Raft snapshot): the current values
    {"type": "alarms", "alarms": [...], "snapshot": true}       the same for the alarm list (with "alarms": true)
    {"type": "points", "values": [...]}                         changes as they are applied, at most every
                                                                FLUSH_INTERVAL, the latest value per point only
    {"type": "alarms", "alarms": [...]}                         the alarms whose state changed, as in GET /api/v1/alarms
    {"type": "error", "error": "..."}                           a frame the server could not use; the connection stays
A client that falls QUEUE_LIMIT messages behind is closed with code 1013 (try again later) and the reason "slow
consumer"; server shutdown closes with 1001 (going away). Reconnect and subscribe again: the snapshot resynchronises.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from cluster.changes import Change
from cluster.config import Standing
from cluster.node import ClusterNode, RoleEvent
from cluster.state import PointValue, ProcessImage
from plugins.alarms import FUNCTION as ALARMS
from plugins.alarms import alarm_list

from .appkeys import LIVE_CLIENTS

logger = logging.getLogger(__name__)

PATH = "/api/v1/live"
FLUSH_INTERVAL = 0.02  # seconds between change messages: changes in between are merged, latest value per point
QUEUE_LIMIT = 100  # messages a client may fall behind before it is dropped as a slow consumer (2 s of changes at most)
CLOSE_TIMEOUT = 2.0  # seconds a closing handshake may take before the connection is cut
HEARTBEAT = 15.0  # seconds between pings to the client; no pong in time closes the connection
MAX_FRAME = 2**20  # bytes per client frame (a subscription of many point names)
MAX_SUBSCRIBED = 100_000  # point names per subscription


class BadFrame(ValueError):
    """A client frame the feed cannot use; the message is sent back as {"type": "error"}."""


@dataclass(eq=False)
class Subscriber:
    """One connected client: its socket, its bounded outgoing queue (written by one sender task) and its subscription."""

    request: web.Request
    ws: web.WebSocketResponse
    queue: asyncio.Queue[str]
    points: frozenset[str] | None = frozenset()  # None: every point
    alarms: bool = False
    sender: asyncio.Task | None = None


@dataclass
class _Batch:
    """What changed since the last flush."""

    points: set[str] = field(default_factory=set)
    alarms: set[str] = field(default_factory=set)
    resync: bool = False  # the image was replaced from a snapshot: send everyone a fresh snapshot
    role: RoleEvent | None = None


class LiveFeed:
    """The subscribers of one app and the publisher that fans applied changes out to them."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.subscribers: set[Subscriber] = set()
        self.dropped = 0  # slow consumers dropped so far
        self._inbox: deque[Change | RoleEvent] = deque()
        self._woken = False
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: set[asyncio.Task] = set()

    def status(self) -> dict[str, int]:
        return {"clients": len(self.subscribers), "dropped": self.dropped}

    # ---- the Raft thread: queue the change, wake the publisher at most once per flush ----

    def on_event(self, event: Change | RoleEvent) -> None:
        if not self.subscribers or self._loop is None:
            return  # nobody listens; a new subscriber starts from a snapshot
        self._inbox.append(event)
        if not self._woken:
            self._woken = True
            self._loop.call_soon_threadsafe(self._wake.set)

    # ---- the publisher task ----

    async def publish(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._woken = False  # before draining: an event queued after this wakes us again
            try:
                self._flush(self._drain())
            except Exception:
                logger.exception("live feed: publishing changes failed")
            await asyncio.sleep(FLUSH_INTERVAL)

    def _drain(self) -> _Batch:
        batch = _Batch()
        while self._inbox:
            event = self._inbox.popleft()
            if isinstance(event, RoleEvent):
                batch.role = event
            elif event.restored:
                batch.resync = True
            else:
                batch.points |= event.points
                batch.alarms |= event.state.get(ALARMS, frozenset())
        return batch

    def _flush(self, batch: _Batch) -> None:
        image = self.node.image
        if batch.resync:
            for subscriber in list(self.subscribers):
                self._snapshot(subscriber, image)
        elif batch.points or batch.alarms:
            self._fan_out(image, batch)
        if batch.role is not None:
            self._broadcast(self._role_message(batch.role.role))

    def _fan_out(self, image: ProcessImage, batch: _Batch) -> None:
        values = {name: _point(name, point) for name in batch.points if (point := image.points.get(name)) is not None}
        alarms = [alarm for alarm in alarm_list(image) if alarm["name"] in batch.alarms] if batch.alarms else []
        everything = _encode({"type": "points", "values": list(values.values())}) if values else None
        alarm_text = _encode({"type": "alarms", "alarms": alarms}) if alarms else None
        for subscriber in list(self.subscribers):
            if subscriber.points is None and everything is not None:
                self._offer(subscriber, everything)
            elif subscriber.points:
                chosen = [values[name] for name in subscriber.points.intersection(values)]
                if chosen:
                    self._offer(subscriber, _encode({"type": "points", "values": chosen}))
            if subscriber.alarms and alarm_text is not None:
                self._offer(subscriber, alarm_text)

    def _broadcast(self, text: str) -> None:
        for subscriber in list(self.subscribers):
            self._offer(subscriber, text)

    def _role_message(self, role: str) -> str:
        active = self.node.me if role == Standing.ACTIVE else self.node.active_node()
        return _encode({
            "type": "role", "node": self.node.name, "role": role,
            "active": active.name if active else None, "active_api": active.api if active else None,
        })

    # ---- subscribers (the handler tasks) ----

    def join(self, request: web.Request, ws: web.WebSocketResponse) -> Subscriber:
        subscriber = Subscriber(request, ws, asyncio.Queue(QUEUE_LIMIT))
        subscriber.sender = asyncio.create_task(_send(ws, subscriber.queue), name="live sender")
        self.subscribers.add(subscriber)
        self._offer(subscriber, self._role_message(self.node.role))
        return subscriber

    def leave(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if subscriber.sender is not None:
            subscriber.sender.cancel()

    def receive(self, subscriber: Subscriber, frame: WSMessage) -> None:
        """Act on one client frame; a bad one is answered with an error message."""
        try:
            if frame.type is not WSMsgType.TEXT:
                raise BadFrame("send JSON text frames, not binary ones")
            try:
                message = json.loads(frame.data)
            except (ValueError, RecursionError):
                raise BadFrame("a frame must be JSON (nested at most a few hundred levels)") from None
            self._dispatch(subscriber, message)
        except BadFrame as exc:
            self._offer(subscriber, _encode({"type": "error", "error": str(exc)}))

    def _dispatch(self, subscriber: Subscriber, message: Any) -> None:
        if not isinstance(message, dict) or len(message) != 1:
            raise BadFrame('a frame must be an object with one key, "subscribe" or "ping"')
        [(key, body)] = message.items()
        if key == "ping":
            self._offer(subscriber, _encode({"type": "pong", "pong": body}))
        elif key == "subscribe":
            subscriber.points, subscriber.alarms = _subscription(body)
            self._snapshot(subscriber, self.node.image)
        else:
            raise BadFrame(f'unknown request {key!r}; send "subscribe" or "ping"')

    def _snapshot(self, subscriber: Subscriber, image: ProcessImage) -> None:
        if subscriber.points is None:
            values = [_point(name, point) for name, point in list(image.points.items())]  # list(): one atomic copy
        else:
            values = [_point(name, point) for name in subscriber.points if (point := image.points.get(name)) is not None]
        self._offer(subscriber, _encode({"type": "points", "values": values, "snapshot": True}))
        if subscriber.alarms:
            self._offer(subscriber, _encode({"type": "alarms", "alarms": alarm_list(image), "snapshot": True}))

    def _offer(self, subscriber: Subscriber, text: str) -> None:
        if subscriber not in self.subscribers:
            return
        try:
            subscriber.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped += 1
            logger.warning("live feed: dropping %s, %d messages behind (slow consumer)", subscriber.request.remote, QUEUE_LIMIT)
            self.close(subscriber, WSCloseCode.TRY_AGAIN_LATER, "slow consumer")

    def close(self, subscriber: Subscriber, code: int, reason: str) -> None:
        """Stop sending to a subscriber and close its socket in the background (cut after CLOSE_TIMEOUT)."""
        self.leave(subscriber)
        task = asyncio.create_task(_close(subscriber, code, reason), name="live close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close_all(self, reason: str) -> None:
        for subscriber in list(self.subscribers):
            self.close(subscriber, WSCloseCode.GOING_AWAY, reason)
        await asyncio.gather(*self._closing, return_exceptions=True)


def _point(name: str, point: PointValue) -> dict[str, Any]:
    return {"name": name, "value": point.value, "quality": point.quality, "ts": point.ts}


def _encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _subscription(body: Any) -> tuple[frozenset[str] | None, bool]:
    """(points, alarms) of a subscribe request: points None means all."""
    if not isinstance(body, dict) or not set(body) <= {"points", "alarms"}:
        raise BadFrame('"subscribe" takes an object with "points" (a list of names or "*") and "alarms" (true or false)')
    points, alarms = body.get("points", []), body.get("alarms", False)
    if not isinstance(alarms, bool):
        raise BadFrame('"alarms" must be true or false')
    if points == "*":
        return None, alarms
    if not isinstance(points, list) or not all(isinstance(name, str) for name in points):
        raise BadFrame('"points" must be a list of point names or "*"')
    if len(points) > MAX_SUBSCRIBED:
        raise BadFrame(f'"points" may name at most {MAX_SUBSCRIBED} points; subscribe to "*" for more')
    return frozenset(points), alarms


async def _send(ws: web.WebSocketResponse, queue: asyncio.Queue[str]) -> None:
    """The subscriber's only writer: its queued messages in order."""
    try:
        while True:
            await ws.send_str(await queue.get())
    except ConnectionError:
        pass  # the handler sees the connection end and cleans up


async def _close(subscriber: Subscriber, code: int, reason: str) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await subscriber.ws.close(code=code, message=reason.encode())
    except (TimeoutError, ConnectionError):
        transport = subscriber.request.transport
        if transport is not None:
            transport.abort()  # a client that does not read would keep a graceful close waiting forever


async def handler(request: web.Request) -> web.WebSocketResponse:
    """GET /api/v1/live: this task alone reads the socket; a sender task writes it."""
    feed = request.app[LIVE]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME, compress=False)  # deflate per client costs the active CPU
    await ws.prepare(request)
    subscriber = feed.join(request, ws)
    try:
        async for frame in ws:
            if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break  # a protocol error: the socket is closing
            feed.receive(subscriber, frame)
    finally:
        feed.leave(subscriber)
    return ws


LIVE = web.AppKey("live", LiveFeed)


def install(app: web.Application, node: ClusterNode) -> None:
    """Serve the live feed on `app`: the route, the publisher for the app's lifetime, sockets closed at shutdown."""
    feed = app[LIVE] = LiveFeed(node)
    app[LIVE_CLIENTS] = lambda: len(feed.subscribers)
    app.router.add_get(PATH, handler)
    app.cleanup_ctx.append(_publisher)
    app.on_shutdown.append(_shutdown)


def credentials(request: web.Request) -> str:
    """The request's Authorization header; on the live feed also `?token=` as `Bearer <token>` (browsers cannot set
    headers on a WebSocket)."""
    if request.path == PATH and "token" in request.query and "Authorization" not in request.headers:
        return f"Bearer {request.query['token']}"
    return request.headers.get("Authorization", "")


async def _publisher(app: web.Application) -> AsyncIterator[None]:
    feed = app[LIVE]
    unsubscribe = (feed.node.subscribe(feed.on_event), feed.node.on_role(feed.on_event))
    task = asyncio.create_task(feed.publish(), name="live publisher")
    feed.node.add_status("live", feed.status)
    yield
    for stop in unsubscribe:
        stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _shutdown(app: web.Application) -> None:
    await app[LIVE].close_all("server shutting down")
