"""Building configuration: validation against the loaded drivers with located errors, idempotent plans, export."""

from __future__ import annotations

import pytest
from conftest import apply_plan

from cluster.state import ProcessImage, Rejected
from plugins.building import BuildingError, export, plan, revision, validate_building
from plugins.manager import load_plugins

PLUGINS = load_plugins(["echo"], {"echo": "sample_plugins.echo"})

BUILDING = {
    "devices": [{"name": "ahu1", "driver": "echo", "period": 0.5}],
    "points": [
        {"name": "ahu1.t", "device": "ahu1", "start": 3, "deadband": 0.1},
        {"name": "setpoint", "writable": True},
    ],
}


def test_documents_are_normalised_with_driver_defaults():
    documents = validate_building(BUILDING, PLUGINS)
    assert documents["devices"] == {"ahu1": {"driver": "echo", "period": 0.5}}
    assert documents["points"]["ahu1.t"] == {"device": "ahu1", "writable": False, "deadband": 0.1, "start": 3}
    assert documents["points"]["setpoint"] == {"device": None, "writable": True, "deadband": 0.0}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda b: b["devices"][0].update(driver="modbuz"), "devices[0].driver: no driver 'modbuz' (loaded drivers: echo)"),
        (lambda b: b["devices"][0].update(period="fast"), "devices[0].period: Input should be a valid number"),
        (lambda b: b["points"][0].update(device="ahu2"), "points[0].device: no device named 'ahu2' in [[devices]]"),
        (lambda b: b["points"][0].update(start="x"), "points[0].start: Input should be a valid integer"),
        (lambda b: b["points"][1].update(start=1), "points[1]: a virtual point (no device) takes no driver keys, got start"),
        (lambda b: b["points"][1].update(deadband=-1), "points[1].deadband: Input should be greater than or equal to 0"),
        (lambda b: b["points"].append({"name": "ahu1.t"}), "points[2].name: 'ahu1.t' repeats points[0]"),
        (lambda b: b["points"][0].update(name="has space"), "points[0].name: Value error, must not contain whitespace"),
        (lambda b: b.update(alarms=[]), "alarms: no such section; a building has devices, points, notifiers"),
    ],
)
def test_errors_name_the_entry_and_key(change, says):
    building = {"devices": [dict(d) for d in BUILDING["devices"]], "points": [dict(p) for p in BUILDING["points"]]}
    change(building)
    with pytest.raises(BuildingError) as error:
        validate_building(building, PLUGINS)
    assert any(problem.startswith(says) for problem in error.value.problems), error.value.problems


def test_plan_is_idempotent_and_deletes_what_was_removed():
    image = ProcessImage()
    [first] = plan(image, validate_building(BUILDING, PLUGINS), "eve")
    assert len(first.changes) == 3
    image.apply(first)
    assert plan(image, validate_building(BUILDING, PLUGINS), "eve") == []
    smaller = {"devices": BUILDING["devices"], "points": BUILDING["points"][:1]}
    [second] = plan(image, validate_building(smaller, PLUGINS), "eve")
    assert [(type(c).__name__, c.kind, c.name) for c in second.changes] == [("DeleteDocument", "points", "setpoint")]


def test_a_plan_is_rejected_whole_when_a_document_changed_before_it_commits():
    image = ProcessImage()
    apply_plan(image, plan(image, validate_building(BUILDING, PLUGINS), "eve"))
    smaller = {"devices": BUILDING["devices"], "points": BUILDING["points"][:1]}
    [planned] = plan(image, validate_building(smaller, PLUGINS), "eve")  # deletes "setpoint", expecting version 1
    assert [change.expected_version for change in planned.changes] == [1]
    apply_plan(image, plan(image, validate_building({**BUILDING, "points": [*BUILDING["points"][:1], {**BUILDING["points"][1], "writable": False}]}, PLUGINS), "bob"))
    assert isinstance(image.apply(planned), Rejected)  # bob's change is not undone by a plan made before it
    assert image.documents["points"]["setpoint"].version == 2


def test_the_revision_changes_with_every_configuration_change():
    image = ProcessImage()
    empty = revision(image, PLUGINS)
    apply_plan(image, plan(image, validate_building(BUILDING, PLUGINS), "eve"))
    applied = revision(image, PLUGINS)
    assert applied != empty and revision(image, PLUGINS) == applied
    apply_plan(image, plan(image, validate_building({"devices": BUILDING["devices"], "points": BUILDING["points"][:1]}, PLUGINS), "eve"))
    assert revision(image, PLUGINS) not in (empty, applied)


def test_export_gives_back_what_validates_to_the_same_documents():
    image = ProcessImage()
    apply_plan(image, plan(image, validate_building(BUILDING, PLUGINS), "eve"))
    exported = export(image, PLUGINS)
    assert exported["devices"] == [{"name": "ahu1", "driver": "echo", "period": 0.5}]
    assert plan(image, validate_building(exported, PLUGINS), "eve") == []


def test_driver_keys_are_stored_as_users_write_them_even_when_aliased():
    modbus = load_plugins(["modbus"])
    building = {
        "devices": [{"name": "m", "driver": "modbus", "host": "127.0.0.1"}],
        "points": [{"name": "m.t", "device": "m", "register": "holding", "address": 1}],
    }
    point = validate_building(building, modbus)["points"]["m.t"]
    assert point["register"] == "holding" and "kind" not in point
    image = ProcessImage()
    apply_plan(image, plan(image, validate_building(building, modbus), "eve"))
    assert plan(image, validate_building(export(image, modbus), modbus), "eve") == []
