"""Read-only listings for the Web Manager's browsers: every point with its value, the devices with their health as the
active server sees it, and the plugins this server loaded."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, defaultdict
from typing import Any

import aiohttp
from aiohttp import web

from cluster.config import NodeConfig
from cluster.node import ClusterNode

from .appkeys import NODE, PEER_SESSION, PLUGINS
from .replies import query_limit

logger = logging.getLogger(__name__)


def point_json(name: str, point: Any, desired: Any = None, entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """A point's value, the operator write still being driven to its device (if any) and, when configured, its
    device and whether it is writable."""
    pending = None if desired is None else {"value": desired.value, "seq": desired.seq, "user": desired.user, "error": desired.error}
    answer = {"name": name, "value": point.value, "quality": point.quality, "timestamp": point.ts, "source": point.source, "desired": pending}
    if entry is not None:
        answer.update(device=entry.get("device"), writable=bool(entry.get("writable")))
    return answer


async def list_points(request: web.Request) -> web.Response:
    """The points whose name starts with `prefix` (default: all) or contains `search`, sorted, at most `limit`."""
    image = request.app[NODE].image
    prefix, search = request.query.get("prefix", ""), request.query.get("search", "").lower()
    limit = query_limit(request)
    if isinstance(limit, web.Response):
        return limit
    entries = image.documents.get("points", {})
    names = sorted(name for name in tuple(image.points) if name.startswith(prefix) and search in name.lower())
    points = [
        point_json(name, image.points[name], image.desired.get(name), entries[name].body if name in entries else None)
        for name in names[:limit]
        if name in image.points
    ]
    return web.json_response({"points": points, "total": len(names)})


async def peer_view(app: web.Application, peer: NodeConfig) -> dict[str, Any] | None:
    """Another node's own status (its GET /api/v1/node), asked with the cluster token; None if it does not answer."""
    headers = {"Authorization": f"Bearer {app[NODE].config.api_token}"}
    try:
        async with app[PEER_SESSION].get(f"{peer.url}/api/v1/node", headers=headers, ssl=peer.client_ssl() or True) as response:
            return await response.json() if response.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError):
        return None


async def _active_view(request: web.Request) -> tuple[str | None, dict[str, Any] | None]:
    """The active server's name and its own status (this node's, or fetched from the active peer)."""
    node: ClusterNode = request.app[NODE]
    if node.is_active():
        return node.name, node.local_status()
    active = node.active_node()
    return (None, None) if active is None else (active.name, await peer_view(request.app, active))


async def list_devices(request: web.Request) -> web.Response:
    """The configured devices with their settings, their points' qualities (from the replicated image) and, from the
    active server, whether each driver runs and its last error."""
    image = request.app[NODE].image
    active, view = await _active_view(request)
    health = ((view or {}).get("plugins") or {}).get("devices") or {}
    qualities: dict[str, Counter[str]] = defaultdict(Counter)
    for name, entry in tuple(image.documents.get("points", {}).items()):
        device, point = entry.body.get("device"), image.points.get(name)
        if device is not None:
            qualities[device][point.quality if point is not None else "no value yet"] += 1
    devices = []
    for name, document in sorted(image.documents.get("devices", {}).items()):
        state = health.get(name)
        devices.append(
            {
                "name": name,
                **{key: value for key, value in document.body.items() if value is not None},
                "points": sum(qualities[name].values()),
                "qualities": dict(qualities[name]),
                "running": None if state is None else state.get("running"),
                "error": None if state is None else state.get("error"),
            }
        )
    return web.json_response({"devices": devices, "health_from": active if view is not None else None})


async def list_plugins(request: web.Request) -> web.Response:
    """The plugins this server asked for and loaded, what each registered, and the problems loading or running them."""
    plugins = request.app[PLUGINS]
    registered = {"drivers": plugins.drivers, "functions": plugins.functions, "notifiers": plugins.notifiers}
    return web.json_response(
        {
            "node": request.app[NODE].name,
            "required": plugins.required,
            "loaded": plugins.loaded,
            **{kind: [{"name": name, "plugin": spec.plugin} for name, spec in sorted(specs.items())] for kind, specs in registered.items()},
            "problems": [vars(problem) for problem in plugins.problems],
        }
    )


def install(app: web.Application) -> None:
    app.router.add_get("/api/v1/points", list_points)
    app.router.add_get("/api/v1/devices", list_devices)
    app.router.add_get("/api/v1/plugins", list_plugins)
