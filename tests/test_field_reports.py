"""Polled values into the replicated image on real node processes and a real device (a unit of the recording device): the
deadband, quality changes, a device that returns with the values it had, and a changed deadband."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import apply_building, point_view

from plugins.simulator.modbus_recorder import RecorderProcess
from webmanager.tools.launcher import LocalCluster, wait_for

BUILDING = """
[[devices]]
name = "plc"
driver = "modbus"
host = "127.0.0.1"
port = {port}
unit = 2
poll_interval = 0.05
timeout = 0.3
reconnect_min = 0.05
reconnect_max = 0.2

[[points]]
name = "plc.temp"
device = "plc"
register = "input"
address = 0
deadband = {deadband}

[[points]]
name = "plc.marker"
device = "plc"
register = "input"
address = 1
"""


@pytest.fixture
def device() -> Iterator[RecorderProcess]:
    device = RecorderProcess(units=2).start()
    yield device
    device.kill()


def on_backup(cluster: LocalCluster, marker: int, quality: str = "good") -> tuple:
    """plc.temp's (value, quality) in the backup's image once plc.marker reads `marker` there (both are read in one request,
    so the temperature read with that marker was reported, or filtered, in the same batch)."""
    def temp() -> tuple | None:  # the marker first: once it shows, the batch that carried it (and the temperature) applied
        points = {name: point_view(cluster, "backup", name) or {} for name in ("plc.marker", "plc.temp")}
        if (points["plc.marker"].get("value"), points["plc.marker"].get("quality")) != (marker, quality):
            return None
        return points["plc.temp"]["value"], points["plc.temp"]["quality"]
    return wait_for(temp, 10, f"plc.marker = {marker} ({quality}) on the backup")


def apply(cluster: LocalCluster, device: RecorderProcess, directory: Path, deadband: float) -> None:
    applied = apply_building(cluster, BUILDING.format(port=device.port, deadband=deadband), directory)
    assert applied.returncode == 0, applied.stderr


def test_the_deadband_quality_changes_a_returning_device_and_a_new_deadband(make_cluster, device, tmp_path):
    cluster = make_cluster()
    cluster.wait_active(name="main")
    device.set("input", 0, [100, 1], unit=2)
    apply(cluster, device, tmp_path, deadband=1.5)
    assert on_backup(cluster, 1) == (100, "good")
    device.set("input", 0, [101, 2], unit=2)
    assert on_backup(cluster, 2) == (100, "good")  # within the deadband: not in the log
    device.set("input", 0, [102, 3], unit=2)
    assert on_backup(cluster, 3) == (102, "good")  # 2 from the logged 100: beyond it
    device.set("input", 0, [101, 4], unit=2)
    assert on_backup(cluster, 4) == (102, "good")

    device.pause()  # requests time out: comm-failure, value None
    wait_for(lambda: (point_view(cluster, "backup", "plc.temp") or {}).get("quality") == "comm-failure", 10, "comm-failure")
    assert point_view(cluster, "backup", "plc.temp")["value"] is None
    device.resume()  # back with the registers it held: reported again though they did not change since the last read
    assert on_backup(cluster, 4) == (101, "good")

    device.set("input", 0, [102, 5], unit=2)
    assert on_backup(cluster, 5) == (101, "good")
    apply(cluster, device, tmp_path, deadband=0.0)  # the driver starts again with the new deadband and reports every point
    wait_for(lambda: (point_view(cluster, "backup", "plc.temp") or {}).get("value") == 102, 10, "plc.temp = 102 on the backup")
