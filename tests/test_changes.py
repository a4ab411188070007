"""The change summary: what each applied command changed, as every subscriber (drivers, functions, trends, live) sees it."""

from cluster import changes
from cluster.commands import (
    Activate,
    ApplyDocuments,
    DeleteDocument,
    PointUpdate,
    PutDocument,
    Step,
    UpdatePoints,
    WriteOutcome,
    WritePoint,
    in_parts,
)
from cluster.state import ProcessImage


def applied(image: ProcessImage, command) -> changes.Change:
    return changes.applied(command, image.apply(command), image)


def device_image() -> ProcessImage:
    image = ProcessImage()
    image.apply(PutDocument("points", "ahu1.sp", {"device": "ahu1", "writable": True}, "bob", 1.0))
    return image


def test_a_drivers_report_names_its_points_and_no_write():
    image = ProcessImage()
    change = applied(image, UpdatePoints((PointUpdate("a", 1, "good", 2.0, "d"), PointUpdate("b", 2, "good", 2.0, "d"))))
    assert (change.points, change.writes, change.kinds, dict(change.state), change.activated) == ({"a", "b"}, set(), set(), {}, None)
    assert change.seq == image.applied == 1 and not change.restored


def test_a_write_and_its_outcome_name_the_point_as_written():
    image = device_image()
    assert applied(image, WritePoint("ahu1.sp", 21.0, "alice", 2.0)).writes == {"ahu1.sp"}
    outcome = applied(image, WriteOutcome("ahu1.sp", 1, 21.0, None, "modbus:ahu1", 3.0))
    assert outcome.points == outcome.writes == {"ahu1.sp"} and outcome.kinds == set()


def test_a_rejected_command_changed_nothing():
    image = ProcessImage()
    image.apply(PutDocument("points", "ro", {"device": "d"}, "bob", 1.0))
    refused = applied(image, WritePoint("ro", 1.0, "alice", 2.0))
    assert (refused.points, refused.writes, refused.kinds, dict(refused.state)) == (set(), set(), set(), {})
    assert refused.seq == image.applied and refused.command is not None


def test_a_stale_step_changed_nothing_and_a_fresh_one_names_its_keys_and_writes():
    image = ProcessImage()
    fresh = applied(image, Step("logic", None, 1.0, changes=(("t1", None, 1), ("c1", None, 5)), writes=(("v", 1),)))
    assert dict(fresh.state) == {"logic": {"t1", "c1"}} and fresh.points == fresh.writes == {"v"}
    stale = applied(image, Step("logic", None, 2.0, changes=(("t1", None, 2),), writes=(("v", 2),)))
    assert dict(stale.state) == {} and stale.points == set()


def test_configuration_names_the_kinds_whose_visible_documents_changed():
    image = ProcessImage()
    change = applied(image, ApplyDocuments((PutDocument("points", "p", {}, "eve", 1.0), PutDocument("alarms", "hi", {}, "eve", 1.0))))
    assert change.kinds == {"points", "alarms"} and change.points == set()
    assert applied(image, DeleteDocument("alarms", "hi", "eve", 2.0)).kinds == {"alarms"}


def test_a_staged_part_changes_nothing_visible_until_the_last_entry():
    image = ProcessImage()
    puts = [PutDocument("points", f"p{i}", {"description": "x" * 1000}, "eve", 1.0) for i in range(600)]
    *staged, last = in_parts(puts, "big")
    assert staged and all(applied(image, part).kinds == set() for part in staged)
    assert applied(image, last).kinds == {"points"}


def test_an_activation_names_the_node_made_active():
    image = ProcessImage()
    assert applied(image, Activate("backup", 3, 1.0)).activated == "backup"
    assert applied(image, Activate("main", 2, 2.0)).activated is None  # an older term is refused


def test_a_snapshot_install_is_a_restored_change():
    change = changes.restored(40)
    assert change.restored and change.seq == 40 and change.command is None
