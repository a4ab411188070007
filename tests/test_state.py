"""Unit tests for the replicated commands and the process-image state machine."""

import pickle

import pytest

from cluster.commands import (
    MAX_PART_BYTES,
    MAX_PART_DOCUMENTS,
    Activate,
    ApplyDocuments,
    CommandError,
    DeleteDocument,
    DiscardStaged,
    PointUpdate,
    PutDocument,
    StageDocuments,
    Step,
    UpdatePoints,
    WriteOutcome,
    WritePoint,
    in_parts,
)
from cluster.state import (
    STAGE_IDLE,
    Activation,
    AuditEntry,
    DesiredWrite,
    Document,
    JournalEntry,
    PointValue,
    ProcessImage,
    Rejected,
    UnknownCommand,
    moved,
)


def update(name: str = "ahu-1/supply-temp", value=21.5, quality="good", ts=100.0, source="modbus:ahu-1"):
    return PointUpdate(name, value, quality, ts, source)


def batch(*updates: PointUpdate) -> UpdatePoints:
    return UpdatePoints(updates)


def scenario() -> list:
    """A command list touching every command type, including refusals."""
    return [
        Activate("main", 1, 10.0),
        batch(*(update(f"zone-{i}/temp", 20.0 + i, "good", 11.0, f"modbus:dev-{i % 3}") for i in range(50))),
        batch(
            update("zone-1/alarm", True, "uncertain", 12.0, "bacnet:1001"),
            update("zone-2/mode", "auto", ts=12.0),
        ),
        WritePoint("zone-1/setpoint", 22.0, "alice", 13.0),
        PutDocument("devices", "ahu-1", {"host": "10.0.0.5", "tags": ["a", {"b": None}]}, "bob", 14.0),
        PutDocument("devices", "ahu-1", {"host": "10.0.0.6"}, "bob", 15.0, expected_version=7),
        PutDocument("alarms", "high-temp", {"limit": 30.5}, "bob", 16.0),
        DeleteDocument("alarms", "high-temp", "bob", 17.0, expected_version=1),
        DeleteDocument("alarms", "missing", "bob", 18.0),
        ApplyDocuments((PutDocument("points", "p1", {"device": "ahu-1"}, "eve", 18.5), DeleteDocument("devices", "ahu-1", "eve", 18.5))),
        ApplyDocuments((PutDocument("points", "p2", {}, "eve", 18.6), DeleteDocument("devices", "gone", "eve", 18.6))),
        Activate("backup", 2, 19.0),
        Activate("main", 1, 20.0),
        batch(update("zone-1/temp", None, "comm-failure", 21.0, "modbus:dev-1")),
        PutDocument("points", "ahu-1/sp", {"device": "ahu-1", "writable": True}, "bob", 22.0),
        WritePoint("ahu-1/sp", 19.5, "alice", 23.0),
        WritePoint("ahu-1/sp", 20.5, "alice", 24.0),
        WriteOutcome("ahu-1/sp", 1, 19.5, None, "modbus:ahu-1", 25.0),
        Step("alarms", None, 26.0, changes=(("hi", None, {"state": "active-unacked"}),), journal=({"event": "raised"},)),
        Step("alarms", "alice", 27.0, changes=(("hi", {"state": "active-unacked"}, {"state": "active-acked"}),), journal=({"event": "acked"},)),
        Step("alarms", "bob", 28.0, changes=(("hi", {"state": "active-unacked"}, {"state": "active-acked"}),)),
        Step("schedules", None, 29.0, changes=(("night", None, 1),), writes=(("ahu-1/sp", 18.0), ("zone-9/mode", "eco"))),
    ]


def applied(commands: list) -> ProcessImage:
    image = ProcessImage()
    for cmd in commands:
        image.apply(cmd)
    return image


# --- command effects -------------------------------------------------------------------------


def test_update_points_sets_every_point_and_last_write_wins():
    image = ProcessImage()
    cmd = batch(update("a", 1, ts=5.0), update("b", "on", "bad", 7.0, "bacnet:9"), update("a", 2, ts=6.0))

    assert image.apply(cmd) is None
    assert image.points == {
        "a": PointValue(2, "good", 6.0, "modbus:ahu-1"),
        "b": PointValue("on", "bad", 7.0, "bacnet:9"),
    }
    assert image.point("b") == PointValue("on", "bad", 7.0, "bacnet:9")
    assert image.point("missing") is None
    assert cmd.ts == 7.0
    assert (image.last_ts, image.applied) == (7.0, 1)


def test_point_update_is_a_name_plus_a_point_value():
    assert PointUpdate._fields == ("name", *PointValue._fields)


def test_update_points_survives_the_wire_as_typed_updates():
    cmd = batch(update("a", 1.5, ts=5.0), update("b", None, "comm-failure", 6.0))

    wire = pickle.dumps(cmd)
    copy = pickle.loads(wire)

    assert b"PointUpdate" not in wire  # plain columns on the wire, typed updates again on arrival
    assert copy == cmd
    assert all(type(u) is PointUpdate for u in copy.updates)
    image = ProcessImage()
    image.apply(copy)
    assert image.points["b"] == PointValue(None, "comm-failure", 6.0, "modbus:ahu-1")


def test_write_point_sets_good_value_from_user_and_audits():
    image = ProcessImage()
    image.apply(batch(update("zone/setpoint", 20.0, "bad", ts=1.0)))

    assert image.apply(WritePoint("zone/setpoint", 22.5, "alice", 2.0)) is None

    assert image.points["zone/setpoint"] == PointValue(22.5, "good", 2.0, "user:alice")
    assert list(image.audit) == [AuditEntry(1, 2.0, "alice", "write", "zone/setpoint", "22.5")]
    assert (image.last_ts, image.applied) == (2.0, 2)


def test_put_document_creates_and_replaces_with_versions():
    image = ProcessImage()

    assert image.apply(PutDocument("devices", "ahu-1", {"port": 502}, "bob", 1.0)) == 1
    assert image.apply(PutDocument("devices", "ahu-1", {"port": 503}, "carol", 2.0, expected_version=1)) == 2

    assert image.documents["devices"]["ahu-1"] == Document(2, {"port": 503}, "carol", 2.0)
    assert [(e.seq, e.action, e.target, e.detail) for e in image.audit] == [
        (1, "put", "devices/ahu-1", "version 1"),
        (2, "put", "devices/ahu-1", "version 2"),
    ]


def test_put_document_expected_version_zero_means_must_not_exist():
    image = ProcessImage()
    assert image.apply(PutDocument("users", "alice", {}, "admin", 1.0, expected_version=0)) == 1

    result = image.apply(PutDocument("users", "alice", {}, "admin", 2.0, expected_version=0))

    assert result == Rejected("version conflict: users/alice is at version 1, expected 0")


def test_put_document_version_conflict_is_rejected_without_changes():
    image = ProcessImage()
    image.apply(PutDocument("schedules", "weekday", {"on": "07:00"}, "bob", 1.0))
    before = ProcessImage.encode(image.freeze())

    result = image.apply(PutDocument("schedules", "weekday", {"on": "06:00"}, "bob", 5.0, expected_version=3))

    assert result == Rejected("version conflict: schedules/weekday is at version 1, expected 3")
    assert image.documents["schedules"]["weekday"].body == {"on": "07:00"}
    assert len(image.audit) == 1
    # A refusal is still an applied log entry.
    assert (image.last_ts, image.applied) == (5.0, 2)
    assert ProcessImage.encode(image.freeze()) != before


def test_put_document_body_is_a_private_copy():
    body = {"points": [{"address": 1}], "host": "10.0.0.5"}
    cmd = PutDocument("devices", "ahu-1", body, "bob", 1.0)
    image = ProcessImage()
    image.apply(cmd)

    body["host"] = "changed"
    body["points"][0]["address"] = 99

    assert image.documents["devices"]["ahu-1"].body == {"points": [{"address": 1}], "host": "10.0.0.5"}


def test_delete_document_removes_and_audits():
    image = ProcessImage()
    image.apply(PutDocument("trends", "t1", {"period": 60}, "bob", 1.0))

    assert image.apply(DeleteDocument("trends", "t1", "carol", 2.0, expected_version=1)) is None

    assert image.documents["trends"] == {}
    assert image.audit[-1] == AuditEntry(2, 2.0, "carol", "delete", "trends/t1", "version 1")


def test_delete_document_missing_or_conflicting_is_rejected():
    image = ProcessImage()
    image.apply(PutDocument("logic", "l1", {}, "bob", 1.0))

    missing = image.apply(DeleteDocument("logic", "l2", "bob", 2.0))
    conflict = image.apply(DeleteDocument("logic", "l1", "bob", 3.0, expected_version=2))

    assert missing == Rejected("not found: logic/l2")
    assert conflict == Rejected("version conflict: logic/l1 is at version 1, expected 2")
    assert "l1" in image.documents["logic"]
    assert len(image.audit) == 1


def test_apply_documents_applies_all_changes_and_audits_each():
    image = ProcessImage()
    image.apply(PutDocument("devices", "old", {}, "bob", 1.0))
    result = image.apply(
        ApplyDocuments(
            (
                PutDocument("devices", "ahu1", {"driver": "modbus"}, "eve", 2.0),
                PutDocument("points", "ahu1.t", {"device": "ahu1"}, "eve", 2.0),
                DeleteDocument("devices", "old", "eve", 2.0),
            )
        )
    )
    assert result == (1, 1, None)
    assert set(image.documents["devices"]) == {"ahu1"} and set(image.documents["points"]) == {"ahu1.t"}
    assert [entry.action for entry in image.audit] == ["put", "put", "put", "delete"]


def test_apply_documents_is_all_or_nothing():
    image = ProcessImage()
    image.apply(PutDocument("devices", "ahu1", {"v": 1}, "bob", 1.0))
    result = image.apply(
        ApplyDocuments(
            (
                PutDocument("devices", "ahu1", {"v": 2}, "eve", 2.0),
                PutDocument("points", "p", {}, "eve", 2.0, expected_version=3),
            )
        )
    )
    assert result == Rejected("version conflict: points/p is at version 0, expected 3")
    assert image.documents["devices"]["ahu1"].body == {"v": 1} and image.documents["points"] == {}
    missing = image.apply(ApplyDocuments((PutDocument("points", "q", {}, "eve", 3.0), DeleteDocument("devices", "nope", "eve", 3.0))))
    assert missing == Rejected("not found: devices/nope") and image.documents["points"] == {}


def test_apply_documents_refuses_empty_mixed_or_repeated_changes():
    put = PutDocument("points", "p", {}, "eve", 1.0)
    with pytest.raises(CommandError, match="changes must be a non-empty tuple"):
        ApplyDocuments(())
    with pytest.raises(CommandError, match=r"changes\[1\] must be a PutDocument or DeleteDocument, got WritePoint"):
        ApplyDocuments((put, WritePoint("p", 1, "eve", 1.0)))
    with pytest.raises(CommandError, match=r"changes\[1\] changes points/p a second time"):
        ApplyDocuments((put, DeleteDocument("points", "p", "eve", 1.0)))


def device_point_image(writable: bool = True) -> ProcessImage:
    image = ProcessImage()
    image.apply(PutDocument("points", "ahu1.sp", {"device": "ahu1", "writable": writable}, "bob", 1.0))
    return image


def test_write_to_a_device_point_is_desired_state_until_read_back():
    image = device_point_image()
    assert image.apply(WritePoint("ahu1.sp", 21.0, "alice", 2.0)) == 1
    assert image.desired["ahu1.sp"] == DesiredWrite(21.0, "alice", 2.0, 1, None)
    assert "ahu1.sp" not in image.points  # the value comes from the device, not from the wish
    image.apply(WriteOutcome("ahu1.sp", 1, 21.0, None, "modbus:ahu1", 3.0))
    assert image.desired == {}
    assert image.points["ahu1.sp"] == PointValue(21.0, "good", 3.0, "modbus:ahu1")
    assert [entry.action for entry in image.audit][-2:] == ["write", "written"]


def test_an_outcome_for_an_older_write_keeps_the_newer_one_desired():
    image = device_point_image()
    image.apply(WritePoint("ahu1.sp", 21.0, "alice", 2.0))
    image.apply(WritePoint("ahu1.sp", 22.0, "alice", 3.0))
    image.apply(WriteOutcome("ahu1.sp", 1, 21.0, None, "modbus:ahu1", 4.0))
    assert image.desired["ahu1.sp"].seq == 2 and image.points["ahu1.sp"].value == 21.0


def test_a_failed_write_stays_desired_with_its_error():
    image = device_point_image()
    image.apply(WritePoint("ahu1.sp", 21.0, "alice", 2.0))
    image.apply(WriteOutcome("ahu1.sp", 1, None, "timeout", "modbus:ahu1", 3.0))
    assert image.desired["ahu1.sp"].error == "timeout"
    assert image.audit[-1].action == "write-failed"


def test_write_to_a_point_that_is_not_writable_is_rejected():
    image = device_point_image(writable=False)
    assert image.apply(WritePoint("ahu1.sp", 21.0, "alice", 2.0)) == Rejected("point ahu1.sp is not writable")
    assert image.desired == {} and image.write_seq == 0


def test_a_step_applies_whole_only_if_what_the_function_read_still_holds():
    image = ProcessImage()
    first = Step("logic", None, 1.0, changes=(("t1", None, {"run": 1.0}), ("c1", None, 5)), journal=({"event": "start"},))
    assert image.apply(first) == ()
    stale = Step("logic", None, 2.0, changes=(("c1", 5, 6), ("t1", None, {"run": 2.0})), journal=({"event": "again"},), writes=(("v", 1),))
    assert image.apply(stale) == Rejected("stale step: logic/t1 changed since the step was decided")
    assert image.functions == {"logic": {"t1": {"run": 1.0}, "c1": 5}}
    assert [entry.seq for entry in image.journals["logic"]] == [1] and "v" not in image.points
    assert image.apply(Step("logic", None, 3.0, changes=(("t1", {"run": 1.0}, None), ("c1", 5, None)))) == ()
    assert image.functions == {}  # deleting every key leaves no empty function behind


def test_a_step_writes_points_as_its_function_and_audits_only_operators():
    image = ProcessImage()
    image.apply(PutDocument("points", "ro", {"device": "d"}, "bob", 1.0))
    image.apply(PutDocument("points", "sp", {"device": "d", "writable": True}, "bob", 1.0))
    audited = len(image.audit)
    assert image.apply(Step("schedules", None, 2.0, writes=(("sp", 21.0), ("mode", "day")))) == (1, None)
    assert image.desired["sp"].user == "schedules" and image.points["mode"].source == "user:schedules"
    assert len(image.audit) == audited  # the function's own decisions are in its journal, not in the audit trail
    assert image.apply(Step("schedules", None, 3.0, changes=(("k", None, 1),), writes=(("ro", 1),))) == Rejected("point ro is not writable")
    assert "schedules" not in image.functions
    image.apply(Step("alarms", "alice", 4.0, changes=(("hi", None, 1),), journal=({"event": "acked"},)))
    assert image.audit[-1] == AuditEntry(image.audit[-1].seq, 4.0, "alice", "alarms", "hi", "acked")


def test_journal_retention_keeps_numbering():
    image = ProcessImage()
    for ts in (1.0, 2.0, 3.0):
        image.apply(Step("alarms", None, ts, journal=({"event": "e"}, {"event": "f"})))
    image.apply(Step("alarms", None, 4.0, keep_since=3.0))
    assert [(entry.seq, entry.ts) for entry in image.journals["alarms"]] == [(5, 3.0), (6, 3.0)]
    image.apply(Step("alarms", None, 5.0, journal=({"event": "g"},), keep_since=10.0))
    assert list(image.journals["alarms"]) == [] and image.journal_seq["alarms"] == 7


def test_a_version_2_snapshot_is_still_read():
    image = applied(scenario()[:18])  # nothing a version 2 image could not hold
    frozen = image.freeze()._replace(functions={}, journals={}, journal_seq={})
    data = bytearray(ProcessImage.encode(frozen))
    payload = {key: pickle.loads(piece) for key, piece in pickle.loads(bytes(data[11:])).items()}  # version 5: one pickle each
    payload["documents"] = {kind: {name: tuple(doc) for name, doc in docs.items()} for kind, docs in image.documents.items()}
    for key in ("functions", "journals", "journal_seq", "generations", "staging"):
        del payload[key]
    payload["activation"] = payload.pop("activations")[-1][:3]  # before version 4: the last (node, term, since) only
    old = bytes(data[:10]) + b"\x02" + pickle.dumps(payload, 5)
    assert ProcessImage.decode(old).freeze() == image.freeze()._replace(activations=(Activation(*image.activation[:3]),), generations={})


def test_activate_records_the_newest_term_and_rejects_stale_ones():
    image = ProcessImage()

    assert image.apply(Activate("main", 3, 1.0)) is None
    assert image.apply(Activate("backup", 4, 2.0, gap=0.45)) is None
    stale = image.apply(Activate("main", 3, 3.0))
    assert image.apply(Activate("backup", 4, 4.0)) is None

    assert stale == Rejected("stale activation: main in term 3, but backup is active in term 4")
    assert image.activation == Activation("backup", 4, 4.0, "backup")
    assert (image.last_ts, image.applied) == (4.0, 4)
    # the failover history: every accepted activation, after whom and the gap its new active measured
    assert list(image.activations) == [
        Activation("main", 3, 1.0, None, None),
        Activation("backup", 4, 2.0, "main", 0.45),
        Activation("backup", 4, 4.0, "backup", None),
    ]


def test_the_failover_history_survives_a_snapshot_and_is_bounded():
    image = ProcessImage()
    for term in range(ProcessImage.ACTIVATION_RETENTION + 5):
        image.apply(Activate(("main", "backup")[term % 2], term, float(term), gap=0.5))
    restored = ProcessImage.decode(ProcessImage.encode(image.freeze()))
    assert list(restored.activations) == list(image.activations)
    assert len(restored.activations) == ProcessImage.ACTIVATION_RETENTION
    assert restored.activations[0].term == 5


def test_an_activation_gap_must_be_non_negative_seconds():
    with pytest.raises(CommandError, match="gap"):
        Activate("main", 1, 1.0, gap=-1.0)


def test_last_ts_never_goes_backwards():
    image = ProcessImage()
    image.apply(WritePoint("p", 1, "alice", 50.0))
    image.apply(WritePoint("p", 2, "alice", 40.0))

    assert image.last_ts == 50.0
    assert image.points["p"].ts == 40.0


def test_unknown_command_raises_and_changes_nothing():
    image = ProcessImage()
    for bogus in (object(), {"op": "write"}, ("p", 1, "good", 1.0, "x"), update()):
        with pytest.raises(UnknownCommand, match="not a replicated command"):
            image.apply(bogus)
    assert issubclass(UnknownCommand, TypeError)
    assert image.applied == 0


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field", "problem"),
    [
        (lambda: batch(update(), update(quality="excellent")), "updates[1].quality", "must be one of"),
        (lambda: batch(update(name="")), "updates[0].name", "must not be empty"),
        (lambda: batch(update(name="zone 1/temp")), "updates[0].name", "whitespace"),
        (lambda: batch(update(name="zone\x00")), "updates[0].name", "control"),
        (lambda: batch(update(name="x" * 201)), "updates[0].name", "at most 200"),
        (lambda: batch(update(value=[1])), "updates[0].value", "got list"),
        (lambda: batch(update(value=float("nan"))), "updates[0].value", "finite"),
        (lambda: batch(update(ts=5)), "updates[0].ts", "float"),
        (lambda: batch(update(source="")), "updates[0].source", "non-empty"),
        (lambda: batch(update(), ("p", 1, "good", 1.0, "x")), "updates[1]", "must be a PointUpdate"),
        (lambda: UpdatePoints(()), "updates", "non-empty tuple"),
        (lambda: UpdatePoints([update()]), "updates", "non-empty tuple"),
        (lambda: WritePoint("", 1, "alice", 1.0), "name", "must not be empty"),
        (lambda: WritePoint("p", {"a": 1}, "alice", 1.0), "value", "got dict"),
        (lambda: WritePoint("p", 1, "al ice", 1.0), "user", "whitespace"),
        (lambda: PutDocument("gad gets", "x", {}, "bob", 1.0), "kind", "must be one of devices"),
        (lambda: PutDocument("", "x", {}, "bob", 1.0), "kind", "or a function's name"),
        (lambda: PutDocument("devices", "", {}, "bob", 1.0), "name", "must not be empty"),
        (lambda: PutDocument("devices", "x", [1, 2], "bob", 1.0), "body", "must be a dict, got list"),
        (lambda: PutDocument("devices", "x", {"a": [1, {2, 3}]}, "bob", 1.0), "body['a'][1]", "got set"),
        (lambda: PutDocument("devices", "x", {"a": (1, 2)}, "bob", 1.0), "body['a']", "got tuple"),
        (lambda: PutDocument("devices", "x", {"a": {1: "b"}}, "bob", 1.0), "body['a']", "str keys"),
        (lambda: PutDocument("devices", "x", {"a": float("inf")}, "bob", 1.0), "body['a']", "finite"),
        (lambda: DeleteDocument("logic", "x", "bob", 1.0, expected_version=-1), "expected_version", "non-neg"),
        (lambda: DeleteDocument("logic", "x", "", 1.0), "user", "must not be empty"),
        (lambda: DeleteDocument("logic", "x", "bob", float("nan")), "ts", "finite float"),
        (lambda: Activate("main", -1, 1.0), "term", "non-negative int"),
        (lambda: Activate("main", True, 1.0), "term", "non-negative int"),
        (lambda: Activate("", 1, 1.0), "node", "must not be empty"),
        (lambda: Step("alarms", None, 1.0, changes=(("k", None),)), "changes[0]", "(key, expected, new)"),
        (lambda: Step("alarms", None, 1.0, changes=(("k", None, {1, 2}),)), "changes[0].new", "got set"),
        (lambda: Step("alarms", None, 1.0, changes=(("k", None, 1), ("k", 1, 2))), "changes", "at most once"),
        (lambda: Step("alarms", None, 1.0, journal=("raised",)), "journal[0]", "must be a dict"),
        (lambda: Step("alarms", None, 1.0, writes=(("p", [1]),)), "writes[0].value", "got list"),
        (lambda: Step("al arms", None, 1.0), "function", "whitespace"),
        (lambda: Step("alarms", None, 1.0, keep_since=float("inf")), "keep_since", "finite"),
    ],
)
def test_invalid_fields_are_named(build, field, problem):
    with pytest.raises(CommandError) as caught:
        build()
    assert caught.value.field == field
    assert str(caught.value).startswith(field + " ")
    assert problem in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_deeply_nested_body_is_refused():
    body: dict = {}
    inner = body
    for _ in range(40):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(CommandError, match="nested deeper than 32 levels"):
        PutDocument("logic", "deep", body, "bob", 1.0)


def test_commands_are_immutable():
    cmd = WritePoint("p", 1, "alice", 1.0)
    with pytest.raises(AttributeError):
        cmd.value = 2  # type: ignore[misc]


# --- determinism, retention, snapshots -------------------------------------------------------


def test_same_commands_give_identical_snapshots():
    commands = scenario()
    leader = applied(commands)
    follower = applied(pickle.loads(pickle.dumps(cmd)) for cmd in commands)

    assert ProcessImage.encode(leader.freeze()) == ProcessImage.encode(follower.freeze())
    assert ProcessImage.encode(leader.freeze()) == ProcessImage.encode(applied(commands).freeze())


def test_scenario_outcome():
    image = ProcessImage()
    results = [image.apply(cmd) for cmd in scenario()]

    assert [type(r).__name__ if isinstance(r, Rejected) else r for r in results] == [
        None, None, None, None, 1, "Rejected", 1, None, "Rejected", (1, None), "Rejected", None, "Rejected", None,
        1, 1, 2, None, (), (), "Rejected", (3, None),
    ]
    assert image.activation == Activation("backup", 2, 19.0, "main")
    assert image.points["zone-1/temp"] == PointValue(None, "comm-failure", 21.0, "modbus:dev-1")
    assert (image.last_ts, image.applied, len(image.points)) == (29.0, 22, 55)
    assert image.desired == {"ahu-1/sp": DesiredWrite(18.0, "schedules", 29.0, 3, None)}
    assert image.functions == {"alarms": {"hi": {"state": "active-acked"}}, "schedules": {"night": 1}}
    assert list(image.journals["alarms"]) == [JournalEntry(1, 26.0, {"event": "raised"}), JournalEntry(2, 27.0, {"event": "acked"})]


def test_audit_keeps_only_the_newest_entries():
    image = ProcessImage()
    total = ProcessImage.AUDIT_RETENTION + 5

    for i in range(total):
        image.apply(WritePoint("p", i, "alice", float(i)))

    assert len(image.audit) == ProcessImage.AUDIT_RETENTION
    assert (image.audit[0].seq, image.audit[-1].seq) == (6, total)
    assert image.audit[-1].detail == repr(total - 1)


def test_frozen_copy_is_isolated_from_later_applies():
    image = applied(scenario())
    frozen = image.freeze()
    encoded = ProcessImage.encode(frozen)

    image.apply(batch(update("zone-1/temp", 99.0, ts=30.0), update("new/point", 1, ts=30.0)))
    image.apply(WritePoint("zone-2/temp", 0.0, "alice", 31.0))
    image.apply(PutDocument("devices", "ahu-1", {"host": "changed"}, "bob", 32.0))
    image.apply(PutDocument("plugins", "modbus", {}, "bob", 33.0))
    image.apply(Activate("main", 9, 34.0))

    assert ProcessImage.encode(frozen) == encoded


def test_encode_decode_round_trip():
    image = applied(scenario())
    encoded = ProcessImage.encode(image.freeze())

    restored = ProcessImage.decode(encoded)

    assert restored.freeze() == image.freeze()
    assert ProcessImage.encode(restored.freeze()) == encoded
    assert restored.audit.maxlen == ProcessImage.AUDIT_RETENTION
    # The restored replica goes on exactly like the original one.
    more = [WritePoint("zone-3/temp", 1, "alice", 40.0), PutDocument("devices", "ahu-1", {}, "bob", 41.0)]
    for cmd in more:
        assert restored.apply(cmd) == image.apply(cmd)
    assert ProcessImage.encode(restored.freeze()) == ProcessImage.encode(image.freeze())


def test_empty_image_round_trip():
    restored = ProcessImage.decode(ProcessImage.encode(ProcessImage().freeze()))

    assert restored.freeze() == ProcessImage().freeze()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda good: b"", "bad magic"),
        (lambda good: b"definitely not a snapshot", "bad magic"),
        (lambda good: pickle.dumps({"points": {}}), "bad magic"),
        (lambda good: good[:10], "format version None"),
        (lambda good: good[:10] + b"\x07" + good[11:], "format version 7"),
        (lambda good: good[:11] + b"garbage", "corrupt"),
        (lambda good: good[: len(good) // 2], "corrupt"),
        (lambda good: good + b"\x00", "corrupt.*trailing"),
        (lambda good: good[:11] + pickle.dumps({"points": {}}, 5), "corrupt"),
        (lambda good: good[:11] + pickle.dumps(Activation("main", 1, 1.0), 5), "corrupt.*plain data only"),
    ],
)
def test_decode_refuses_bad_data(make, message):
    good = ProcessImage.encode(applied(scenario()).freeze())

    with pytest.raises(ValueError, match=message):
        ProcessImage.decode(make(good))


# ---- configuration changes staged in parts ----


def points_change(count: int, user: str = "eve", ts: float = 50.0, start: int = 0) -> list:
    return [PutDocument("points", f"p{i}", {"device": None, "writable": False, "deadband": 0.0}, user, ts, 0) for i in range(start, start + count)]


def test_a_big_change_is_staged_in_bounded_parts_and_becomes_visible_at_once():
    image = ProcessImage()
    image.apply(PutDocument("devices", "d", {"host": "h"}, "eve", 1.0))
    count = 2 * MAX_PART_DOCUMENTS + 100
    *parts, last = in_parts(points_change(count), "c1")
    assert [type(c) for c in parts] == [StageDocuments, StageDocuments] and last.staged == ("c1", 2)
    assert all(len(c.changes) <= MAX_PART_DOCUMENTS for c in (*parts, last))
    before = image.freeze()
    for part in parts:
        assert image.apply(part) == part.part
        assert image.documents["points"] == {} and image.kinds_changed == set()  # a standby never shows half a change
    assert image.freeze().documents == before.documents
    assert image.apply(last) == count
    assert len(image.documents["points"]) == count and image.kinds_changed == {"points"} and image.staging is None
    assert image.audit[-1][3:] == ("apply", "points", f"{count} put, 0 deleted (change c1, 3 parts)")


def test_a_staged_change_is_refused_whole_if_its_kinds_changed_meanwhile_or_an_activation_came():
    for between in (PutDocument("points", "p0", {"x": 1}, "bob", 51.0, 0), Activate("backup", 2, 51.0)):
        image = ProcessImage()
        [part, last] = in_parts(points_change(MAX_PART_DOCUMENTS + 100), "c1")
        image.apply(part)
        image.apply(between)
        assert isinstance(image.apply(last), Rejected)
        assert image.staging is None and set(image.documents["points"]) <= {"p0"}


def test_a_second_change_waits_until_the_first_is_done_or_idle():
    image = ProcessImage()
    image.apply(in_parts(points_change(2_500), "c1")[0])
    other = StageDocuments("c2", 1, tuple(points_change(1, "bob", 60.0)))
    assert isinstance(image.apply(other), Rejected)
    late = StageDocuments("c2", 1, tuple(points_change(1, "bob", 50.0 + STAGE_IDLE + 1)))
    assert image.apply(late) == 1 and image.staging.change == "c2"  # the first went idle: replaced
    assert isinstance(image.apply(StageDocuments("c2", 3, tuple(points_change(1)))), Rejected)  # parts must follow


def test_a_discarded_change_leaves_nothing():
    image = ProcessImage()
    *parts, last = in_parts(points_change(2_500), "c1")
    image.apply(parts[0])
    image.apply(DiscardStaged("c1", 51.0))
    assert image.staging is None and isinstance(image.apply(last), Rejected) and image.documents["points"] == {}


def test_a_snapshot_taken_while_staging_finishes_the_change_like_the_original():
    commands = in_parts(points_change(4_500), "c1")
    original = ProcessImage()
    original.apply(commands[0])
    restored = ProcessImage.decode(ProcessImage.encode(original.freeze()))
    assert ProcessImage.encode(restored.freeze()) == ProcessImage.encode(original.freeze())
    for image in (original, restored):
        for command in commands[1:]:
            image.apply(command)
    assert len(restored.documents["points"]) == 4_500
    assert ProcessImage.encode(restored.freeze()) == ProcessImage.encode(original.freeze())


def test_an_entry_holds_at_most_the_bound_of_documents_or_bytes():
    big = [PutDocument("points", f"p{i}", {"text": "x" * 100_000}, "eve", 1.0, 0) for i in range(30)]
    commands = in_parts(big, "c1")
    assert len(commands) > 1
    for command in commands:
        assert sum(len(pickle.dumps(c.body, protocol=5)) for c in command.changes) <= MAX_PART_BYTES or len(command.changes) == 1
    with pytest.raises(CommandError, match=f"at most {MAX_PART_DOCUMENTS}"):
        ApplyDocuments(tuple(points_change(MAX_PART_DOCUMENTS + 1)))


@pytest.mark.parametrize(
    ("old", "new", "deadband", "counts"),
    [
        (20.0, 20.5, 0.5, False),  # exactly the deadband: not beyond it (drivers and trends agree)
        (20.0, 20.51, 0.5, True),
        (20.0, 19.4, 0.5, True),
        (20, 20, 0.0, False),
        (20.0, 20.000001, 0.0, True),  # no deadband: any change counts
        (True, False, 0.5, True),  # booleans are not numbers here
        ("auto", "auto", 1.0, False),
        (None, 0.0, 1.0, True),
    ],
)
def test_the_deadband_rule(old, new, deadband, counts):
    assert moved(old, new, deadband) is counts
