"""The built-in trends function: [[trends]] entries sample points on change (with a deadband) or at fixed intervals;
every server derives the samples from the replicated log into its own TrendStore, the active commits the interval ticks."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.changes import Change
from cluster.commands import Step, UpdatePoints
from cluster.state import ProcessImage

from .building import PointName
from .hookspecs import hookimpl
from .trend_store import QUALITY_CODES, Candidate, TrendStore
from .types import FunctionContext, FunctionSpec

FUNCTION = "trends"
TICK = "tick"  # state key: the last interval boundary sampled
MAX_CATCHUP = 300  # seconds: interval boundaries older than this when the ticks resume (no active server) stay a gap
DAY = 86_400.0


class TrendEntry(BaseModel):
    """A [[trends]] entry: which point, sampled how, kept how long."""

    model_config = ConfigDict(extra="forbid")
    point: PointName
    mode: Literal["change", "interval"] = "change"
    deadband: float = Field(0.0, ge=0)  # change: record when the value moved more than this since the last sample
    interval: int | None = Field(None, ge=1, le=86_400)  # interval: seconds between samples, aligned to the epoch
    retention: float = Field(365.0, gt=0)  # days

    @model_validator(mode="after")
    def _consistent(self) -> TrendEntry:
        if self.mode == "interval" and self.interval is None:
            raise ValueError("an interval trend needs interval (seconds)")
        if self.mode == "change" and self.interval is not None:
            raise ValueError("a change trend takes no interval (did you mean mode = \"interval\"?)")
        return self



def trend_entries(image: ProcessImage) -> dict[str, TrendEntry]:
    return {name: TrendEntry.model_validate(doc.body) for name, doc in image.documents.get(FUNCTION, {}).items()}


def find_trend(image: ProcessImage, name: str) -> str | None:
    """The trend called `name`, or the only trend of point `name`."""
    documents = image.documents.get(FUNCTION, {})
    if name in documents:
        return name
    of_point = [trend for trend, doc in documents.items() if doc.body["point"] == name]
    return of_point[0] if len(of_point) == 1 else None


class TrendFeed:
    """On the Raft thread: turns each applied command into the samples it offers its server's TrendStore."""

    def __init__(self, image: Callable[[], ProcessImage], store: TrendStore) -> None:
        self._image = image  # the node's current image (a snapshot install replaces it)
        self._store = store
        self._entries: dict[str, tuple[int, TrendEntry]] = {}  # trend -> (document version, entry)
        self._on_change: dict[str, list[tuple[str, float]]] = {}  # point -> (trend, deadband)
        self._intervals: list[tuple[str, str, int]] = []  # (trend, point, interval)

    def __call__(self, change: Change) -> None:
        command, image = change.command, self._image()
        if change.restored or FUNCTION in change.kinds:
            self._index(image)
        if command is None:
            self._store.restored(change.seq)
            return
        candidates: list[Candidate] = []
        by_point = self._on_change
        if FUNCTION in change.state:
            self._ticked(command, image, candidates)
        elif type(command) is UpdatePoints and by_point:  # the hot path: every update as reported
            for name, value, quality, ts, _ in command.updates:
                trends = by_point.get(name)
                if trends is not None:
                    code = QUALITY_CODES[quality]
                    candidates += [(trend, ts, value, code, deadband) for trend, deadband in trends]
        elif by_point:  # writes: the value the point holds now
            for point in change.points & by_point.keys():
                held = image.points.get(point)
                if held is not None:
                    code = QUALITY_CODES[held.quality]
                    candidates += [(trend, held.ts, held.value, code, deadband) for trend, deadband in by_point[point]]
        self._store.offer(change.seq, candidates, command.ts)

    def _index(self, image: ProcessImage) -> None:
        known = self._entries
        self._entries = {
            name: known[name] if name in known and known[name][0] == doc.version else (doc.version, TrendEntry.model_validate(doc.body))
            for name, doc in image.documents.get(FUNCTION, {}).items()
        }
        entries = {name: entry for name, (_, entry) in self._entries.items()}
        self._on_change = {}
        for name, entry in entries.items():
            if entry.mode == "change":
                self._on_change.setdefault(entry.point, []).append((name, entry.deadband))
        self._intervals = [(name, entry.point, entry.interval) for name, entry in entries.items() if entry.interval is not None]
        self._store.set_retention({name: entry.retention * DAY for name, entry in entries.items()})

    def _ticked(self, command: Step, image: ProcessImage, candidates: list[Candidate]) -> None:
        """An interval tick: every interval trend samples its point at each of its boundaries in (from, at]."""
        for key, _, tick in command.changes:
            if key != TICK or tick is None:
                continue
            for trend, point, interval in self._intervals:
                value = image.points.get(point)
                if value is None:
                    continue
                quality = QUALITY_CODES[value.quality]
                first, last = tick["from"] // interval + 1, tick["at"] // interval
                candidates += [(trend, float(k * interval), value.value, quality, None) for k in range(first, last + 1)]


def due_tick(intervals: set[int], now: float, previous: int | None) -> dict[str, int] | None:
    """The tick to commit at `now`: the latest boundary of any interval, sampling from the previous tick on (at most
    MAX_CATCHUP back); None when no boundary passed since the previous tick."""
    at = max(math.floor(now / interval) * interval for interval in intervals)
    if previous is not None and at <= previous:
        return None
    return {"at": at, "from": max(previous if previous is not None else at - 1, at - MAX_CATCHUP)}


class TrendTicker:
    """On the active server: commits a tick at each interval boundary, so interval samples are taken even when nothing changes."""

    def __init__(self, context: FunctionContext) -> None:
        self.context = context
        self.intervals = {entry.interval for entry in context.entries.values() if entry.interval is not None}  # type: ignore[attr-defined]

    async def run(self) -> None:
        if not self.intervals:
            await asyncio.Event().wait()  # nothing to tick: idle until the host stops this function
        while True:
            record = self.context.image.functions.get(FUNCTION, {}).get(TICK)
            tick = due_tick(self.intervals, time.time(), record["at"] if record else None)
            if tick is not None and not await self.context.try_step(f"tick {tick['at']}", changes=((TICK, record, tick),)):
                continue
            now = time.time()
            await asyncio.sleep(min((math.floor(now / i) + 1) * i for i in self.intervals) - now)


def trend_list(image: ProcessImage, store: TrendStore | None) -> list[dict[str, Any]]:
    """Every configured trend with its newest sample and the time of its oldest on this server."""
    latest, oldest = (store.latest(), store.oldest()) if store is not None else ({}, {})
    return [
        {"name": name, **entry.model_dump(), "latest": latest.get(name), "first": oldest.get(name)}
        for name, entry in sorted(trend_entries(image).items())
    ]


@hookimpl
def tandem_functions(register: Callable[[FunctionSpec], None]) -> None:
    register(FunctionSpec(FUNCTION, TrendTicker, TrendEntry))
