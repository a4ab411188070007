"""Helpers the API's handlers share: JSON error answers, a listing's limit, committing a command through the log."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from cluster.guard import NotActive
from cluster.node import ClusterNode
from cluster.raft import ProposalFailed
from cluster.state import Rejected

logger = logging.getLogger(__name__)


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def not_active(node: ClusterNode) -> web.Response:
    active = node.active_node()
    return error(
        409,
        f"{node.name} is not the active server",
        active=active.name if active else None,
        active_api=active.api if active else None,
    )


def query_limit(request: web.Request) -> int | web.Response:
    """The `limit` query parameter of a listing (default 1000, at most 10000), or a 400 response."""
    try:
        limit = int(request.query.get("limit", 1000))
    except ValueError:
        return error(400, "'limit' must be an integer")
    if not 0 < limit <= 10_000:
        return error(400, "'limit' must be 1 to 10000")
    return limit


async def commit(node: ClusterNode, command: Any, rejected: str = "{reason}") -> Any:
    """Commit a command through the log and return apply's result, or the error response: 409 on a standby or when
    apply rejected it (`rejected` formats the reason), 503 if not committed."""
    try:
        result = await node.submit(command)
    except NotActive:
        return not_active(node)
    except ProposalFailed as exc:
        return error(503, str(exc))
    return error(409, rejected.format(reason=result.reason)) if isinstance(result, Rejected) else result
