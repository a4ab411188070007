"""Alarm conditions, transitions and operator steps on a real process image, and validation of [[alarms]] entries."""

from __future__ import annotations

import time

import pytest

from cluster.commands import PutDocument, Step
from cluster.state import PointValue, ProcessImage, Rejected
from plugins.alarms import AlarmEntry, AlarmError, alarm_list, condition, operator_step, transition
from plugins.building import BuildingError, validate_building
from plugins.manager import load_plugins

HIGH = AlarmEntry(point="t", type="high", limit=25.0, deadband=1.0)


def good(value) -> PointValue:
    return PointValue(value, "good", 1.0, "test")


@pytest.mark.parametrize(
    ("entry", "point", "active", "holds"),
    [
        (HIGH, good(25.5), False, True),
        (HIGH, good(25.0), False, False),  # at the limit is not beyond it
        (HIGH, good(24.5), True, True),  # active: returns only below limit - deadband
        (HIGH, good(23.9), True, False),
        (HIGH, PointValue(None, "comm-failure", 1.0, "x"), True, None),  # cannot tell: the comm alarm covers it
        (HIGH, good("text"), False, None),
        (HIGH, None, False, None),
        (AlarmEntry(point="t", type="low", limit=5, deadband=0.5), good(4), False, True),
        (AlarmEntry(point="t", type="low", limit=5, deadband=0.5), good(5.2), True, True),
        (AlarmEntry(point="t", type="low", limit=5, deadband=0.5), good(5.6), True, False),
        (AlarmEntry(point="f", type="digital", value="fault"), good("fault"), False, True),
        (AlarmEntry(point="f", type="digital"), good(False), True, False),
        (AlarmEntry(point="f", type="comm"), PointValue(None, "comm-failure", 1.0, "x"), False, True),
        (AlarmEntry(point="f", type="comm"), PointValue(3, "uncertain", 1.0, "x"), True, False),
    ],
)
def test_conditions_with_deadband_and_unknowns(entry, point, active, holds):
    assert condition(entry, point, active) is holds


def test_the_state_cycle_of_an_alarm():
    raised, event = transition("hi", HIGH, None, True, 26.0, 10.0)
    assert raised["state"] == "active-unacked" and event["event"] == "raised" and event["value"] == 26.0
    assert transition("hi", HIGH, raised, True, 27.0, 11.0) is None  # still active: nothing new
    returned, event = transition("hi", HIGH, raised, False, 20.0, 12.0)
    assert (returned["state"], event["event"]) == ("returned-unacked", "returned")
    again, event = transition("hi", HIGH, returned, True, 26.0, 13.0)
    assert (again["state"], event["event"]) == ("active-unacked", "raised")
    acked = {**again, "state": "active-acked"}
    assert transition("hi", HIGH, acked, False, 20.0, 14.0)[0] is None  # acknowledged and returned: normal, no record kept


def image_with_alarm(state: dict | None = None) -> ProcessImage:
    image = ProcessImage()
    image.apply(PutDocument("alarms", "hi", HIGH.model_dump(by_alias=True), "eve", 1.0))
    if state is not None:
        image.apply(Step("alarms", None, 2.0, changes=(("hi", None, state),)))
    return image


def test_acknowledging_applies_once_and_names_the_user():
    image = image_with_alarm({"state": "active-unacked", "since": 2.0, "value": 26.0, "ack": None})
    step = operator_step(image, "hi", "alice", "ack", "seen it")
    assert image.apply(step) == ()
    assert image.apply(step) == Rejected("stale step: alarms/hi changed since the step was decided")  # not twice
    alarm = alarm_list(image)[0]
    assert alarm["state"] == "active-acked" and alarm["ack"]["user"] == "alice" and alarm["ack"]["comment"] == "seen it"
    assert [entry.entry["event"] for entry in image.journals["alarms"]] == ["acked"]
    assert image.audit[-1].user == "alice" and image.audit[-1].detail == "acked"
    with pytest.raises(AlarmError, match="is active-acked: nothing to acknowledge") as error:
        operator_step(image, "hi", "bob", "ack")
    assert error.value.status == 409


def test_acknowledging_a_returned_alarm_makes_it_normal():
    image = image_with_alarm({"state": "returned-unacked", "since": 2.0, "value": 20.0, "ack": None})
    image.apply(operator_step(image, "hi", "alice", "ack"))
    assert image.functions.get("alarms", {}) == {} and alarm_list(image)[0]["state"] == "normal"


def test_shelving_needs_a_future_expiry_and_unshelving_a_shelf():
    image = image_with_alarm()
    with pytest.raises(AlarmError, match="expiry in the future"):
        operator_step(image, "hi", "alice", "shelve", until=time.time() - 1)
    image.apply(operator_step(image, "hi", "alice", "shelve", "sensor replaced", until=time.time() + 600))
    shelved = image.functions["alarms"]["hi"]
    assert shelved["state"] == "normal" and shelved["shelved"]["user"] == "alice"
    assert transition("hi", HIGH, shelved, True, 30.0, time.time()) is None  # a shelved alarm is not raised
    image.apply(operator_step(image, "hi", "bob", "unshelve"))
    assert image.functions.get("alarms", {}) == {}
    with pytest.raises(AlarmError, match="not shelved"):
        operator_step(image, "hi", "bob", "unshelve")
    with pytest.raises(AlarmError, match="no alarm named 'lo'") as error:
        operator_step(image, "lo", "bob", "ack")
    assert error.value.status == 404


BUILDING = {
    "points": [{"name": "t", "writable": True}],
    "notifiers": [{"name": "ops", "notifier": "webhook", "url": "http://127.0.0.1:9/hook"}],
    "alarms": [{"name": "hi", "point": "t", "type": "high", "limit": 25, "class": "comfort"}],
}


def test_alarm_entries_are_validated_with_their_defaults():
    documents = validate_building(BUILDING, load_plugins(["alarms", "webhook"]))
    assert documents["alarms"]["hi"] == {
        "point": "t", "type": "high", "limit": 25.0, "deadband": 0.0, "delay": 0.0, "value": True, "priority": 100,
        "class": "comfort", "message": "",
    }
    assert documents["notifiers"]["ops"]["events"] == ["raised"] and documents["notifiers"]["ops"]["url"] == "http://127.0.0.1:9/hook"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"limit": None}, "alarms[0]: Value error, a high alarm needs a limit"),
        ({"type": "comm"}, "alarms[0]: Value error, a comm alarm takes no limit"),
        ({"point": "ghost"}, "alarms[0].point: Value error, point 'ghost' is not in [[points]]"),
        ({"priority": 0}, "alarms[0].priority: Input should be greater than or equal to 1"),
        ({"type": "rate"}, "alarms[0].type: Input should be 'high', 'low', 'digital' or 'comm'"),
        ({"colour": "red"}, "alarms[0].colour: Extra inputs are not permitted"),
    ],
)
def test_bad_alarm_entries_are_named(change, says):
    alarm = {key: value for key, value in {**BUILDING["alarms"][0], **change}.items() if value is not None}
    with pytest.raises(BuildingError) as error:
        validate_building({**BUILDING, "alarms": [alarm]}, load_plugins(["alarms", "webhook"]))
    assert any(problem.startswith(says) for problem in error.value.problems), error.value.problems


@pytest.mark.parametrize(
    ("section", "says"),
    [(3, "alarms: must be a list of tables ([[alarms]] entries), not int"), ([{"point": "t", "type": "comm"}], "alarms[0].name: Field required")],
)
def test_a_malformed_alarms_section_is_named_not_a_crash(section, says):
    with pytest.raises(BuildingError) as error:
        validate_building({**BUILDING, "alarms": section}, load_plugins(["alarms", "webhook"]))
    assert error.value.problems == [says]


def test_a_notifier_of_a_kind_not_loaded_is_named():
    with pytest.raises(BuildingError) as error:
        validate_building({**BUILDING, "notifiers": [{"name": "x", "notifier": "pager"}]}, load_plugins(["alarms", "webhook"]))
    assert error.value.problems == ["notifiers[0].notifier: no notifier 'pager' (loaded notifiers: webhook)"]
