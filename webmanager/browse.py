"""Read-only listings for the Web Manager's browsers: the points page by page with their values, the devices with their
health as the active server sees it, and the plugins this server loaded."""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from itertools import islice
from typing import Any

import aiohttp
from aiohttp import web

from cluster.bulk import sorted_in_runs
from cluster.config import NodeConfig
from cluster.names import MAX_NAME_LENGTH
from cluster.node import ClusterNode
from cluster.state import ProcessImage

from .appkeys import NODE, PEER_SESSION, PLUGINS
from .replies import error, query_limit

logger = logging.getLogger(__name__)


def point_json(name: str, point: Any, desired: Any = None, entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """A point's value, the operator write still being driven to its device (if any) and, when configured, its
    device and whether it is writable."""
    pending = None if desired is None else {"value": desired.value, "seq": desired.seq, "user": desired.user, "error": desired.error}
    answer = {"name": name, "value": point.value, "quality": point.quality, "timestamp": point.ts, "source": point.source, "desired": pending}
    if entry is not None:
        answer.update(device=entry.get("device"), writable=bool(entry.get("writable")))
    return answer


class PointIndex:
    """The image's point names in order, kept between requests. Points are only ever added to an image, and a dict keeps
    insertion order, so the names added since the last request are the dict's tail: they are merged in, and all names
    are sorted anew only for a new image (a snapshot install), in steps that each hold the GIL briefly (cluster.bulk)."""

    def __init__(self) -> None:
        self._image: weakref.ref[ProcessImage] | None = None
        self.names: list[str] = []
        self._folded: list[str] | None = None  # the names in lower case, made by the first search after a change

    def of(self, image: ProcessImage) -> PointIndex:
        """This index, brought up to date with `image`'s names."""
        count = len(self.names)
        same = self._image is not None and self._image() is image
        if same and len(image.points) == count:
            return self
        if same and len(image.points) > count:
            added = sorted_in_runs(list(islice(image.points, count, None)))  # list(): one C call, atomic under the GIL
            self.names = sorted(self.names + added)  # two sorted runs: merged in linear time
        else:
            self._image = weakref.ref(image)
            self.names = sorted_in_runs(list(image.points))
        self._folded = None
        return self

    def page(self, prefix: str, search: str, after: str, limit: int) -> tuple[list[str], int, str | None]:
        """The names starting with `prefix` and containing `search` (lower case) that sort after `after`, at most
        `limit`; how many match in all; and the cursor of the next page (None on the last)."""
        names = self.names
        low = bisect_left(names, prefix)
        high = bisect_left(names, True, low, key=lambda name: not name.startswith(prefix))  # the prefix's names are a run
        start = max(low, bisect_right(names, after))
        if search:
            if self._folded is None:
                self._folded = [name.lower() for name in names]
            folded = self._folded
            matches = [i for i in range(low, high) if search in folded[i]]
            first = bisect_left(matches, start)
            chosen, total, more = [names[i] for i in matches[first : first + limit]], len(matches), first + limit < len(matches)
        else:
            chosen, total, more = names[start : min(high, start + limit)], high - low, start + limit < high
        return chosen, total, chosen[-1] if more else None


POINT_INDEX = web.AppKey("point_index", PointIndex)


async def list_points(request: web.Request) -> web.Response:
    """One page of the points, sorted by name: those whose name starts with `prefix` (default: all) and contains
    `search` (any case), after the name `after` (the previous page's `next`), at most `limit`; `total` counts every match."""
    image = request.app[NODE].image
    query = request.query
    after = query.get("after", "")
    if "after" in query and not 0 < len(after) <= MAX_NAME_LENGTH:
        return error(400, f"'after' must be a point name (1 to {MAX_NAME_LENGTH} characters): the 'next' of the previous page")
    limit = query_limit(request)
    if isinstance(limit, web.Response):
        return limit
    names, total, cursor = request.app[POINT_INDEX].of(image).page(query.get("prefix", ""), query.get("search", "").lower(), after, limit)
    entries = image.documents.get("points", {})
    points = [point_json(name, image.points[name], image.desired.get(name), entries[name].body if name in entries else None) for name in names]
    return web.json_response({"points": points, "total": total, "next": cursor})


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
    qualities = await asyncio.to_thread(_qualities, image, request.app[DEVICE_POINTS])
    devices = []
    for name, document in sorted(image.documents.get("devices", {}).items()):
        state = health.get(name)
        devices.append(
            {
                "name": name,
                **{key: value for key, value in document.body.items() if value is not None},
                "points": sum(qualities.get(name, Counter()).values()),
                "qualities": dict(qualities.get(name, Counter())),
                "running": None if state is None else state.get("running"),
                "error": None if state is None else state.get("error"),
            }
        )
    return web.json_response({"devices": devices, "health_from": active if view is not None else None})


class DevicePoints:
    """Device -> the names of its points, worked out again only when the point documents change (or a snapshot replaced
    the image): at 250,000 points that walk takes a few hundred ms."""

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self._points: dict[str, list[str]] = {}

    def of(self, image: ProcessImage) -> dict[str, list[str]]:
        key = (id(image), image.generations.get("points", 0))
        if key != self._key:
            points: dict[str, list[str]] = defaultdict(list)
            for name, entry in list(image.documents.get("points", {}).items()):
                if (device := entry.body.get("device")) is not None:
                    points[device].append(name)
            self._key, self._points = key, points
        return self._points


DEVICE_POINTS = web.AppKey("device_points", DevicePoints)


def _qualities(image: ProcessImage, device_points: DevicePoints) -> dict[str, Counter[str]]:
    """Per device, how many of its points have each quality (in a thread: a walk over every point)."""
    values = image.points
    return {
        device: Counter(point.quality if (point := values.get(name)) is not None else "no value yet" for name in names)
        for device, names in device_points.of(image).items()
    }


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
    app[POINT_INDEX] = PointIndex()
    app[DEVICE_POINTS] = DevicePoints()
    app.router.add_get("/api/v1/points", list_points)
    app.router.add_get("/api/v1/devices", list_devices)
    app.router.add_get("/api/v1/plugins", list_plugins)
