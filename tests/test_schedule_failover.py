"""Schedules on real node processes driving a real Modbus device: a transition is applied once at its time, and one due
while no server is active is applied once by the new active and not again by main after fail-back."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from conftest import apply_building, point_view, tandem_cli

from webmanager.tools.cli import call_api
from webmanager.tools.launcher import holds_for, wait_for

ZONE = "Europe/Berlin"
BUILDING = """
[[devices]]
name = "ahu1"
driver = "modbus"
host = "127.0.0.1"
port = {port}
poll_interval = 0.2
timeout = 0.5

[[points]]
name = "ahu1.setpoint"
device = "ahu1"
register = "holding"
address = 10
type = "int16"
writable = true

[[schedules]]
name = "comfort"
point = "ahu1.setpoint"
timezone = "{zone}"
default = 16
"""
WRITE_SINGLE, SETPOINT = 6, 10


def building(port: int, events: list[tuple[float, int]]) -> str:
    """BUILDING with the events (epoch second, value) as local times of exception days in ZONE."""
    days: dict[str, list[str]] = {}
    for ts, value in events:
        moment = dt.datetime.fromtimestamp(ts, ZoneInfo(ZONE))
        days.setdefault(moment.date().isoformat(), []).append(f'{{at = "{moment:%H:%M:%S}", value = {value}}}')
    exceptions = [f'[[schedules.exceptions]]\nname = "test {day}"\ndate = "{day}"\nevents = [{", ".join(e)}]\n' for day, e in days.items()]
    return BUILDING.format(port=port, zone=ZONE) + "\n".join(exceptions)


def seconds_ahead(seconds: int) -> float:
    return float(math.ceil(time.time()) + seconds)


def setpoint_writes(device) -> list:
    return [request for request in device.stats()["requests"] if request[:2] == [WRITE_SINGLE, SETPOINT]]


def holds(device) -> int:
    return device.get("holding", SETPOINT)[0]


def journal(cluster, node: str) -> list[dict[str, Any]]:
    code, answer = call_api(cluster.config, cluster[node].spec.api, "GET", "/api/v1/schedules/journal")
    assert code == 200, answer
    return answer["entries"]


def applied(cluster, node: str) -> list[tuple[float | None, int]]:
    return [(entry["at"], entry["value"]) for entry in journal(cluster, node)]


def scheduled(cluster, device, tmp_path: Path, events: list[tuple[float, int]]) -> None:
    """Apply the building; wait until the default (16) is on the device and in the backup's journal."""
    result = apply_building(cluster, building(device.port, events), tmp_path)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: holds(device) == 16, 10, "the default on the device")
    wait_for(lambda: applied(cluster, "backup") == [(None, 16)], 5, "the default in the backup's journal")


def test_a_transition_is_applied_once_at_its_time_by_the_stable_active(make_cluster, tandem_modbus_device, tmp_path):
    device = tandem_modbus_device()
    cluster = make_cluster(failback="manual")
    first = seconds_ahead(5)
    scheduled(cluster, device, tmp_path, [(first, 22), (first + 2, 18)])
    assert time.time() < first and len(setpoint_writes(device)) == 1
    wait_for(lambda: holds(device) == 22, 15, "the first transition on the device")
    wait_for(lambda: holds(device) == 18, 5, "the second transition on the device")
    holds_for(lambda: len(setpoint_writes(device)) == 3, 1.5, "one write per transition")
    entries = journal(cluster, "main")
    assert [(e["schedule"], e["point"], e["at"], e["value"]) for e in entries] == [
        ("comfort", "ahu1.setpoint", None, 16), ("comfort", "ahu1.setpoint", first, 22), ("comfort", "ahu1.setpoint", first + 2, 18),
    ]
    assert all(0 <= e["ts"] - e["at"] < 1.0 for e in entries[1:]), entries  # committed at its time, not before, not a cycle late
    listed = tandem_cli(cluster, "schedules", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    [comfort] = json.loads(listed.stdout)
    assert comfort["due"] == comfort["applied"] and comfort["applied"]["value"] == 18 and comfort["next"] is None
    table = tandem_cli(cluster, "schedules", cwd=tmp_path)
    assert table.returncode == 0 and "comfort" in table.stdout, table.stderr


def test_a_transition_due_in_the_failover_gap_is_applied_once_by_the_backup_and_not_again_after_fail_back(
    make_cluster, tandem_modbus_device, tmp_path
):
    device = tandem_modbus_device()
    cluster = make_cluster(cluster={"failback_holdoff": 0.5})
    cluster.wait_active(name="main")
    due = seconds_ahead(6)
    scheduled(cluster, device, tmp_path, [(due, 22)])

    wait_for(lambda: time.time() >= due - 0.1, 10, "just before the transition")
    cluster["main"].kill()
    assert time.time() < due, "main must die before the transition is due"
    assert cluster.wait_active(5) == "backup"
    first_act = (cluster["backup"].view() or {})["acts"]["first"]
    assert first_act > due, "the backup acted before the transition was due: it did not fall into the gap"
    wait_for(lambda: holds(device) == 22, 10, "the backup applying the transition")
    holds_for(lambda: len(setpoint_writes(device)) == 2, 1.5, "one write of the default, one of the transition")
    assert applied(cluster, "backup") == [(None, 16), (due, 22)]

    device.set("holding", SETPOINT, [19])  # changed at the device: a schedule applied again would overwrite it
    wait_for(lambda: (point_view(cluster, "backup", "ahu1.setpoint") or {}).get("value") == 19, 5, "the backup reading 19")
    cluster.start("main")
    cluster.wait_active(30, name="main")  # caught up, then handed back
    holds_for(lambda: holds(device) == 19 and len(setpoint_writes(device)) == 2, 2.0, "main not applying the transition again")
    wait_for(lambda: journal(cluster, "main") == journal(cluster, "backup"), 5, "identical journals")
    assert applied(cluster, "main") == [(None, 16), (due, 22)]
