"""The HTTP API of a node (aiohttp): status, points, configuration, the BMS functions, audit and transfer; auth in webmanager/auth.py."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import math
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import aiohttp
from aiohttp import web

from cluster.commands import CommandError, PointUpdate, UpdatePoints, WritePoint
from cluster.config import Role
from cluster.node import ClusterNode, TransferFailed
from plugins.alarms import AlarmError, alarm_list, notifier_progress, operator_step
from plugins.logic import logic_list
from plugins.manager import PluginSet
from plugins.schedules import schedule_list
from plugins.trend_store import TrendStore
from plugins.trends import FUNCTION as TRENDS_FUNCTION
from plugins.trends import find_trend, trend_list

from . import browse, config_api, live, sessions, ui, user_api
from .appkeys import (
    MAX_BODY,
    MAX_BUCKETS,
    MAX_SAMPLES,
    NODE,
    PEER_SESSION,
    PLUGINS,
    TRENDS,
)
from .auth import authenticate, cross_origin, identity
from .bodies import AlarmAction, PointBatch, PointWrite, Transfer, read_body
from .browse import peer_view, point_json
from .metrics import add_metrics
from .openapi import add_openapi
from .replies import commit, error, not_active, query_limit
from .status import compose_status

logger = logging.getLogger(__name__)

PEER_TIMEOUT = 0.5


async def _peer_session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT)) as session:
        app[PEER_SESSION] = session
        yield


async def node_view(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE].local_status())


async def cluster_status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    others = [n for n in node.config.cluster.nodes if n.name != node.name]
    answers = await asyncio.gather(*(peer_view(request.app, n) for n in others))
    views = {n.name: answer for n, answer in zip(others, answers)}
    views[node.name] = node.local_status()
    history = [activation._asdict() for activation in reversed(node.image.activations)]
    return web.json_response({**compose_status(node.config, views), "activations": history})


async def get_point(request: web.Request) -> web.Response:
    node = request.app[NODE]
    name = request.match_info["name"]
    if request.query.get("consistent") in ("1", "true"):
        if not node.is_active():
            return not_active(node)
        if not node.applied_everything_committed():
            return error(503, "the active server is still applying committed entries; retry")
    point = node.image.points.get(name)
    if point is None:
        return error(404, f"no point named {name!r}")
    entry = node.image.documents.get("points", {}).get(name)
    return web.json_response(point_json(name, point, node.image.desired.get(name), entry.body if entry else None))


async def put_point(request: web.Request) -> web.Response:
    node = request.app[NODE]
    name = request.match_info["name"]
    body = await read_body(request, PointWrite, '{"value": 21.5}')
    if isinstance(body, web.Response):
        return body
    try:
        command = WritePoint(name=name, value=body.value, user=identity(request).name, ts=time.time())
    except CommandError as exc:
        return error(400, str(exc))
    result = await commit(node, command)
    if isinstance(result, web.Response):
        return result
    if result is None:  # a virtual point: set at once
        return web.json_response(point_json(name, node.image.points[name]))
    # a device point: committed as desired state; the active drives the device and records the read-back
    return web.json_response({"name": name, "value": body.value, "pending": True, "seq": result}, status=202)


async def post_points(request: web.Request) -> web.Response:
    """Report a batch of field values (gateways, integrations): one log entry, quality "good" unless given."""
    node = request.app[NODE]
    body = await read_body(request, PointBatch, '{"updates": [{"name": "ahu1.temp", "value": 21.5}]}')
    if isinstance(body, web.Response):
        return body
    now = time.time()
    try:
        command = UpdatePoints(tuple(PointUpdate(u.name, u.value, u.quality, now if u.ts is None else u.ts, "api") for u in body.updates))
    except CommandError as exc:
        return error(400, str(exc), field=exc.field)
    result = await commit(node, command)
    if isinstance(result, web.Response):
        return result
    return web.json_response({"accepted": len(command.updates)})


async def get_alarms(request: web.Request) -> web.Response:
    image = request.app[NODE].image
    return web.json_response({"alarms": alarm_list(image), "notifiers": notifier_progress(image)})


async def get_alarm_journal(request: web.Request) -> web.Response:
    return _journal(request, "alarms")


def _page(request: web.Request) -> tuple[int, int] | web.Response:
    """The `after` (default 0) and `limit` query parameters of a journal or the audit trail, or a 400."""
    try:
        after = int(request.query.get("after", 0))
    except ValueError:
        return error(400, "'after' must be an integer")
    limit = query_limit(request)
    return limit if isinstance(limit, web.Response) else (after, limit)


def _journal(request: web.Request, function: str) -> web.Response:
    """A function's journal entries after seq `after`, oldest first, at most `limit`."""
    page = _page(request)
    if isinstance(page, web.Response):
        return page
    journal = tuple(request.app[NODE].image.journals.get(function, ()))
    entries = [{"seq": seq, "ts": ts, **entry} for seq, ts, entry in journal if seq > page[0]][: page[1]]
    return web.json_response({"entries": entries})


async def get_audit(request: web.Request) -> web.Response:
    """The audit trail after seq `after`, oldest first, at most `limit`: who changed what (configuration, users, operator
    writes and actions) and when."""
    page = _page(request)
    if isinstance(page, web.Response):
        return page
    trail = tuple(request.app[NODE].image.audit)
    return web.json_response({"entries": [entry._asdict() for entry in trail if entry.seq > page[0]][: page[1]]})


async def alarm_action(request: web.Request) -> web.Response:
    """Acknowledge, shelve ({"minutes": ...}) or unshelve an alarm, with an optional comment."""
    node = request.app[NODE]
    body = await read_body(request, AlarmAction, '{"user": "alice", "comment": "checked on site", "minutes": 60}')
    if isinstance(body, web.Response):
        return body
    caller = identity(request)
    user, comment, minutes = body.user or caller.name, body.comment, body.minutes
    if user != caller.name and caller.via != "cluster":
        return error(403, f"'user' must be you ({caller.name}); only the cluster token acts for others")
    if not node.is_active():
        return not_active(node)
    until = time.time() + minutes * 60 if minutes is not None else None
    try:
        step = operator_step(node.image, request.match_info["name"], user, request.match_info["action"], comment, until)
    except AlarmError as exc:
        return error(exc.status, str(exc))
    except CommandError as exc:
        return error(400, str(exc))
    result = await commit(node, step, "the alarm changed meanwhile ({reason}); look again")
    if isinstance(result, web.Response):
        return result
    return web.json_response(next(a for a in alarm_list(node.image) if a["name"] == request.match_info["name"]))


async def get_schedules(request: web.Request) -> web.Response:
    return web.json_response({"schedules": schedule_list(request.app[NODE].image, time.time())})


async def get_schedule_journal(request: web.Request) -> web.Response:
    return _journal(request, "schedules")


def _instant(text: str | None, default: float, name: str) -> float:
    """A query time: seconds since the epoch or ISO 8601 (UTC unless it names an offset)."""
    if text is None:
        return default
    try:
        moment = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        moment = math.nan if parsed is None else (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
    try:
        _iso(moment)  # a time in the years 1 to 9999, as answers (bucket times, CSV) write it
    except (ValueError, OverflowError, OSError):
        moment = math.nan
    if not math.isfinite(moment):
        raise ValueError(f"'{name}' must be seconds since the epoch or ISO 8601 like 2026-11-26T08:00:00Z (years 1 to 9999), got {text!r}")
    return moment


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


async def get_trends(request: web.Request) -> web.Response:
    store = request.app[TRENDS]
    return web.json_response({"trends": await asyncio.to_thread(trend_list, request.app[NODE].image, store), "store": store.status()})


async def get_trend(request: web.Request) -> web.Response:
    """A trend's samples in [from, to) (default: the last hour), raw or in `step`-second min/max/avg buckets; JSON or CSV."""
    image, store = request.app[NODE].image, request.app[TRENDS]
    name = find_trend(image, request.match_info["name"])
    if name is None:
        return error(404, f"no trend named {request.match_info['name']!r}, and no point with exactly one trend of that name")
    query = request.query
    try:
        end = _instant(query.get("to"), time.time(), "to")
        start = _instant(query.get("from"), end - 3600, "from")
    except ValueError as exc:
        return error(400, str(exc))
    try:
        step = float(query["step"]) if "step" in query else None
        limit = int(query.get("limit", MAX_SAMPLES))
    except ValueError:
        return error(400, "'step' must be a number of seconds and 'limit' an integer")
    if not start < end:
        return error(400, "'from' must be before 'to'")
    if step is not None and not (math.isfinite(step) and step > 0 and (end - start) / step <= MAX_BUCKETS):
        return error(400, f"'step' must be positive and make at most {MAX_BUCKETS} buckets")
    if not 0 < limit <= MAX_SAMPLES:
        return error(400, f"'limit' must be 1 to {MAX_SAMPLES}")
    if query.get("format", "json") not in ("json", "csv"):
        return error(400, "'format' must be json or csv")
    point = image.documents[TRENDS_FUNCTION][name].body["point"]
    if step is not None:
        buckets = await asyncio.to_thread(store.buckets, name, start, end, step)
        header, rows = ("time", "min", "max", "avg", "count"), [(_iso(b["ts"]), b["min"], b["max"], b["avg"], b["count"]) for b in buckets]
        answer: dict[str, Any] = {"buckets": buckets}
    else:
        samples = await asyncio.to_thread(store.history, name, start, end, limit)
        header, rows = ("time", "value", "quality"), [(_iso(ts), value, quality) for ts, value, quality in samples]
        answer = {"samples": [{"ts": ts, "value": value, "quality": quality} for ts, value, quality in samples]}
    if query.get("format") == "csv":
        text = io.StringIO()
        csv.writer(text).writerows([header, *rows])
        filename = f"{name}.csv".replace('"', "")
        return web.Response(text=text.getvalue(), content_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    return web.json_response({"trend": name, "point": point, "from": start, "to": end, "step": step, **answer})


async def get_trend_samples(request: web.Request) -> web.Response:
    """For a peer filling its gap: the samples of commands (after, upto] this server recorded, and the last command covered."""
    try:
        after, upto = int(request.query["after"]), int(request.query["upto"])
    except (KeyError, ValueError):
        return error(400, "'after' and 'upto' must be integers (log positions)")
    if not all(-(2**63) <= position < 2**63 for position in (after, upto)):  # what SQLite stores
        return error(400, "'after' and 'upto' must be 64-bit integers")
    samples, covered = await asyncio.to_thread(request.app[TRENDS].samples_between, after, upto)
    return web.json_response({"samples": samples, "upto": covered})


async def get_logic(request: web.Request) -> web.Response:
    return web.json_response({"rules": logic_list(request.app[NODE].image)})


async def get_logic_journal(request: web.Request) -> web.Response:
    return _journal(request, "logic")


async def transfer(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await read_body(request, Transfer, '{"to": "backup"}')
    if isinstance(body, web.Response):
        return body
    if body.to not in {n.name for n in node.config.cluster.nodes}:
        return error(400, f"no node named {body.to!r}")
    try:
        future = node.request_transfer(body.to, body.timeout)
        result = await asyncio.wrap_future(future)
    except TransferFailed as exc:
        status = 409 if "not the active" in str(exc) else 422
        return error(status, str(exc), **({"active": getattr(node.active_node(), "name", None)} if status == 409 else {}))
    return web.json_response(result)


def create_app(node: ClusterNode, plugins: PluginSet, trends: TrendStore | None = None) -> web.Application:
    """The node's aiohttp application; the witness serves status only, a server keeping trends serves their history."""
    app = web.Application(middlewares=[cross_origin, authenticate], client_max_size=MAX_BODY)
    app[NODE] = node
    app[PLUGINS] = plugins
    app.cleanup_ctx.append(_peer_session)
    app.router.add_get("/api/v1/node", node_view)
    app.router.add_get("/api/v1/status", cluster_status)
    add_metrics(app, node)
    add_openapi(app)
    if node.me.role is not Role.WITNESS:
        app.router.add_post("/api/v1/points", post_points)
        app.router.add_get("/api/v1/points/{name}", get_point)
        app.router.add_put("/api/v1/points/{name}", put_point)
        app.router.add_post("/api/v1/cluster/transfer", transfer)
        config_api.install(app)
        app.router.add_get("/api/v1/alarms", get_alarms)
        app.router.add_get("/api/v1/alarms/journal", get_alarm_journal)
        app.router.add_post("/api/v1/alarms/{name}/{action:ack|shelve|unshelve}", alarm_action)
        app.router.add_get("/api/v1/logic", get_logic)
        app.router.add_get("/api/v1/logic/journal", get_logic_journal)
        app.router.add_get("/api/v1/schedules", get_schedules)
        app.router.add_get("/api/v1/schedules/journal", get_schedule_journal)
        app.router.add_get("/api/v1/audit", get_audit)
        browse.install(app)
        ui.install(app, [n for n in node.config.cluster.nodes if n.is_server])
        live.install(app, node)
        sessions.install(app)
        user_api.install(app, node)
    if trends is not None:
        app[TRENDS] = trends
        app.router.add_get("/api/v1/trends", get_trends)
        app.router.add_get("/api/v1/trends/_samples", get_trend_samples)
        app.router.add_get("/api/v1/trends/{name}", get_trend)
    return app
