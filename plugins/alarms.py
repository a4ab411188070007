"""The built-in alarms function: limit, digital and communication alarms on points; every transition a committed
journal entry; acknowledged and shelved by operators; notified once per event across a failover."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.commands import UNAVAILABLE, Scalar, Step
from cluster.guard import NotActive
from cluster.state import PointValue, ProcessImage

from .building import PointName
from .hookspecs import hookimpl
from .types import FunctionContext, FunctionSpec, Notifier

FUNCTION = "alarms"
CYCLE = 0.5  # seconds between evaluations without a point change (on-delays, shelving expiry, notification retries)
DELIVERED = "_delivered:"  # state key prefix: notifier -> the last journal seq it has had (alarm names start alphanumeric)
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
PAST = {"ack": "acked", "shelve": "shelved", "unshelve": "unshelved"}  # operator action -> its journal event


class AlarmError(Exception):
    """An operator action that does not apply: `status` is the HTTP status that fits (404 unknown, 409 wrong state)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class AlarmEntry(BaseModel):
    """An [[alarms]] entry: on which point, what condition, how urgent."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    point: PointName
    type: Literal["high", "low", "digital", "comm"]
    limit: float | None = None  # high and low
    deadband: float = Field(0.0, ge=0)  # a high alarm returns below limit - deadband (a low one above limit + deadband)
    delay: float = Field(0.0, ge=0)  # on-delay: seconds the condition must hold before the alarm is raised
    value: bool | int | float | str = True  # digital: the point value that is the alarm
    priority: int = Field(100, ge=1, le=1000)  # 1 is the most urgent
    alarm_class: str = Field("default", alias="class", min_length=1)
    message: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> AlarmEntry:
        if self.type in ("high", "low") and self.limit is None:
            raise ValueError(f"a {self.type} alarm needs a limit")
        if self.type in ("digital", "comm") and self.limit is not None:
            raise ValueError(f"a {self.type} alarm takes no limit")
        return self



def condition(entry: AlarmEntry, point: PointValue | None, active: bool) -> bool | None:
    """Whether the alarm condition holds (None: cannot tell, keep the state). `active`: the alarm is active now,
    so a limit alarm needs the deadband passed to return."""
    if entry.type == "comm":
        return None if point is None else point.quality in UNAVAILABLE
    if point is None or point.quality in UNAVAILABLE or point.value is None:
        return None
    if entry.type == "digital":
        return point.value == entry.value
    value = point.value
    if type(value) not in (int, float):
        return None
    assert entry.limit is not None
    if entry.type == "high":
        return value > (entry.limit - entry.deadband if active else entry.limit)
    return value < (entry.limit + entry.deadband if active else entry.limit)


def _state(record: dict | None) -> str:
    return record["state"] if record else "normal"


def _settle(record: dict) -> dict | None:
    """A record worth keeping: a normal, unshelved alarm has none."""
    return None if record["state"] == "normal" and not record.get("shelved") else record


def _event(name: str, entry: AlarmEntry | None, event: str, record: dict | None, **extra: Any) -> dict:
    described = {} if entry is None else {"point": entry.point, "priority": entry.priority, "class": entry.alarm_class, "message": entry.message}
    return {"alarm": name, "event": event, "state": _state(record), **described, **extra}


def transition(name: str, entry: AlarmEntry, record: dict | None, holds: bool, value: Scalar, now: float) -> tuple[dict | None, dict] | None:
    """The next record and its journal entry when the condition (`holds`, already past its on-delay) changes the state."""
    state, shelved = _state(record), bool(record and record.get("shelved"))
    if holds and state in ("normal", "returned-unacked") and not shelved:
        new = {**(record or {}), "state": "active-unacked", "since": now, "value": value, "ack": None}
        return new, _event(name, entry, "raised", new, value=value)
    if not holds and state in ("active-unacked", "active-acked"):
        new = {**(record or {}), "state": "returned-unacked" if state == "active-unacked" else "normal", "since": now, "value": value}
        return _settle(new), _event(name, entry, "returned", new, value=value)
    return None


def operator_step(image: ProcessImage, name: str, user: str, action: str, comment: str = "", until: float | None = None) -> Step:
    """The step of an operator's `ack`, `shelve` (until a time) or `unshelve` on alarm `name`; AlarmError if it does not apply."""
    body = image.documents.get(FUNCTION, {}).get(name)
    if body is None:
        raise AlarmError(f"no alarm named {name!r}", 404)
    entry = AlarmEntry.model_validate(body.body)
    record = image.functions.get(FUNCTION, {}).get(name)
    state, now = _state(record), time.time()
    if action == "ack":
        if state not in ("active-unacked", "returned-unacked"):
            raise AlarmError(f"alarm {name} is {state}: nothing to acknowledge", 409)
        ack = {"user": user, "comment": comment, "ts": now}
        new = {**record, "state": "active-acked" if state == "active-unacked" else "normal", "ack": ack}
        settled, extra = _settle(new), {"comment": comment}
    elif action == "shelve":
        if until is None or until <= now:
            raise AlarmError("shelving needs an expiry in the future", 400)
        new = {**(record or {"state": "normal", "since": now, "value": None, "ack": None}), "shelved": {"user": user, "until": until, "comment": comment}}
        settled, extra = new, {"until": until, "comment": comment}
    elif action == "unshelve":
        if not (record and record.get("shelved")):
            raise AlarmError(f"alarm {name} is not shelved", 409)
        new = {**record, "shelved": None}
        settled, extra = _settle(new), {}
    else:
        raise AlarmError(f"unknown alarm action {action!r}; one of {', '.join(PAST)}", 400)
    event = _event(name, entry, PAST[action], new, user=user, **extra)
    return Step(FUNCTION, user, now, changes=((name, record, settled),), journal=(event,))


def alarm_list(image: ProcessImage) -> list[dict[str, Any]]:
    """Every configured alarm with its state, most urgent first."""
    records = image.functions.get(FUNCTION, {})
    alarms = []
    for name, doc in image.documents.get(FUNCTION, {}).items():
        record = records.get(name) or {}
        body = doc.body
        alarms.append({
            "name": name, "point": body["point"], "type": body["type"], "priority": body["priority"], "class": body["class"],
            "message": body["message"], "state": record.get("state", "normal"), "since": record.get("since"),
            "value": record.get("value"), "ack": record.get("ack"), "shelved": record.get("shelved"),
        })
    return sorted(alarms, key=lambda alarm: (alarm["state"] == "normal", alarm["priority"], alarm["name"]))


def notifier_progress(image: ProcessImage) -> dict[str, dict[str, int | None]]:
    """Per notifier: the last alarm journal entry it has had (None: not started yet) and how many entries are newer."""
    state, last = image.functions.get(FUNCTION, {}), image.journal_seq.get(FUNCTION, 0)
    progress = {}
    for name in image.documents.get("notifiers", {}):
        delivered = state.get(DELIVERED + name)
        progress[name] = {"delivered": delivered, "behind": None if delivered is None else last - delivered}
    return progress


class AlarmsFunction:
    """Evaluates every alarm on point changes and every CYCLE; commits transitions; hands new events to the notifiers."""

    def __init__(self, context: FunctionContext) -> None:
        self.context = context
        self.entries: dict[str, AlarmEntry] = context.entries  # type: ignore[assignment]
        self.by_point: dict[str, list[str]] = {}
        for name, entry in self.entries.items():
            self.by_point.setdefault(entry.point, []).append(name)
        self.pending: dict[str, float] = {}  # alarm -> when its condition began to hold (on-delay running, local to this active)
        self.again: set[str] = set()  # alarms whose last step did not apply: evaluated in the next round whatever changes
        self.notifiers = self._notifiers()
        self.journal_grew = asyncio.Event()

    def _notifiers(self) -> dict[str, tuple[dict, Notifier]]:
        built = {}
        for name, doc in self.context.image.documents.get("notifiers", {}).items():
            spec = self.context.notifiers.get(doc.body["notifier"])
            if spec is None:
                self.context.log.error("notifier %s: kind %r is not loaded; its events wait", name, doc.body["notifier"])
                continue
            specific = {k: v for k, v in doc.body.items() if k not in ("notifier", "events", "classes")}
            built[name] = (doc.body, spec.factory(spec.model.model_validate(specific)))
        return built

    async def run(self) -> None:
        senders = [asyncio.create_task(self._deliver_forever(name, body, notifier)) for name, (body, notifier) in self.notifiers.items()]
        try:
            await self._retire_removed()
            while True:
                changed = await self.context.changed(CYCLE)
                names = set(self.entries) if "*" in changed else {n for point in changed for n in self.by_point.get(point, ())}
                await self._evaluate(names | set(self.pending))
        finally:
            for task in senders:
                task.cancel()

    async def _retire_removed(self) -> None:
        """Records of alarms no longer configured are closed with a "removed" entry."""
        records = dict(self.context.image.functions.get(FUNCTION, {}))
        gone = [name for name in records if not name.startswith("_") and name not in self.entries]
        if gone:
            await self._commit(tuple((name, records[name], None) for name in gone), tuple(_event(name, None, "removed", None) for name in gone))

    async def _evaluate(self, names: set[str]) -> None:
        """Evaluate the alarms `names`, those whose shelf expired and those whose last step did not apply; commit every
        transition in one step."""
        image, now = self.context.image, time.time()
        records = dict(image.functions.get(FUNCTION, {}))
        expired = {name for name in self.entries if ((records.get(name) or {}).get("shelved") or {}).get("until", now + 1) <= now}
        changes, journal = [], []
        for name in sorted(names | expired | self.again):
            current = records.get(name)
            final, events = self._decide(name, self.entries[name], current, image.points.get(self.entries[name].point), now)
            if events:
                changes.append((name, current, final))
                journal += events
        self.again = set()
        if changes and not await self._commit(tuple(changes), tuple(journal)):
            self.again = {name for name, _, _ in changes}

    def _decide(self, name: str, entry: AlarmEntry, record: dict | None, point: PointValue | None, now: float) -> tuple[dict | None, list[dict]]:
        """The alarm's next record and its journal entries (none: nothing changes)."""
        events = []
        shelf = (record or {}).get("shelved")
        if shelf and shelf["until"] <= now:  # the shelf expired: the alarm counts again
            unshelved = {**record, "shelved": None}
            events.append(_event(name, entry, "unshelved", unshelved))
            record = _settle(unshelved)
        holds = condition(entry, point, _state(record) in ("active-unacked", "active-acked"))
        if holds is None:
            return record, events
        if holds and _state(record) in ("normal", "returned-unacked"):
            began = self.pending.setdefault(name, now)
            if now - began < entry.delay:
                return record, events
        self.pending.pop(name, None)
        step = transition(name, entry, record, holds, point.value if point else None, now)
        if step is None:
            return record, events
        return step[0], [*events, step[1]]

    async def _commit(self, changes: tuple, journal: tuple) -> bool:
        """Commit one step; False if it did not apply (an operator acted meanwhile, or no commit in time)."""
        if not await self.context.try_step("alarm step", changes=changes, journal=journal):
            return False
        self.journal_grew.set()
        return True

    # ---- notifications ----

    async def _deliver_forever(self, name: str, body: dict, notifier: Notifier) -> None:
        """Send the journal entries this notifier has not had, in order; each delivery is committed before the next."""
        failures = 0
        key = DELIVERED + name
        while True:
            try:
                await self._deliver(key, body, notifier)
                failures = 0
            except NotActive:
                return  # the host stops this function; the next active delivers what is left
            except Exception as exc:  # a notifier may raise anything: retried with back-off, nothing is skipped
                self.context.log.warning("notifier %s: %s: %s; retrying", name, type(exc).__name__, exc)
                await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
                failures += 1
                continue
            self.journal_grew.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.journal_grew.wait(), CYCLE)

    async def _deliver(self, key: str, body: dict, notifier: Notifier) -> None:
        image = self.context.image
        delivered = image.functions.get(FUNCTION, {}).get(key)
        if delivered is None:  # a new notifier starts with what happens from now on
            await self.context.step(changes=((key, None, image.journal_seq.get(FUNCTION, 0)),))
            return
        pending = [e for e in tuple(image.journals.get(FUNCTION, ())) if e.seq > delivered]
        for seq, ts, entry in pending:
            if _wanted(body, entry):
                self.context.act(f"notify {key.removeprefix(DELIVERED)} of alarm event {seq}")
                await notifier.send({"id": seq, "ts": ts, **entry})
                await self.context.step(changes=((key, delivered, seq),))
                delivered = seq
        if pending and pending[-1].seq > delivered:  # entries this notifier does not want: passed in one step
            await self.context.step(changes=((key, delivered, pending[-1].seq),))


def _wanted(body: dict, entry: dict) -> bool:
    return entry["event"] in body["events"] and (not body["classes"] or entry.get("class") in body["classes"])


@hookimpl
def tandem_functions(register: Callable[[FunctionSpec], None]) -> None:
    register(FunctionSpec(FUNCTION, AlarmsFunction, AlarmEntry))
