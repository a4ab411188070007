"""Prometheus metrics of a node at /metrics: a per-app registry whose collector reads the node's state at scrape time."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from cluster.config import Standing
from cluster.node import ClusterNode, RoleEvent

from .appkeys import LIVE_CLIENTS

logger = logging.getLogger(__name__)

ROLES = tuple(standing.value for standing in Standing)
REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)


class RoleChanges:
    """How often this node took each role: the changes in its role history when started, then each one it emits
    (the history keeps only the last 100)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._first: RoleEvent | None = None

    def _count(self, event: RoleEvent) -> None:  # on the Raft thread
        self._first = self._first or event
        self.counts[event.role] += 1

    def follow(self, node: ClusterNode) -> Callable[[], None]:
        """Count the node's role changes from now on and those already in its history; returns the unsubscribe."""
        unsubscribe = node.on_role(self._count)
        history = list(node.role_history)  # read before _first: an event counted by _count is never counted twice
        first = self._first
        earlier = history[: history.index(first)] if first in history else history
        self.counts.update(event.role for event in earlier)
        return unsubscribe


class NodeCollector(Collector):
    """The node's role, Raft progress, lag, devices and functions, as /api/v1/node shows them at the moment of the scrape."""

    def __init__(self, node: ClusterNode, app: web.Application, role_changes: RoleChanges) -> None:
        self._node = node
        self._app = app
        self._role_changes = role_changes

    def collect(self) -> Iterator[Metric]:
        status = self._node.local_status()
        yield _gauge("tandem_node_info", "This node: its name and configured role (always 1).", 1, node=status["name"], config_role=status["config_role"])
        role = GaugeMetricFamily("tandem_role", "1 for the role this node has now (active, standby or witness), else 0.", labels=["role"])
        for name in ROLES:
            role.add_metric([name], float(status["role"] == name))
        yield role
        changes = CounterMetricFamily("tandem_role_changes", "Times this node took a role since it started (active: failovers and transfers to it).", labels=["role"])
        for name in ROLES[:2]:
            changes.add_metric([name], self._role_changes.counts[name])
        yield changes
        yield _gauge("tandem_raft_term", "The Raft term this node is in.", status["term"])
        yield _gauge("tandem_raft_leader", "1 if this node is the Raft leader.", float(status["is_leader"]))
        yield _counter("tandem_raft_committed_entries", "The commit index as known to this node: log entries committed.", status["commit_index"])
        yield _counter("tandem_raft_applied_entries", "The applied index: log entries applied to this node's image (rate() is the apply rate).", status["applied_index"])
        yield _gauge("tandem_raft_last_log_index", "The index of the last entry in this node's log.", status["last_log_index"])
        yield _gauge("tandem_raft_lag_entries", "Committed entries this node has not applied yet.", max(0, status["commit_index"] - status["applied_index"]))
        yield _gauge("tandem_image_timestamp_seconds", "Newest time stamp in this node's image; max over the nodes minus this is the lag in seconds.", status["last_ts"])
        if status["leader_contact_age"] is not None:
            yield _gauge("tandem_leader_contact_age_seconds", "Seconds since this node last heard from the leader.", status["leader_contact_age"])
        yield _gauge("tandem_lease_remaining_seconds", "Seconds of activation lease left (0 when not active).", status["lease_remaining"])
        yield _gauge("tandem_blocked", "1 if this server may not become active (see /api/v1/node: blocked).", float(status["blocked"] is not None))
        yield _gauge("tandem_points", "Points in this node's image.", status["points"])
        yield from _apply_lag(status["apply_lag"])
        yield from _peers(status["peers"])
        yield from _running("device", "field device drivers (running on the active server)", (status.get("plugins") or {}).get("devices"))
        yield from _running("function", "BMS functions (running on the active server)", status.get("functions"))
        if "plugins" in status:
            yield _gauge("tandem_device_writes_in_flight", "Operator writes being driven to devices now.", len(status["plugins"]["writes_in_flight"]))
            yield _gauge("tandem_plugin_problems", "Plugins that failed to load or register.", len(status["plugins"]["problems"]))
        if "trends" in status:
            yield from _trend_queue(status["trends"])
        clients = self._app.get(LIVE_CLIENTS)
        if clients is not None:
            yield _gauge("tandem_websocket_clients", "Visualization clients connected to the live feed.", clients())


def _gauge(name: str, documentation: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _apply_lag(lag: dict[str, Any]) -> Iterator[Metric]:
    """Seconds from a point batch's newest sample to its apply here, over the last batches (none until one is applied)."""
    yield _gauge("tandem_apply_lag_batches", "Point batches the apply lag statistics cover.", lag["batches"])
    if lag["batches"]:
        family = GaugeMetricFamily("tandem_apply_lag_seconds", "Seconds from a point batch's newest sample to its apply here.", labels=["stat"])
        for stat in ("p50", "p99", "max"):
            family.add_metric([stat], lag[stat])
        yield family


def _peers(peers: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """What this node knows of each peer (the leader tracks match index and acknowledgements)."""
    connected = GaugeMetricFamily("tandem_peer_connected", "1 if this node's Raft connection to the peer is up.", labels=["peer"])
    match = GaugeMetricFamily("tandem_peer_match_index", "The peer's match index (leader only).", labels=["peer"])
    ack_age = GaugeMetricFamily("tandem_peer_ack_age_seconds", "Seconds since the peer last acknowledged (leader only).", labels=["peer"])
    for name, peer in sorted(peers.items()):
        connected.add_metric([name], float(peer["connected"]))
        if peer["match_index"] is not None:
            match.add_metric([name], peer["match_index"])
        if peer["ack_age"] is not None:
            ack_age.add_metric([name], peer["ack_age"])
    yield from (connected, match, ack_age)


def _trend_queue(store: dict[str, Any]) -> Iterator[Metric]:
    """The trend store's queue between the Raft thread and its SQLite writer (servers keeping trends only)."""
    yield _gauge("tandem_trend_queue_samples", "Trend samples offered by the log and not yet written to this server's store.", store["queued"])
    yield _gauge("tandem_trend_queue_bound_samples", "The most trend samples the queue holds before the log waits for it, then drops.", store["queue_bound"])
    yield _counter("tandem_trend_samples_dropped", "Trend samples this server's store lost: its queue stayed full, or a gap was not filled in time.", store["dropped"])


def _running(kind: str, what: str, states: dict[str, dict[str, Any]] | None) -> Iterator[Metric]:
    """Per device (or function): 1 if in error; and how many are configured and in error (omitted where none run)."""
    if states is None:
        return
    errors = GaugeMetricFamily(f"tandem_{kind}_error", f"1 if the {kind} is in error (its driver or model failed), else 0.", labels=[kind])
    for name, state in sorted(states.items()):
        errors.add_metric([name], float(bool(state.get("error"))))
    yield errors
    yield _gauge(f"tandem_{kind}s", f"Configured {what}.", len(states))
    yield _gauge(f"tandem_{kind}s_in_error", f"{what.capitalize()} in error.", sum(bool(state.get("error")) for state in states.values()))


async def metrics(request: web.Request) -> web.Response:
    """The node's metrics, in the Prometheus text format (or OpenMetrics when the scraper asks for it)."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(request.app[REGISTRY]), headers={"Content-Type": content_type})


def add_metrics(app: web.Application, node: ClusterNode) -> None:
    """Serve GET /metrics on `app`: the node's collector plus this process's CPU, memory and garbage collection."""
    registry = CollectorRegistry(auto_describe=False)
    role_changes = RoleChanges()
    registry.register(NodeCollector(node, app, role_changes))
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    app[REGISTRY] = registry

    async def follow_roles(app: web.Application) -> AsyncIterator[None]:
        unsubscribe = role_changes.follow(node)
        yield
        unsubscribe()

    app.cleanup_ctx.append(follow_roles)
    app.router.add_get("/metrics", metrics)
