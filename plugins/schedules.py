"""The built-in schedules function: weekly programmes and an exception calendar drive points at local wall-clock times."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from cluster.commands import Scalar
from cluster.state import ProcessImage

from .building import DrivenPoint
from .hookspecs import hookimpl
from .types import FunctionContext, FunctionSpec

FUNCTION = "schedules"
CYCLE = 1.0  # seconds between evaluations at most (sooner when a transition is due sooner)
MIN_PAUSE = 0.005  # seconds: a transition due "now" by the event loop's clock but not yet by time.time()
HORIZON_DAYS = 371  # days searched back for the last event (a year of exceptions plus a week), and ahead for the next
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WALL_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

Value = bool | int | float | str
Transition = tuple[float, Value]  # (epoch seconds it fires, value)


def _wall_time(value: object) -> object:
    """"HH:MM" or "HH:MM:SS" (or a TOML local time): a time of day without offset or fractions."""
    if isinstance(value, dt.time) and value.tzinfo is None and not value.microsecond:
        return value
    if isinstance(value, str) and _WALL_TIME.fullmatch(value):
        return dt.time.fromisoformat(value)
    raise ValueError(f'must be a local time "HH:MM" or "HH:MM:SS" from 00:00 to 23:59:59, got {value!r}')


def _day(value: object) -> object:
    """"YYYY-MM-DD" (or a TOML local date)."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _DAY.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"is not a date: {exc}") from None
    raise ValueError(f'must be a date "YYYY-MM-DD", got {value!r}')


WallTime = Annotated[dt.time, BeforeValidator(_wall_time)]
Day = Annotated[dt.date, BeforeValidator(_day)]


class Event(BaseModel):
    """At a local time of day, the point gets a value."""

    model_config = ConfigDict(extra="forbid")
    at: WallTime
    value: Value


def _distinct_times(events: list[Event]) -> list[Event]:
    first: dict[dt.time, int] = {}
    for index, event in enumerate(events):
        if event.at in first:
            raise ValueError(f"[{index}].at {event.at} repeats [{first[event.at]}].at")
        first[event.at] = index
    return events


Events = Annotated[list[Event], AfterValidator(_distinct_times)]


class Weekly(BaseModel):
    """The weekly programme: each weekday's events (a day without events keeps the value from before)."""

    model_config = ConfigDict(extra="forbid")
    mon: Events = []
    tue: Events = []
    wed: Events = []
    thu: Events = []
    fri: Events = []
    sat: Events = []
    sun: Events = []


class ExceptionDays(BaseModel):
    """A holiday or special day (`date`) or an inclusive range of days (`from`, `to`): its own events replace the weekly
    programme's on those days; no events means no transitions (the value carries over from before)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1)
    date: Day | None = None
    start: Day | None = Field(None, alias="from")
    end: Day | None = Field(None, alias="to")
    events: Events = []

    @model_validator(mode="after")
    def _one_form(self) -> ExceptionDays:
        if self.date is not None and (self.start is not None or self.end is not None):
            raise ValueError("give either date, or from and to, not both")
        if self.date is None and (self.start is None or self.end is None):
            raise ValueError("needs a date, or from and to (an inclusive range)")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"from {self.start} is after to {self.end}")
        return self

    @model_serializer(mode="wrap")
    def _without_unset_form(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Stored and exported as written: the form not used is left out (TOML has no null)."""
        return {key: value for key, value in handler(self).items() if value is not None}

    def covers(self, day: dt.date) -> bool:
        return day == self.date if self.date is not None else self.start <= day <= self.end  # type: ignore[operator]


class ScheduleEntry(BaseModel):
    """A [[schedules]] entry: which point, in which time zone, the weekly programme, the exceptions and the default."""

    model_config = ConfigDict(extra="forbid")
    point: DrivenPoint
    timezone: str
    weekly: Weekly = Weekly()
    exceptions: list[ExceptionDays] = []  # the first that covers a day wins
    default: Value | None = None  # the value while no event lies within HORIZON_DAYS before; None: leave the point alone

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}; use an IANA name like Europe/Berlin or America/New_York") from None
        return name

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # zoneinfo caches its zones

    def events_on(self, day: dt.date) -> list[Event]:
        """The day's events: those of the first exception that covers it, else the weekly programme's."""
        for exception in self.exceptions:
            if exception.covers(day):
                return exception.events
        return getattr(self.weekly, WEEKDAYS[day.weekday()])


# ---- time: pure functions of an entry and an instant ----


def fire_at(day: dt.date, at: dt.time, zone: ZoneInfo) -> float:
    """When an event at local time `at` on `day` fires: the first instant the local clock reads `at` or later. A time
    skipped by a spring-forward gap fires at the jump; a time repeated at fall-back fires once, at its first occurrence."""
    wall = dt.datetime.combine(day, at)
    first = wall.replace(tzinfo=zone).timestamp()  # fold=0: the first occurrence; in a gap, the instant the clock reads `at` + gap
    if dt.datetime.fromtimestamp(first, zone).replace(tzinfo=None) == wall:
        return first
    return _jump(wall.replace(tzinfo=zone, fold=1).timestamp(), first, zone)


def _jump(before: float, after: float, zone: ZoneInfo) -> float:
    """The first whole second in (before, after] with the offset `after` has: the instant the clock jumped."""
    offset = dt.datetime.fromtimestamp(after, zone).utcoffset()
    low, high = int(before), int(after)
    while high - low > 1:
        middle = (low + high) // 2
        if dt.datetime.fromtimestamp(middle, zone).utcoffset() == offset:
            high = middle
        else:
            low = middle
    return float(high)


def transitions_on(entry: ScheduleEntry, day: dt.date) -> list[Transition]:
    """The day's transitions in time order; events that fire at the same instant (in a spring-forward gap) make one
    transition, with the value of the later local time."""
    zone = entry.zone
    timed = sorted((fire_at(day, event.at, zone), event.at, event.value) for event in entry.events_on(day))
    return list({ts: value for ts, _, value in timed}.items())


def _days(entry: ScheduleEntry, t: float, step: int) -> Iterator[dt.date]:
    """The local days around `t` in search order: from the day after back (step -1), or from the day before on (step 1);
    a neighbour day first because a fall-back across midnight puts part of one day's clock before the other's."""
    today = dt.datetime.fromtimestamp(t, entry.zone).date()
    return (today + dt.timedelta(days=-step + step * n) for n in range(HORIZON_DAYS + 2))


def value_at(entry: ScheduleEntry, t: float) -> tuple[float | None, Value | None]:
    """The latest transition at or before `t`: (when it fired, its value); (None, default) if none within the horizon."""
    for day in _days(entry, t, -1):
        due = [transition for transition in transitions_on(entry, day) if transition[0] <= t]
        if due:
            return due[-1]
    return None, entry.default


def next_transition(entry: ScheduleEntry, t: float) -> Transition | None:
    """The first transition after `t` within the horizon, or None."""
    for day in _days(entry, t, 1):
        later = [transition for transition in transitions_on(entry, day) if transition[0] > t]
        if later:
            return later[0]
    return None


def due_record(entry: ScheduleEntry, record: dict | None, now: float) -> dict | None:
    """The record of the transition due `now` when it is not applied yet, else None. A record stamped later than `now`
    (made by a server whose clock is ahead) stands until this clock passes it, so the previous value is not replayed."""
    at, value = value_at(entry, now)
    if value is None or (record and record["at"] is not None and record["at"] > now):
        return None
    due = {"point": entry.point, "at": at, "value": value}
    return None if due == record else due


def point_problem(image: ProcessImage, point: str) -> str | None:
    """Why the schedule cannot drive `point` (not configured, not writable), or None."""
    doc = image.documents.get("points", {}).get(point)
    if doc is None:
        return f"point {point!r} is not in [[points]]"
    if not doc.body.get("writable", False):
        return f"point {point!r} is not writable (set writable = true on it)"
    return None


def _transition_json(at: float | None, value: Scalar, zone: ZoneInfo) -> dict[str, Any]:
    local = None if at is None else dt.datetime.fromtimestamp(at, zone).isoformat()
    return {"at": at, "local": local, "value": value}


def schedule_list(image: ProcessImage, now: float) -> list[dict[str, Any]]:
    """Every configured schedule: the value due `now`, the transition last applied and the next one."""
    records = image.functions.get(FUNCTION, {})
    schedules = []
    for name, doc in sorted(image.documents.get(FUNCTION, {}).items()):
        entry = ScheduleEntry.model_validate(doc.body)
        zone, record, upcoming = entry.zone, records.get(name), next_transition(entry, now)
        schedules.append({
            "name": name, "point": entry.point, "timezone": entry.timezone,
            "due": _transition_json(*value_at(entry, now), zone),
            "applied": None if record is None else _transition_json(record["at"], record["value"], zone),
            "next": None if upcoming is None else _transition_json(*upcoming, zone),
            "problem": point_problem(image, entry.point),
        })
    return schedules


# ---- the running function ----


class SchedulesFunction:
    """Applies each schedule's due transition once: a compare-and-set on its record, a journal entry and the point write
    in one step, so a new active sees what the old one applied and applies only what is still due."""

    def __init__(self, context: FunctionContext) -> None:
        self.context = context
        self.entries: dict[str, ScheduleEntry] = context.entries  # type: ignore[assignment]
        self.problems: dict[str, str | None] = {}  # schedule -> why it cannot be applied (logged when it changes)

    async def run(self) -> None:
        await self._drop_removed()
        while True:
            now = time.time()
            for name in sorted(self.entries):
                await self._apply_due(name, now)
            await asyncio.sleep(self._pause(time.time()))

    async def _drop_removed(self) -> None:
        records = dict(self.context.image.functions.get(FUNCTION, {}))
        gone = tuple((name, record, None) for name, record in records.items() if name not in self.entries)
        if gone:
            await self.context.try_step(f"dropping the records of removed schedules {', '.join(name for name, _, _ in gone)}", changes=gone)

    async def _apply_due(self, name: str, now: float) -> None:
        entry, image = self.entries[name], self.context.image
        record = image.functions.get(FUNCTION, {}).get(name)
        due = due_record(entry, record, now)
        if due is None or self._blocked(name, point_problem(image, entry.point)):
            return
        applied = await self.context.try_step(
            f"schedule {name}", changes=((name, record, due),), journal=({"schedule": name, **due},), writes=((entry.point, due["value"]),)
        )
        if applied:
            when = "the default" if due["at"] is None else dt.datetime.fromtimestamp(due["at"], entry.zone).isoformat()
            self.context.log.info("schedule %s: %s = %r (%s)", name, entry.point, due["value"], when)

    def _blocked(self, name: str, problem: str | None) -> bool:
        if problem != self.problems.get(name):
            log: Callable[..., None] = self.context.log.error if problem else self.context.log.info
            log("schedule %s: %s", name, problem or "its point can be driven again")
            self.problems[name] = problem
        return problem is not None

    def _pause(self, now: float) -> float:
        """Seconds to the next transition of any schedule, at most CYCLE."""
        upcoming = (next_transition(entry, now) for entry in self.entries.values())
        soonest = min((transition[0] for transition in upcoming if transition is not None), default=now + CYCLE)
        return min(CYCLE, max(soonest - now, MIN_PAUSE))


@hookimpl
def tandem_functions(register: Callable[[FunctionSpec], None]) -> None:
    register(FunctionSpec(FUNCTION, SchedulesFunction, ScheduleEntry))
