"""Field I/O across a failover on real node processes and real devices: polling and COV move to the new active, an
operator write reaches the device exactly once wherever the old active died, and a confirmed write is never repeated."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from conftest import apply_building, confirmed_write, point_view, tandem_cli

from plugins.simulator.modbus_recorder import RecorderProcess
from webmanager.tools.cli import call_api
from webmanager.tools.launcher import wait_for

BUILDING = """
[[devices]]
name = "ahu1"
driver = "modbus"
host = "127.0.0.1"
port = {port}
poll_interval = 0.1
timeout = 0.5
request_gap = {gap}

[[points]]
name = "ahu1.supply_temp"
device = "ahu1"
register = "input"
address = 0
type = "int16"
scale = 0.1

[[points]]
name = "ahu1.setpoint"
device = "ahu1"
register = "holding"
address = 10
type = "float32"
writable = true
"""

WRITE_SINGLE, WRITE_MULTIPLE = 6, 16


def writes(device) -> list:
    return [request for request in device.stats()["requests"] if request[0] in (WRITE_SINGLE, WRITE_MULTIPLE)]


def backup_value(cluster, name: str):
    return (point_view(cluster, "backup", name) or {}).get("value")


def ahu_under_control(make_cluster, device, tmp_path: Path, gap: float = 0.0):
    """Main active (failback manual), polling the AHU device; its supply temperature 21.5 already in the backup's image."""
    device.set("input", 0, [215])
    cluster = make_cluster(failback="manual")
    cluster.wait_active(name="main")
    applied = apply_building(cluster, BUILDING.format(port=device.port, gap=gap), tmp_path)
    assert applied.returncode == 0, applied.stderr
    wait_for(lambda: backup_value(cluster, "ahu1.supply_temp") == 21.5, 10, "21.5 in the backup's image")
    return cluster


def test_polling_and_writes_follow_the_active_server(make_cluster, tandem_modbus_device, tmp_path):
    device = tandem_modbus_device()
    cluster = ahu_under_control(make_cluster, device, tmp_path)
    assert point_view(cluster, "backup", "ahu1.supply_temp")["source"] == "modbus:ahu1"

    put = tandem_cli(cluster, "put", "ahu1.setpoint", "19.5", cwd=tmp_path)
    assert put.returncode == 0, put.stderr
    confirmed = wait_for(lambda: confirmed_write(cluster, "backup", "ahu1.setpoint", 19.5), 10, "the setpoint's read-back on the backup")
    assert confirmed["source"] == "modbus:ahu1"
    assert len(writes(device)) == 1

    cluster["main"].kill()
    assert cluster.wait_active(5) == "backup"
    device.set("input", 0, [230])
    wait_for(lambda: backup_value(cluster, "ahu1.supply_temp") == 23.0, 5, "the backup polling the device")
    assert len(writes(device)) == 1  # the confirmed write was not repeated by the new active


@pytest.mark.parametrize("died", ["before-the-write", "after-the-write"])
def test_a_write_outstanding_at_failover_reaches_the_device_exactly_once(make_cluster, tandem_modbus_device, tmp_path, died):
    """Every request of the old active waits 2 s (request_gap), so main is killed either with the committed write still
    waiting to be sent, or after the device executed it but before main committed the read-back: one write either way."""
    device = tandem_modbus_device()
    cluster = ahu_under_control(make_cluster, device, tmp_path, gap=2.0)
    assert tandem_cli(cluster, "put", "ahu1.setpoint", "19.5", cwd=tmp_path).returncode == 0
    wait_for(lambda: (point_view(cluster, "backup", "ahu1.setpoint") or {}).get("desired"), 10, "the write committed on the backup")
    if died == "after-the-write":
        wait_for(lambda: writes(device), 10, "main's write to reach the device")
    cluster["main"].kill()
    assert len(writes(device)) == (died == "after-the-write")
    assert (point_view(cluster, "backup", "ahu1.setpoint") or {}).get("desired"), "main died before committing the outcome"
    assert cluster.wait_active(5) == "backup"
    confirmed = wait_for(lambda: confirmed_write(cluster, "backup", "ahu1.setpoint", 19.5), 15, "the backup confirming the write")
    assert confirmed["source"] == "modbus:ahu1"
    assert len(writes(device)) == 1


ROOMS = """
[[devices]]
name = "rooms"
driver = "bacnet"
address = "{address}"
poll_interval = 30.0

[[points]]
name = "room.temp"
device = "rooms"
object = "analog-value,2"
cov = true
"""


def test_cov_subscription_moves_to_the_new_active(make_cluster, tandem_bacnet_device, tmp_path):
    device = tandem_bacnet_device()
    cluster = make_cluster(failback="manual")
    cluster.wait_active(name="main")
    applied = apply_building(cluster, ROOMS.format(address=device.address), tmp_path)
    assert applied.returncode == 0, applied.stderr
    device.set("analog-value,2", 23.5)
    wait_for(lambda: backup_value(cluster, "room.temp") == 23.5, 10, "the COV change on the backup")
    cluster["main"].kill()
    assert cluster.wait_active(5) == "backup"
    device.set("analog-value,2", 24.0)  # the new active's first read or its subscription brings this
    wait_for(lambda: backup_value(cluster, "room.temp") == 24.0, 10, "the backup reading the device")
    device.set("analog-value,2", 25.0)  # its next poll is 30 s away: only its COV subscription brings this in time
    wait_for(lambda: backup_value(cluster, "room.temp") == 25.0, 5, "the COV change through the new active")


def test_paused_active_sends_the_device_nothing_after_the_new_active_began(make_cluster, tandem_modbus_device, tmp_path):
    device = tandem_modbus_device()
    cluster = ahu_under_control(make_cluster, device, tmp_path)
    old = device.stats()["requests"][-1][4]  # the connection of main's driver
    cluster["main"].signal(signal.SIGSTOP)
    assert cluster.wait_active(5) == "backup"
    first_new = wait_for(lambda: [r[3] for r in device.stats()["requests"] if r[4] != old], 5, "the backup's driver polling")[0]
    cluster["main"].signal(signal.SIGCONT)
    wait_for(lambda: (cluster["main"].view() or {}).get("role") == "standby", 10, "main to resume as a standby")
    wait_for(lambda: (cluster["main"].view() or {}).get("plugins", {}).get("devices") == {}, 2, "main to stop its driver")
    late = [r for r in device.stats()["requests"] if r[4] == old and r[3] >= first_new]
    assert late == [], f"the old active sent {len(late)} requests after the new active's first"
    assert [r for r in device.stats()["requests"] if r[4] != old and r[3] > first_new]  # while the new active keeps polling


def test_a_moment_without_the_active_role_makes_no_point_comm_failure(make_cluster, tmp_path):
    """Main paused longer than its lease but shorter than an election timeout loses the role for a moment, in the same
    term: the fence cuts every connection, and the drivers that see their requests reset must not report devices lost."""
    device = RecorderProcess(units=1).start()
    try:
        device.set("input", 0, [215])
        timers = {"election_min": 1.0, "election_max": 2.0, "lease_ratio": 0.3, "connection_timeout": 2.0}
        cluster = make_cluster(failback="manual", timers=timers)
        trend = '\n[[trends]]\nname = "ahu1.supply_temp"\npoint = "ahu1.supply_temp"\n'
        applied = apply_building(cluster, BUILDING.format(port=device.port, gap=0.0) + trend, tmp_path)
        assert applied.returncode == 0, applied.stderr
        wait_for(lambda: backup_value(cluster, "ahu1.supply_temp") == 21.5, 10, "21.5 in the backup's image")
        term, since = cluster["main"].view()["term"], time.time()
        for _ in range(3):
            cut = cluster.log("main").count("cut off")
            cluster["main"].signal(signal.SIGSTOP)
            wait_for(lambda: time.time() > since + 0.5, 1, "the pause to outlast the lease (0.3 s), not an election (1 s)")
            cluster["main"].signal(signal.SIGCONT)
            wait_for(lambda: cluster.log("main").count("cut off") > cut, 5, "the fence to cut main's connection")
            wait_for(lambda: cluster.active() == "main", 5, "main active again")
            since = time.time()
        device.set("input", 0, [230])
        wait_for(lambda: backup_value(cluster, "ahu1.supply_temp") == 23.0, 10, "main polling again")
        assert {view["term"] for view in cluster.views().values() if view} == {term}  # no election: the same active
        code, history = call_api(cluster.config, cluster["backup"].spec.api, "GET", "/api/v1/trends/ahu1.supply_temp")
        assert code == 200 and {sample["quality"] for sample in history["samples"]} == {"good"}, history["samples"]
    finally:
        device.kill()
