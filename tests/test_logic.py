"""Logic rules: validation with positions, each stateful block driven by explicit times, a timer continued from its
replicated record, and a failing rule disabled on a real process image."""

from __future__ import annotations

import pytest

from cluster.commands import PointUpdate, PutDocument, Step, UpdatePoints
from cluster.state import PointValue, ProcessImage
from plugins.building import BuildingError, validate_building
from plugins.logic import ExpressionError, LogicEntry, compile_rule, decide, evaluate, logic_list
from plugins.manager import load_plugins

POINTS = {"room.temp", "a", "b", "out"}


def good(value) -> PointValue:
    return PointValue(value, "good", 1.0, "test")


def run(expression: str, values: dict, now: float, states: dict | None = None):
    return evaluate(compile_rule(expression, POINTS), states or {}, {name: good(value) for name, value in values.items()}, now)


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ('p("room.temp") > 21 and', "line 1, column 24: invalid syntax"),
        ('max(p("a"),\n    p("room.tmp"))', "line 2, column 7: unknown point 'room.tmp'"),
        ('  p("a") +* 2', "line 1, column 11: invalid syntax"),  # positions count the leading blanks as written
        ('open("/etc/passwd")', "line 1, column 1: 'open' is not allowed"),
        ('__import__("os")', "line 1, column 1: '__import__' is not allowed"),
        ('p("a").__class__', "line 1, column 1: attribute access is not allowed"),
        ("lambda: 1", "line 1, column 1: lambda is not allowed"),
        ("[x for x in (1, 2)]", "line 1, column 1: a comprehension is not allowed"),
        ('p("a")[0]', "line 1, column 1: indexing is not allowed"),
        ("temp > 1", "line 1, column 1: unknown name 'temp'; read a point with p(\"name\")"),
        ('p("a") | 1', "line 1, column 1: the operator BitOr is not allowed"),
        ("None", "line 1, column 1: the constant None is not allowed"),
        ('on_delay(p("a") > 0)', "line 1, column 1: on_delay takes 2 arguments, got 1"),
        ('1 + hysteresis(p("a"), 1)', "line 1, column 5: hysteresis takes 3 arguments, got 2"),
        ("round(1.25, ndigits=1)", "line 1, column 21: round takes no keyword arguments"),
        ('off_delay(p("a"), -2)', "line 1, column 19: off_delay takes seconds >= 0, got -2"),
        ("average(1, 2)", "line 1, column 1: unknown function 'average' (functions: abs, counter, hysteresis, latch, max, min,"),
        ('p("a" + "b")', 'line 1, column 3: p takes a point name in quotes, e.g. p("room.temp")'),
    ],
)
def test_a_bad_expression_is_named_with_its_position(expression, says):
    with pytest.raises(ExpressionError) as error:
        compile_rule(expression, POINTS)
    assert str(error.value).startswith(says)


def test_validation_on_apply_points_at_the_rule_and_position():
    building = {
        "points": [*({"name": name, "writable": True} for name in sorted(POINTS)), {"name": "sensor"}],
        "logic": [
            {"name": "fine", "output": "out", "expression": 'p("a") + 1'},
            {"name": "typo", "output": "out", "expression": 'p("room.temp") + p("room.tmp")'},
            {"name": "ghost", "output": "nowhere", "expression": "1", "cycle": 0.01},
            {"name": "read-only", "output": "sensor", "expression": "1"},
        ],
    }
    with pytest.raises(BuildingError) as error:
        validate_building(building, load_plugins(["logic"]))
    assert error.value.problems == [
        "logic[1].expression: line 1, column 20: unknown point 'room.tmp'",
        "logic[2].output: Value error, point 'nowhere' is not in [[points]]",
        "logic[2].cycle: Input should be greater than or equal to 0.1",
        "logic[3].output: Value error, point 'sensor' is not writable (set writable = true on it)",
    ]
    building["logic"] = building["logic"][:1]
    assert validate_building(building, load_plugins(["logic"]))["logic"] == {
        "fine": {"output": "out", "expression": 'p("a") + 1', "cycle": None},
    }


def test_arithmetic_functions_and_short_circuits():
    assert run('round(max(p("a"), 2, 3) / 2 + abs(-p("b")), 1)', {"a": 7, "b": 0.25}, 0.0)[0] == 3.8
    assert run('"on" if p("a") > 1 or 1 / 0 else "off"', {"a": 2}, 0.0)[0] == "on"


def test_on_delay_turns_on_after_its_delay_and_resets_when_the_condition_drops():
    rule = 'on_delay(p("a") > 0, 4)'
    assert run(rule, {"a": 0}, 100.0) == (False, {}, None)
    output, states, wake = run(rule, {"a": 1}, 100.0)
    assert (output, states, wake) == (False, {"on_delay@1:1": {"since": 100.0}}, 104.0)
    assert run(rule, {"a": 1}, 103.9, states)[0] is False
    assert run(rule, {"a": 1}, 104.0, states) == (True, states, None)
    assert run(rule, {"a": 0}, 105.0, states) == (False, {}, None)


def test_a_timer_continues_from_its_replicated_start_after_a_failover():
    """The old active stamped the start at 100; the new active evaluates at 102.5 and 104, as if it had run all along."""
    image = ProcessImage()
    image.apply(PutDocument("points", "out", {"device": None, "writable": True, "deadband": 0.0}, "eve", 1.0))
    image.apply(UpdatePoints((PointUpdate("a", 1, "good", 99.0, "test"),)))
    entry = LogicEntry(output="out", expression='on_delay(p("a") > 0, 4)')
    replicated = {"version": 3, "blocks": {"on_delay@1:1": {"since": 100.0}}, "output": False}
    waiting = decide("delayed", entry, 3, replicated, image, 102.5)
    assert (waiting.record, waiting.write, waiting.wake) == (replicated, False, 104.0)  # nothing to commit, wake at start + 4
    done = decide("delayed", entry, 3, replicated, image, 104.0)
    assert done.write and done.record["output"] is True and done.record["blocks"] == replicated["blocks"]
    restarted = decide("delayed", entry, 4, replicated, image, 102.5)  # a changed rule starts its blocks afresh
    assert restarted.record == {"version": 4, "blocks": {"on_delay@1:1": {"since": 102.5}}, "output": False} and restarted.wake == 106.5
    assert restarted.write  # the changed rule may name another output: written once more


def test_off_delay_holds_for_its_delay_after_the_condition_drops():
    rule = 'off_delay(p("a"), 3)'
    output, states, _ = run(rule, {"a": True}, 10.0)
    assert output is True
    output, states, wake = run(rule, {"a": False}, 11.0, states)
    assert (output, wake) == (True, 14.0)
    assert run(rule, {"a": False}, 13.9, states)[0] is True
    assert run(rule, {"a": False}, 14.0, states) == (False, {}, None)
    assert run(rule, {"a": False}, 20.0) == (False, {}, None)  # never on: stays off


def test_latch_sets_holds_and_reset_wins():
    rule = 'latch(p("a"), p("b"))'
    output, states, _ = run(rule, {"a": True, "b": False}, 0.0)
    assert output is True
    output, states, _ = run(rule, {"a": False, "b": False}, 1.0, states)
    assert output is True
    assert run(rule, {"a": True, "b": True}, 2.0, states) == (False, {}, None)


def test_counter_counts_rising_edges_only():
    rule = 'counter(p("a") > 10, p("b"))'
    states: dict = {}
    counts = []
    for value in (0, 11, 12, 5, 20, 30, 0, 15):
        output, states, _ = run(rule, {"a": value, "b": False}, 0.0, states)
        counts.append(output)
    assert counts == [0, 1, 1, 1, 2, 2, 2, 3]
    assert run(rule, {"a": 15, "b": True}, 0.0, states)[0] == 0


def test_hysteresis_switches_above_high_and_back_below_low():
    rule = 'hysteresis(p("room.temp"), 20, 22)'
    states: dict = {}
    outputs = []
    for value in (21, 22.5, 21, 20, 19.9, 21):
        output, states, _ = run(rule, {"room.temp": value}, 0.0, states)
        outputs.append(output)
    assert outputs == [False, True, True, True, False, False]


def test_every_block_runs_even_where_the_expression_short_circuits():
    rule = 'p("b") and on_delay(p("a") > 0, 5)'
    _, states, _ = run(rule, {"a": 1, "b": False}, 0.0)
    assert states == {"on_delay@1:12": {"since": 0.0}}  # the timer started although `and` did not need it
    assert run(rule, {"a": 1, "b": True}, 5.0, states)[0] is True


def image_with_rules() -> ProcessImage:
    image = ProcessImage()
    for name in ("a", "b"):
        image.apply(PutDocument("points", name, {"device": None, "writable": False, "deadband": 0.0}, "eve", 1.0))
    for name in ("ratio", "twice"):
        image.apply(PutDocument("points", name, {"device": None, "writable": True, "deadband": 0.0}, "eve", 1.0))
    image.apply(PutDocument("logic", "ratio", {"output": "ratio", "expression": '100 / p("b")', "cycle": None}, "eve", 1.0))
    image.apply(PutDocument("logic", "twice", {"output": "twice", "expression": 'p("a") * 2', "cycle": 1.0}, "eve", 1.0))
    image.apply(UpdatePoints((PointUpdate("a", 4, "good", 1.0, "test"), PointUpdate("b", 0, "good", 1.0, "test"))))
    return image


def test_a_failing_rule_is_disabled_and_reported_while_the_others_run():
    image = image_with_rules()
    ratio = LogicEntry.model_validate(image.documents["logic"]["ratio"].body)
    twice = LogicEntry.model_validate(image.documents["logic"]["twice"].body)
    broken, working = decide("ratio", ratio, 1, None, image, 10.0), decide("twice", twice, 1, None, image, 10.0)
    assert broken.record == {"version": 1, "blocks": {}, "disabled": "ZeroDivisionError: division by zero"} and not broken.write
    assert broken.event == {"rule": "ratio", "event": "disabled", "error": "ZeroDivisionError: division by zero", "version": 1}
    assert working.record == {"version": 1, "blocks": {}, "output": 8} and working.write
    step = Step("logic", None, 10.0, changes=(("ratio", None, broken.record), ("twice", None, working.record)),
                journal=(broken.event,), writes=(("twice", 8),))
    assert image.apply(step) == (None,)
    image.apply(UpdatePoints((PointUpdate("b", 4, "good", 11.0, "test"),)))
    assert decide("ratio", ratio, 1, broken.record, image, 12.0) == (broken.record, False, None, None)  # stays disabled
    assert decide("ratio", ratio, 2, broken.record, image, 12.0).record == {"version": 2, "blocks": {}, "output": 25.0}  # a new version
    listed = {rule["name"]: rule for rule in logic_list(image)}
    assert listed["ratio"]["disabled"] == "ZeroDivisionError: division by zero" and listed["twice"]["last_output"] == 8
    assert image.point("twice").value == 8 and [entry.entry["event"] for entry in image.journals["logic"]] == ["disabled"]


def test_an_unavailable_input_skips_the_rule_and_a_read_only_output_disables_it():
    image = image_with_rules()
    image.apply(UpdatePoints((PointUpdate("a", None, "comm-failure", 2.0, "test"),)))
    twice = LogicEntry.model_validate(image.documents["logic"]["twice"].body)
    record = {"version": 1, "blocks": {}, "output": 8}
    assert decide("twice", twice, 1, record, image, 3.0) == (record, False, None, None)
    assert [(rule["name"], rule["unavailable"]) for rule in logic_list(image)] == [("ratio", []), ("twice", ["a"])]
    read_only = LogicEntry(output="a", expression="1")
    assert decide("const", read_only, 1, None, image, 3.0).record["disabled"] == "ValueError: output point 'a' is not writable"


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ('p("a") + "x"', "TypeError: unsupported operand type(s) for +: 'int' and 'str'"),
        ('on_delay("yes", 1)', "TypeError: on_delay condition must be a bool or a number, got str"),
        ('hysteresis(p("a"), 5, 1)', "ValueError: hysteresis low 5 is above high 1"),
        ('10.0 ** (p("a") * 100)', "OverflowError"),
        ('p("a") * 1e308', "TypeError: the result must be a bool, a number or a string, got inf"),
    ],
)
def test_runtime_errors_disable_the_rule_with_their_text(expression, error):
    image = image_with_rules()
    decision = decide("r", LogicEntry(output="twice", expression=expression), 1, None, image, 1.0)
    assert decision.record["disabled"].startswith(error) and decision.event["event"] == "disabled"
