"""Schedules as pure functions of an entry and an instant (weekly, exceptions, default, DST on real zones), the decision
what to apply, the API view on a real process image, and validation of [[schedules]] entries with located errors."""

from __future__ import annotations

import datetime as dt
import tomllib
from zoneinfo import ZoneInfo

import pytest
import tomli_w
from conftest import apply_plan

from cluster.commands import PutDocument, Step
from cluster.state import ProcessImage
from plugins.building import BuildingError, export, plan, validate_building
from plugins.manager import load_plugins
from plugins.schedules import (
    ScheduleEntry,
    due_record,
    fire_at,
    next_transition,
    schedule_list,
    transitions_on,
    value_at,
)

UTC = dt.timezone.utc
PLUGINS = load_plugins(["schedules"])


def utc(*parts: int) -> float:
    return dt.datetime(*parts, tzinfo=UTC).timestamp()


def local(zone: str, *parts: int) -> float:
    return dt.datetime(*parts, tzinfo=ZoneInfo(zone)).timestamp()


def schedule(**keys) -> ScheduleEntry:
    return ScheduleEntry.model_validate({"point": "p", "timezone": "Europe/Berlin", **keys})


def events(*pairs) -> list[dict]:
    return [{"at": at, "value": value} for at, value in pairs]


OFFICE = schedule(
    weekly={day: events(("07:00", 21), ("18:00", 16)) for day in ("mon", "tue", "wed", "thu", "fri")} | {"sun": events(("22:00", 18))},
    default=10,
)

# ---- weekly programme ----


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ((2026, 6, 3, 7, 0, 0), ((2026, 6, 3, 7, 0), 21)),  # Wednesday: at the transition itself
        ((2026, 6, 3, 6, 59, 59), ((2026, 6, 2, 18, 0), 16)),  # a second before: Tuesday evening's value
        ((2026, 6, 3, 0, 0, 0), ((2026, 6, 2, 18, 0), 16)),  # midnight has no transition of its own
        ((2026, 6, 6, 12, 0, 0), ((2026, 6, 5, 18, 0), 16)),  # Saturday: no events, Friday evening carries over
        ((2026, 6, 7, 23, 0, 0), ((2026, 6, 7, 22, 0), 18)),  # Sunday evening
        ((2026, 6, 8, 6, 59, 59), ((2026, 6, 7, 22, 0), 18)),  # across the week boundary into Monday
        ((2026, 6, 8, 7, 0, 1), ((2026, 6, 8, 7, 0), 21)),
    ],
)
def test_value_at_is_the_latest_weekly_transition_at_or_before(moment, expected):
    at, value = expected
    assert value_at(OFFICE, local("Europe/Berlin", *moment)) == (local("Europe/Berlin", *at), value)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ((2026, 6, 3, 6, 59, 59), ((2026, 6, 3, 7, 0), 21)),
        ((2026, 6, 3, 7, 0, 0), ((2026, 6, 3, 18, 0), 16)),  # strictly after
        ((2026, 6, 5, 18, 0, 0), ((2026, 6, 7, 22, 0), 18)),  # Friday evening -> Sunday, across the empty Saturday
        ((2026, 6, 7, 22, 0, 0), ((2026, 6, 8, 7, 0), 21)),  # Sunday -> Monday across midnight and the week boundary
    ],
)
def test_next_transition_is_the_first_after(moment, expected):
    at, value = expected
    assert next_transition(OFFICE, local("Europe/Berlin", *moment)) == (local("Europe/Berlin", *at), value)


def test_the_default_holds_only_without_any_event_and_none_leaves_the_point_alone():
    assert value_at(schedule(default=12.5), utc(2026, 1, 1)) == (None, 12.5)
    assert next_transition(schedule(default=12.5), utc(2026, 1, 1)) is None
    assert value_at(schedule(), utc(2026, 1, 1)) == (None, None)
    only_mondays = schedule(weekly={"mon": events(("08:00", 1))}, default=0)
    assert value_at(only_mondays, local("Europe/Berlin", 2026, 6, 7, 12)) == (local("Europe/Berlin", 2026, 6, 1, 8), 1)  # 6 days back


def test_seconds_in_event_times_are_kept():
    entry = schedule(weekly={"wed": events(("12:00:30", "on"))})
    assert next_transition(entry, local("Europe/Berlin", 2026, 6, 3, 12)) == (local("Europe/Berlin", 2026, 6, 3, 12, 0, 30), "on")


# ---- exceptions ----

HOLIDAYS = schedule(
    weekly=OFFICE.weekly.model_dump(),
    exceptions=[
        {"name": "open day", "date": "2026-06-06", "events": events(("09:00", 20), ("14:00", 15))},  # a Saturday
        {"name": "summer break", "from": "2026-08-03", "to": "2026-08-14"},  # no events: Friday's value carries
        {"name": "inside the break", "date": "2026-08-05", "events": events(("10:00", 99))},  # never: the break matches first
        {"name": "christmas", "from": "2026-12-24", "to": "2026-12-26", "events": events(("00:00", 5))},
    ],
)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ((2026, 6, 6, 10, 0), ((2026, 6, 6, 9, 0), 20)),  # a single date adds events to an empty weekday
        ((2026, 6, 7, 12, 0), ((2026, 6, 6, 14, 0), 15)),
        ((2026, 8, 5, 12, 0), ((2026, 8, 2, 22, 0), 18)),  # a range without events: the value before it carries over
        ((2026, 8, 14, 23, 0), ((2026, 8, 2, 22, 0), 18)),  # its last day (a Friday: no 18:00) is included
        ((2026, 8, 17, 7, 30), ((2026, 8, 17, 7, 0), 21)),  # after it, the weekly programme again
        ((2026, 12, 24, 8, 0), ((2026, 12, 24, 0, 0), 5)),  # a Thursday: the exception replaces 07:00 and 18:00
        ((2026, 12, 27, 8, 0), ((2026, 12, 26, 0, 0), 5)),  # Sunday 27th: back to the weekly programme (22:00 not yet)
    ],
)
def test_exceptions_override_the_weekly_programme_on_their_days(moment, expected):
    at, value = expected
    assert value_at(HOLIDAYS, local("Europe/Berlin", *moment)) == (local("Europe/Berlin", *at), value)


def test_next_transition_skips_what_an_exception_removes():
    assert next_transition(HOLIDAYS, local("Europe/Berlin", 2026, 7, 31, 18)) == (local("Europe/Berlin", 2026, 8, 2, 22), 18)  # Sunday
    after_sunday = local("Europe/Berlin", 2026, 8, 2, 22)  # the break has no events, not even Sunday 9th's 22:00
    assert next_transition(HOLIDAYS, after_sunday) == (local("Europe/Berlin", 2026, 8, 16, 22), 18)


# ---- daylight saving time (tzdata) ----


@pytest.mark.parametrize(
    ("zone", "day", "at", "fires"),
    [
        # Berlin, 29 March 2026: 02:00 CET jumps to 03:00 CEST at 01:00 UTC; times in the gap fire at the jump
        ("Europe/Berlin", (2026, 3, 29), "01:59:59", (2026, 3, 29, 0, 59, 59)),
        ("Europe/Berlin", (2026, 3, 29), "02:00", (2026, 3, 29, 1, 0)),
        ("Europe/Berlin", (2026, 3, 29), "02:30", (2026, 3, 29, 1, 0)),
        ("Europe/Berlin", (2026, 3, 29), "03:00", (2026, 3, 29, 1, 0)),
        ("Europe/Berlin", (2026, 3, 29), "03:30", (2026, 3, 29, 1, 30)),
        # Berlin, 25 October 2026: 03:00 CEST falls back to 02:00 CET at 01:00 UTC; 02:00-02:59 fire at their first occurrence
        ("Europe/Berlin", (2026, 10, 25), "02:00", (2026, 10, 25, 0, 0)),
        ("Europe/Berlin", (2026, 10, 25), "02:30", (2026, 10, 25, 0, 30)),
        ("Europe/Berlin", (2026, 10, 25), "03:00", (2026, 10, 25, 2, 0)),
        # New York, 8 March 2026: 02:00 EST jumps to 03:00 EDT at 07:00 UTC
        ("America/New_York", (2026, 3, 8), "02:30", (2026, 3, 8, 7, 0)),
        ("America/New_York", (2026, 3, 8), "03:15", (2026, 3, 8, 7, 15)),
        # New York, 1 November 2026: 02:00 EDT falls back to 01:00 EST at 06:00 UTC; 01:30 happens twice, 02:30 once
        ("America/New_York", (2026, 11, 1), "01:30", (2026, 11, 1, 5, 30)),
        ("America/New_York", (2026, 11, 1), "02:30", (2026, 11, 1, 7, 30)),
    ],
)
def test_wall_times_on_dst_days_fire_at_exact_instants(zone, day, at, fires):
    assert fire_at(dt.date(*day), dt.time.fromisoformat(at), ZoneInfo(zone)) == utc(*fires)


def walk(entry: ScheduleEntry, start: float, end: float) -> list[tuple[float, object]]:
    """Every transition in (start, end] by following next_transition, as the running function meets them."""
    seen, t = [], start
    while (upcoming := next_transition(entry, t)) is not None and upcoming[0] <= end:
        seen.append(upcoming)
        t = upcoming[0]
    return seen


@pytest.mark.parametrize(
    ("day", "instants"),
    [
        ((2026, 3, 29), [(2026, 3, 29, 0, 30), (2026, 3, 29, 1, 0), (2026, 3, 29, 1, 30)]),  # spring forward: 02:30 not lost
        ((2026, 10, 25), [(2026, 10, 24, 23, 30), (2026, 10, 25, 0, 30), (2026, 10, 25, 2, 30)]),  # fall back: 02:30 not doubled
    ],
)
def test_each_event_of_a_dst_day_fires_exactly_once(day, instants):
    entry = schedule(weekly={"sun": events(("01:30", "a"), ("02:30", "b"), ("03:30", "c"))})
    start, end = local("Europe/Berlin", *day), local("Europe/Berlin", *day, 23, 59, 59)
    assert walk(entry, start, end) == [(utc(*instant), value) for instant, value in zip(instants, "abc")]


def test_during_the_repeated_hour_the_value_is_not_fired_again():
    entry = schedule(weekly={"sun": events(("02:30", "b"), ("12:00", "c"))})
    first = utc(2026, 10, 25, 0, 30)  # 02:30 CEST
    assert value_at(entry, utc(2026, 10, 25, 1, 30)) == (first, "b")  # 02:30 CET, the second time the clock reads it
    assert next_transition(entry, first) == (utc(2026, 10, 25, 11, 0), "c")


def test_events_that_fall_into_one_gap_make_one_transition_with_the_later_value():
    entry = schedule(weekly={"sun": events(("02:40", "later"), ("02:10", "earlier"))})
    assert transitions_on(entry, dt.date(2026, 3, 29)) == [(utc(2026, 3, 29, 1, 0), "later")]
    assert value_at(entry, utc(2026, 3, 29, 1, 0)) == (utc(2026, 3, 29, 1, 0), "later")


def test_a_day_is_local_to_the_schedules_zone():
    tokyo = ScheduleEntry.model_validate({"point": "p", "timezone": "Asia/Tokyo", "weekly": {"mon": events(("08:00", 1))}})
    assert next_transition(tokyo, utc(2026, 6, 7, 12)) == (utc(2026, 6, 7, 23), 1)  # Monday 08:00 JST is Sunday 23:00 UTC


# ---- what the running function applies ----


def test_due_record_applies_what_is_due_once():
    now = local("Europe/Berlin", 2026, 6, 3, 12)
    first = due_record(OFFICE, None, now)  # first activation: the value due now
    assert first == {"point": "p", "at": local("Europe/Berlin", 2026, 6, 3, 7), "value": 21}
    assert due_record(OFFICE, first, now + 3600) is None  # applied already: nothing to do (the new active after a failover)
    later = due_record(OFFICE, first, local("Europe/Berlin", 2026, 6, 3, 19))  # several missed: only the latest is applied
    assert later == {"point": "p", "at": local("Europe/Berlin", 2026, 6, 3, 18), "value": 16}
    moved = OFFICE.model_copy(update={"point": "q"})
    assert due_record(moved, first, now) == {**first, "point": "q"}  # a schedule given another point drives it at once


def test_due_record_before_any_event_is_the_default_or_nothing():
    assert due_record(schedule(default=7), None, utc(2026, 1, 1)) == {"point": "p", "at": None, "value": 7}
    assert due_record(schedule(), None, utc(2026, 1, 1)) is None


def test_a_record_from_a_server_whose_clock_is_ahead_is_not_undone():
    ahead = {"point": "p", "at": local("Europe/Berlin", 2026, 6, 3, 7), "value": 21}
    assert due_record(OFFICE, ahead, local("Europe/Berlin", 2026, 6, 3, 6, 59, 58)) is None  # not the 18:00 value again


def image_with(records: dict | None = None, writable: bool = True) -> ProcessImage:
    image = ProcessImage()
    image.apply(PutDocument("points", "p", {"device": None, "writable": writable, "deadband": 0.0}, "eve", 1.0))
    image.apply(PutDocument("schedules", "office", OFFICE.model_dump(mode="json", by_alias=True), "eve", 1.0))
    if records:
        image.apply(Step("schedules", None, 2.0, changes=tuple((name, None, record) for name, record in records.items())))
    return image


def test_the_api_view_shows_due_applied_and_next_in_local_time():
    now = local("Europe/Berlin", 2026, 6, 3, 12)
    record = due_record(OFFICE, None, now)
    [view] = schedule_list(image_with({"office": record}), now)
    assert view["name"] == "office" and view["point"] == "p" and view["timezone"] == "Europe/Berlin" and view["problem"] is None
    assert view["due"] == view["applied"] == {"at": record["at"], "local": "2026-06-03T07:00:00+02:00", "value": 21}
    assert view["next"] == {"at": local("Europe/Berlin", 2026, 6, 3, 18), "local": "2026-06-03T18:00:00+02:00", "value": 16}


def test_the_api_view_names_a_point_the_schedule_cannot_drive():
    [view] = schedule_list(image_with(writable=False), utc(2026, 6, 3, 12))
    assert view["applied"] is None and view["problem"] == "point 'p' is not writable (set writable = true on it)"


# ---- [[schedules]] entries ----

BUILDING = {
    "points": [{"name": "setpoint", "writable": True}, {"name": "sensor"}],
    "schedules": [
        {
            "name": "office",
            "point": "setpoint",
            "timezone": "Europe/Berlin",
            "default": 16.0,
            "weekly": {"mon": events(("07:00", 21.0), ("18:00:30", 16.0))},
            "exceptions": [{"name": "xmas", "from": "2026-12-24", "to": "2026-12-26"}, {"name": "open day", "date": "2026-06-06"}],
        }
    ],
}


def test_schedule_entries_are_normalised_and_export_round_trips_through_toml():
    documents = validate_building(BUILDING, PLUGINS)
    body = documents["schedules"]["office"]
    assert body["weekly"]["mon"] == [{"at": "07:00:00", "value": 21.0}, {"at": "18:00:30", "value": 16.0}]
    assert body["exceptions"] == [
        {"name": "xmas", "from": "2026-12-24", "to": "2026-12-26", "events": []},
        {"name": "open day", "date": "2026-06-06", "events": []},
    ]
    image = ProcessImage()
    apply_plan(image, plan(image, documents, "eve"))
    exported = tomllib.loads(tomli_w.dumps(export(image, PLUGINS)))
    assert plan(image, validate_building(exported, PLUGINS), "eve") == []


def test_toml_local_times_and_dates_are_accepted():
    entry = ScheduleEntry.model_validate({
        "point": "p", "timezone": "UTC", "weekly": {"tue": [{"at": dt.time(7, 30), "value": 1}]},
        "exceptions": [{"name": "x", "date": dt.date(2026, 1, 1)}],
    })
    assert entry.weekly.tue[0].at == dt.time(7, 30) and entry.exceptions[0].covers(dt.date(2026, 1, 1))


def changed(path: str, value) -> dict:
    """BUILDING with the schedule's key at `path` (dots and list indexes) set to `value`, or removed if value is None."""
    building = tomllib.loads(tomli_w.dumps(BUILDING))
    *parents, last = [int(key) if key.isdigit() else key for key in path.split(".")]
    target = building["schedules"][0]
    for key in parents:
        target = target[key]
    if value is None:
        del target[last]
    else:
        target[last] = value
    return building


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("point", "ghost", "schedules[0].point: Value error, point 'ghost' is not in [[points]]"),
        ("point", "sensor", "schedules[0].point: Value error, point 'sensor' is not writable (set writable = true on it)"),
        ("timezone", "Europe/Berln", "schedules[0].timezone: Value error, unknown time zone 'Europe/Berln'; use an IANA name"),
        ("timezone", None, "schedules[0].timezone: Field required"),
        ("weekly.mon.1.at", "25:00", 'schedules[0].weekly.mon[1].at: Value error, must be a local time "HH:MM" or "HH:MM:SS"'),
        ("weekly.mon.1.at", "7:00", 'schedules[0].weekly.mon[1].at: Value error, must be a local time'),
        ("weekly.mon.1.at", 700, 'schedules[0].weekly.mon[1].at: Value error, must be a local time'),
        ("weekly.mon.1.at", "07:00", "schedules[0].weekly.mon: Value error, [1].at 07:00:00 repeats [0].at"),
        ("weekly.mon.0.value", [1], "schedules[0].weekly.mon[0].value"),
        ("weekly.mon.0.when", "x", "schedules[0].weekly.mon[0].when: Extra inputs are not permitted"),
        ("weekly.monday", [], "schedules[0].weekly.monday: Extra inputs are not permitted"),
        ("exceptions.0.from", "2026-12-27", "schedules[0].exceptions[0]: Value error, from 2026-12-27 is after to 2026-12-26"),
        ("exceptions.0.to", None, "schedules[0].exceptions[0]: Value error, needs a date, or from and to"),
        ("exceptions.1.to", "2026-06-07", "schedules[0].exceptions[1]: Value error, give either date, or from and to, not both"),
        ("exceptions.1.date", "2026-02-30", "schedules[0].exceptions[1].date: Value error, is not a date: day is out of range"),
        ("exceptions.1.date", "6/6/2026", 'schedules[0].exceptions[1].date: Value error, must be a date "YYYY-MM-DD"'),
        ("exceptions.1.name", "", "schedules[0].exceptions[1].name: String should have at least 1 character"),
        ("colour", "red", "schedules[0].colour: Extra inputs are not permitted"),
    ],
)
def test_bad_schedule_entries_are_named_with_their_location(path, value, says):
    with pytest.raises(BuildingError) as error:
        validate_building(changed(path, value), PLUGINS)
    assert any(problem.startswith(says) for problem in error.value.problems), error.value.problems
