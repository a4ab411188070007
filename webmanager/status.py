"""Compose the cluster status (what `tandem status --json` prints) from each node's own view."""

from __future__ import annotations

import time
from typing import Any

from cluster.config import Role, Standing, TandemConfig


def compose_status(config: TandemConfig, views: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """`views` maps node name to its /api/v1/node answer, or None when it could not be reached."""
    reachable = [view for view in views.values() if view is not None]
    leader = next((view for view in reachable if view["is_leader"]), None)
    commit = max((view["commit_index"] for view in reachable), default=0)
    newest = max((view["last_ts"] for view in reachable), default=0.0)
    nodes = []
    for node in config.cluster.nodes:
        view = views.get(node.name)
        seen_by_leader = leader["peers"].get(node.name) if leader and leader["name"] != node.name else None
        if view is None:
            nodes.append(
                {
                    "name": node.name,
                    "config_role": node.role.value,
                    "role": (Standing.WITNESS if node.role is Role.WITNESS else Standing.STANDBY).value,
                    "reachable": False,
                    "api": node.api,
                    "url": node.url,
                    "term": None,
                    "commit_index": None,
                    "applied_index": None,
                    "lag_entries": None,
                    "lag_seconds": None,
                    "last_contact": seen_by_leader["ack_age"] if seen_by_leader else None,
                    "blocked": None,
                    "plugin_problems": [],
                    "failing": [],
                }
            )
            continue
        lag = max(0, commit - view["applied_index"])
        if view["is_leader"]:
            contact = 0.0
        elif seen_by_leader is not None:
            contact = seen_by_leader["ack_age"]
        else:
            contact = view["leader_contact_age"]
        nodes.append(
            {
                "name": node.name,
                "config_role": node.role.value,
                "role": view["role"],
                "reachable": True,
                "api": node.api,
                "url": node.url,
                "term": view["term"],
                "commit_index": view["commit_index"],
                "applied_index": view["applied_index"],
                "lag_entries": lag,
                "lag_seconds": max(0.0, newest - view["last_ts"]) if lag else 0.0,
                "last_contact": contact,
                "blocked": view.get("blocked"),
                "plugin_problems": (view.get("plugins") or {}).get("problems", []),
                "failing": _failing(view),
            }
        )
    active = [node["name"] for node in nodes if node["role"] == Standing.ACTIVE]
    return {
        "cluster": config.cluster.name,
        "active": active[0] if len(active) == 1 else None,
        "leader": leader["name"] if leader else None,
        "time": time.time(),
        "nodes": nodes,
    }


def _failing(view: dict[str, Any]) -> list[str]:
    """The devices and BMS functions that do not run on this node, each "kind name: error"."""
    devices = ((view.get("plugins") or {}).get("devices") or {}).items()
    functions = (view.get("functions") or {}).items()
    return [f"{kind} {name}: {state['error']}" for kind, states in (("device", devices), ("function", functions)) for name, state in states if state.get("error")]
