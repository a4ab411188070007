"""The building configuration over HTTP: export it, check it, and apply one of any size in bounded log entries, with
progress for the client that asks for it (NDJSON)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Any

from aiohttp import web

from cluster.bulk import release_later
from cluster.commands import ApplyDocuments, DiscardStaged, StageDocuments
from cluster.guard import NotActive
from cluster.node import ClusterNode
from cluster.raft import ProposalFailed
from cluster.state import Rejected
from plugins.building import (
    BuildingError,
    building_kinds,
    export,
    plan,
    revision,
    validate_building,
)

from .appkeys import MAX_BODY, NDJSON, NODE, PLUGINS
from .auth import identity
from .replies import error, not_active

logger = logging.getLogger(__name__)

MAX_BUILDING = 512 * 2**20  # bytes of a building sent as NDJSON (after Content-Encoding: gzip is undone)
IN_FLIGHT = 1  # staged parts proposed ahead of the one being committed


class Refused(Exception):
    """The apply stops with this HTTP status and answer (the old configuration stays in place)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class Reply:
    """Progress lines and the outcome as NDJSON when the client accepts it (the status is then 200 and the last line holds
    the real one), else one JSON answer at the end."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.stream: web.StreamResponse | None = None

    async def start(self) -> None:
        if NDJSON in self.request.headers.get("Accept", ""):
            self.stream = web.StreamResponse(headers={"Content-Type": NDJSON})
            await self.stream.prepare(self.request)

    async def progress(self, **event: Any) -> None:
        if self.stream is not None:
            await self.stream.write(json.dumps({"progress": event}).encode() + b"\n")

    async def finish(self, status: int, answer: dict[str, Any]) -> web.StreamResponse:
        if self.stream is None:
            return web.json_response(answer, status=status)
        await self.stream.write(json.dumps({**answer, "status": status}).encode() + b"\n")
        await self.stream.write_eof()
        return self.stream


async def get_config(request: web.Request) -> web.StreamResponse:
    """The building as JSON, encoded in a thread an entry at a time and sent in pieces: at 250,000 points it is tens of MB,
    and one json.dumps of it would hold the GIL (and stall the Raft thread) for a third of a second."""
    image, plugins = request.app[NODE].image, request.app[PLUGINS]
    try:
        sections = _sections(request)
    except Refused as exc:
        return error(exc.status, str(exc))
    tag = revision(image, plugins)
    pieces = await asyncio.to_thread(lambda: _json_pieces(export(image, plugins, sections)))
    response = web.StreamResponse(headers={"Content-Type": "application/json", "ETag": f'"{tag}"'})
    await response.prepare(request)
    for piece in pieces:
        await response.write(piece)
    await response.write_eof()
    return response


def _json_pieces(building: dict[str, list[dict[str, Any]]]) -> list[bytes]:
    """`building` as JSON in pieces of up to 1,000 entries, each entry encoded by its own short call."""
    pieces, opening = [], b"{"
    for kind, entries in building.items():
        pieces.append(opening + json.dumps(kind).encode() + b": [")
        for start in range(0, len(entries), 1_000):
            batch = ", ".join(json.dumps(entry) for entry in entries[start : start + 1_000])
            pieces.append(((", " if start else "") + batch).encode())
        pieces.append(b"]")
        opening = b", "
    pieces.append(b"}" if building else b"{}")
    return pieces


async def post_config(request: web.Request) -> web.StreamResponse:
    """Apply a building configuration (devices, points, functions' entries): validated, then committed in bounded log
    entries that become visible at once. With `?check=1` only validated (on any server): the answer says how many documents
    applying it would change. With `If-Match: <the ETag of GET /api/v1/config>` only applied if the building has not
    changed since (else 412). With `?kinds=logic,...` only those sections are sent and changed. With
    `Accept: application/x-ndjson` the answer is a line per step, the outcome last."""
    node, plugins = request.app[NODE], request.app[PLUGINS]
    check = request.query.get("check") in ("1", "true")
    if not check and not node.is_active():
        return not_active(node)
    expected = request.headers.get("If-Match")
    if expected is not None and expected.strip('"') != revision(node.image, plugins):
        return error(412, "the building configuration changed since you read it: read it again and redo your change")
    reply = Reply(request)
    await reply.start()
    try:
        raw, size = await _read_building(request)
        await reply.progress(step="received", bytes=size)
        documents = await asyncio.to_thread(validate_building, raw, plugins, _sections(request), node.image)
        release_later(*raw.values())
        await reply.progress(step="validated", documents=sum(map(len, documents.values())))
        commands = await asyncio.to_thread(plan, node.image, documents, identity(request).name)
        release_later(*documents.values())
        changed = sum(len(command.changes) for command in commands)
        await reply.progress(step="planned", changed=changed, parts=len(commands))
        if not check and commands:
            await _commit(node, commands, reply)
        release_later(commands)
    except BuildingError as exc:
        return await reply.finish(400, {"error": "invalid building configuration", "problems": exc.problems})
    except Refused as exc:
        return await reply.finish(exc.status, {"error": str(exc), **exc.extra})
    return await reply.finish(200, {"changed": changed, **({"checked": True} if check else {})})


def _sections(request: web.Request) -> tuple[str, ...] | None:
    """The sections named by `?kinds=logic,schedules` (the others are neither sent nor changed), or None: all of them."""
    text = request.query.get("kinds")
    if text is None:
        return None
    sections = tuple(dict.fromkeys(kind for kind in text.split(",") if kind))
    known = building_kinds(request.app[PLUGINS])
    wrong = [kind for kind in sections if kind not in known]
    if wrong or not sections:
        raise Refused(400, f"kinds: {', '.join(wrong) or 'none given'}; the sections are {', '.join(known)}")
    return sections


async def _read_building(request: web.Request) -> tuple[Any, int]:
    """The building in the request and its size in bytes: a JSON object (up to MAX_BODY), or NDJSON with one
    {"section": entry} per line (up to MAX_BUILDING), read as it streams in (aiohttp undoes a gzip Content-Encoding) and
    parsed a line at a time, in a thread."""
    lines = request.content_type == NDJSON
    limit = MAX_BUILDING if lines else MAX_BODY
    body = bytearray()
    async for chunk in request.content.iter_chunked(2**20):
        body += chunk
        if len(body) > limit:
            hint = "" if lines else f"; send it as {NDJSON}, one {{section: entry}} per line, as `tandem config apply` does"
            raise Refused(413, f"the building is larger than {limit // 2**20} MiB{hint}")
    return await asyncio.to_thread(_sections_from_lines if lines else _building_from_json, bytes(body)), len(body)


def _building_from_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode())  # UTF-8 only, as every other body
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, 'body must be JSON like {"devices": [...], "points": [...]}') from None


def _sections_from_lines(body: bytes) -> dict[str, list[Any]]:
    building: dict[str, list[Any]] = {}
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line.decode())
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, f"line {number}: not JSON") from None
        if type(item) is not dict or len(item) != 1:
            raise Refused(400, f'line {number}: expected one {{"section": entry}} object, like {{"points": {{"name": "ahu1.temp"}}}}')
        [(section, entry)] = item.items()
        building.setdefault(section, []).append(entry)
    return building


async def _commit(node: ClusterNode, commands: list[StageDocuments | ApplyDocuments], reply: Reply) -> None:
    """Commit the staged parts in order, IN_FLIGHT ahead (the log keeps their order), then, once every one has committed,
    the last entry that makes the change visible. A failure refuses the whole change and discards what was staged."""
    *parts, last = commands
    proposed: deque[asyncio.Future] = deque()

    async def settle(future: asyncio.Future, number: int) -> None:
        result = await future
        if isinstance(result, Rejected):
            raise Refused(409, f"the configuration changed meanwhile ({result.reason}); apply again")
        await reply.progress(step="committed", part=number, parts=len(commands))

    try:
        for number, part in enumerate(parts, start=1):
            proposed.append(asyncio.ensure_future(node.submit(part, timeout=30)))
            if len(proposed) > IN_FLIGHT:
                await settle(proposed.popleft(), number - IN_FLIGHT)
        while proposed:
            await settle(proposed.popleft(), len(parts) - len(proposed))
        await settle(asyncio.ensure_future(node.submit(last, timeout=30)), len(commands))
    except (NotActive, ProposalFailed, Refused) as exc:
        for future in proposed:
            future.cancel()
        if parts:
            await _discard(node, parts[0].change)
        if isinstance(exc, Refused):
            raise
        if isinstance(exc, NotActive):
            raise Refused(409, f"{node.name} stopped being the active server while applying; nothing was changed") from None
        raise Refused(503, f"the configuration was not applied: {exc}") from None


async def _discard(node: ClusterNode, change: str) -> None:
    try:
        await node.submit(DiscardStaged(change, time.time()))
    except (NotActive, ProposalFailed) as exc:  # then the next active server discards it when it takes over
        logger.warning("staged configuration change %s not discarded: %s", change, exc)


def install(app: web.Application) -> None:
    app.router.add_get("/api/v1/config", get_config)
    app.router.add_post("/api/v1/config", post_config)
