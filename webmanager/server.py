"""The composition root: one node of the cluster (`tandem run`): its Raft node, trend store, plugin and function hosts and the Web Manager."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from cluster.config import TandemConfig
from cluster.journal import JournalCorrupt
from cluster.node import ClusterNode
from cluster.raft import RaftError
from plugins.functions import FunctionHost
from plugins.host import PluginHost
from plugins.manager import BUILTIN_PLUGINS, PluginSet, load_plugins
from plugins.trend_store import TrendStore
from plugins.trends import FUNCTION as TRENDS_FUNCTION
from plugins.trends import TrendFeed

from .api import create_app
from .appkeys import PEER_SESSION
from .trend_fill import fill_trend_gaps

logger = logging.getLogger(__name__)

# Seconds a thread may hold the GIL while another waits (Python's default: 5 ms). Shorter, so the Raft thread answers
# heartbeats promptly while the trend writer and the API threads are busy.
SWITCH_INTERVAL = 0.001


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    """After each collection of the middle generation, freeze what survived it. The process image (hundreds of thousands
    of documents and point values, NamedTuples the collector never untracks) then never reaches the oldest generation,
    whose full collections would otherwise walk all of it and hold the GIL for a good part of a second, longer than the
    Raft thread's lease. The price: a reference cycle that becomes garbage after it was frozen is not reclaimed
    (plain reference counting still frees everything else), and the image's data holds no cycles."""
    if phase == "stop" and info["generation"] >= 1:
        gc.freeze()


def cmd_run(config: TandemConfig, args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format=f"%(asctime)s {args.node} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # it logs every failed retry; our driver logs loss and return once
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.callbacks.append(_freeze_survivors)
    node = ClusterNode(config, args.node)
    node.blocked = "loading plugins"  # Raft starts (and catches up) while the plugins import
    trends = None
    if node.me.is_server and TRENDS_FUNCTION in (config.cluster.plugins or BUILTIN_PLUGINS):
        trends = TrendStore(node.me.data_dir / "trends.sqlite")
        node.subscribe(TrendFeed(lambda: node.image, trends))  # before Raft starts: the store sees every command it replays
        node.add_status("trends", trends.status)
    try:
        node.start()
    except (JournalCorrupt, RaftError) as exc:
        print(f"tandem run: {args.node} refuses to start: {exc}", file=sys.stderr)
        return 2
    plugins = load_plugins(config.cluster.plugins if node.me.is_server else [])  # the witness runs no plugins
    missing = plugins.missing()
    if missing:
        logger.error("required plugins not loaded: %s; this server will not become active", ", ".join(missing))
    node.blocked = f"required plugins not loaded: {', '.join(missing)} (see the plugin problems)" if missing else None
    app = create_app(node, plugins, trends)
    if node.me.is_server:
        app.cleanup_ctx.append(_plugin_host(node, plugins))
    if trends is not None:
        app.cleanup_ctx.append(_trend_history(node, trends))
    host, port = node.me.api.rsplit(":", 1)
    try:
        web.run_app(app, host=host, port=int(port), print=None, access_log=None, handle_signals=True, ssl_context=node.me.server_ssl())
    except OSError as exc:
        print(f"tandem run: cannot serve the API on {node.me.api}: {exc.strerror}", file=sys.stderr)
        return 2
    finally:
        node.stop()
    return 0


def _plugin_host(node: ClusterNode, plugins: PluginSet) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running the plugin host (drivers) and the function host for the web app's lifetime."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        host, functions = PluginHost(node, plugins), FunctionHost(node, plugins)
        node.add_status("plugins", host.status)
        node.add_status("functions", functions.status)
        tasks = [asyncio.create_task(host.run(), name="plugin host"), asyncio.create_task(functions.run(), name="function host")]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return run


def _trend_history(node: ClusterNode, store: TrendStore) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context filling the trend store's gaps from the peers for the web app's lifetime, then closing it."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(fill_trend_gaps(node, store, app[PEER_SESSION]), name="trend gap filler")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(store.close)

    return run
