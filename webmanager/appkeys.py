"""The typed state of a node's web app (aiohttp AppKeys) and the API's limits, shared by its modules."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from aiohttp import web

from cluster.node import ClusterNode
from plugins.manager import PluginSet
from plugins.trend_store import TrendStore

NODE = web.AppKey("node", ClusterNode)
PLUGINS = web.AppKey("plugins", PluginSet)
PEER_SESSION = web.AppKey("peer_session", aiohttp.ClientSession)
TRENDS = web.AppKey("trends", TrendStore)  # servers keeping trend history only
LIVE_CLIENTS = web.AppKey("live_clients", Callable[[], int])  # how many live-feed clients are connected (servers only)

MAX_BATCH = 20_000  # updates per POST /api/v1/points request
MAX_BODY = 8 * 2**20  # bytes per request body (a building of any size comes as NDJSON instead: see config_api)
NDJSON = "application/x-ndjson"  # one JSON value per line: big buildings in, progress out
MAX_BUCKETS = 100_000  # per trend query
MAX_SAMPLES = 1_000_000  # raw samples per trend query
