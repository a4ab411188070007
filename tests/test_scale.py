"""A building of 100,000 points on real node processes: applied through `tandem config apply` in bounded log entries with
no election and the active never changing, every point of the last device read good; a refused one (one bad entry)
leaves the old configuration in place on all three nodes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import apply_building, module_cluster

from cluster.guard import read_acts
from plugins.simulator.modbus_recorder import RecorderProcess
from webmanager.tools.cli import call_api
from webmanager.tools.launcher import LocalCluster, holds_for, wait_for

DEVICES, REGISTERS = 100, 1_000


def building(port: int, devices: int = DEVICES, bad: str | None = None) -> str:
    """`devices` Modbus devices (units of one recording device) of REGISTERS input registers each, polled every 5 s."""
    lines = []
    for d in range(devices):
        lines += ["[[devices]]", f'name = "plc{d}"', 'driver = "modbus"', 'host = "127.0.0.1"', f"port = {port}", f"unit = {d + 1}", "poll_interval = 5.0"]
    for d in range(devices):
        for r in range(REGISTERS):
            lines += ["[[points]]", f'name = "plc{d}.r{r}"', f'device = "plc{d}"', 'register = "input"', f"address = {bad if bad and (d, r) == (devices // 2, 7) else r}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, RecorderProcess, Path]]:
    directory = tmp_path_factory.mktemp("scale")
    device = RecorderProcess(units=DEVICES).start()
    try:
        with module_cluster(directory, failback="manual") as cluster:
            yield cluster, device, directory
    finally:
        device.kill()


def views(cluster: LocalCluster) -> dict[str, dict]:
    return {name: view for name, view in cluster.views().items() if view is not None}


def test_a_building_of_100k_points_is_applied_without_an_election_and_polled(scaled):
    cluster, device, directory = scaled
    term, started = cluster["main"].view()["term"], time.time()
    applied = apply_building(cluster, building(device.port), directory)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip().endswith(f"{DEVICES * REGISTERS + DEVICES} document(s) changed")
    last = [f"plc{DEVICES - 1}.r{r}" for r in range(REGISTERS)]
    device.set("input", 0, list(range(1000, 1000 + REGISTERS)), unit=DEVICES)

    def last_device_good() -> bool:
        code, answer = call_api(cluster.config, cluster["backup"].spec.api, "GET", f"/api/v1/points?prefix=plc{DEVICES - 1}.&limit=10000")
        points = {point["name"]: point for point in answer["points"]} if code == 200 else {}
        return all(name in points and points[name]["quality"] == "good" and points[name]["value"] == 1000 + r for r, name in enumerate(last))

    wait_for(last_device_good, 60, "every point of the last device read good, in the backup's image")
    holds_for(lambda: cluster.active() == "main", 2.0, "main staying active while it polls 100k points")
    assert {view["term"] for view in views(cluster).values()} == {term}  # no election, so no other active
    assert not [act for act in read_acts(cluster["backup"].spec.data_dir / "acts.log") if act["wall"] > started]
    for view in views(cluster).values():
        assert view["points"] >= DEVICES * REGISTERS and view["largest_entry"] < 2**20


def test_a_refused_building_of_100k_points_leaves_the_old_one_on_every_node(scaled):
    cluster, device, directory = scaled
    before = {name: configuration(cluster, name) for name in ("main", "backup")}
    assert before["main"] == before["backup"]
    refused = apply_building(cluster, building(device.port, bad="70000"), directory, "bad.toml")
    assert refused.returncode == 2
    assert f"bad.toml: points[{DEVICES // 2 * REGISTERS + 7}].address: Input should be less than or equal to 65535" in refused.stderr
    assert {name: configuration(cluster, name) for name in ("main", "backup")} == before


def configuration(cluster: LocalCluster, node: str) -> dict:
    code, building = call_api(cluster.config, cluster[node].spec.api, "GET", "/api/v1/config", timeout=60)
    assert code == 200, building
    return building
