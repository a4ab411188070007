"""Network partitions in network namespaces (cable pulls and black-holed links): the old active stops before the new one
starts, no frame it queued reaches a device after the new active's first request, heals cause no flapping, and a standby
that was cut off is current again within 2 s of the heal."""

from __future__ import annotations

import time
from pathlib import Path

from cluster.cli import call_api
from cluster.guard import read_acts
from cluster.processes import NODE_NAMES, LocalCluster, holds_for, wait_for, write_config
from conftest import Updater, apply_building, confirmed_write, point_view
from netns import NetnsHosts
from plugins.simulator.modbus_recorder import RecorderProcess

WRITE_SINGLE = 6
PLC = """
[[devices]]
name = "plc"
driver = "modbus"
host = "{host}"
port = {port}
poll_interval = 0.05
timeout = 0.5

[[points]]
name = "plc.setpoint"
device = "plc"
register = "holding"
address = 0
writable = true

[[points]]
name = "plc.temp"
device = "plc"
register = "input"
address = 0
"""


def start(net: NetnsHosts, tmp_path: Path, **options) -> LocalCluster:
    config = write_config(tmp_path, hosts=net.address, **options)
    cluster = LocalCluster(config, prefixes={host: net.prefix(host) for host in NODE_NAMES})
    cluster.start()
    return cluster


def test_partitioned_main_steps_down_before_backup_activates_and_rejoins_quietly(tmp_path):
    with NetnsHosts(NODE_NAMES) as net:
        cluster = start(net, tmp_path, failback="manual", timers={"lifesign_interval": 0.01})
        try:
            assert cluster.wait_active(15, "main") == "main"
            net.cut("main")
            # main is out of the test process's reach too: ask the others who is active
            wait_for(lambda: (cluster["backup"].view() or {}).get("role") == "active", 5, "backup to become active")
            term = cluster["backup"].view()["term"]
            main_acts = read_acts(cluster["main"].spec.data_dir / "acts.log")
            wait_for(lambda: read_acts(cluster["main"].spec.data_dir / "acts.log") == main_acts, 1, "main to stop acting")
            backup_acts = [a for a in read_acts(cluster["backup"].spec.data_dir / "acts.log") if a["term"] == term]
            assert max(a["wall"] for a in main_acts) < min(a["wall"] for a in backup_acts)

            net.heal("main")
            wait_for(lambda: (cluster["main"].view() or {}).get("term") == term, 10, "main to rejoin in the new term")
            holds_for(
                lambda: cluster.active() == "backup" and {v["term"] for v in cluster.views().values() if v} == {term},
                3.0,
                "backup active and no new elections after the heal",
            )
        finally:
            cluster.stop()


def test_a_deposed_active_delivers_no_stale_modbus_frame_after_the_heal(tmp_path):
    """Main polls a device every 50 ms and writes to it; its cable is pulled for 5 s, the backup takes over, the cable is
    put back and main fails back. The device (its own Modbus framing, not the driver's library) logs every request with
    its sender: nothing of main's arrives between the backup's first request and main's new activation, nothing ever on a
    connection main had opened before the cut, and the device ends with the last acknowledged write."""
    with NetnsHosts(NODE_NAMES) as net:
        device = RecorderProcess(net.bridge_address, log=tmp_path / "frames.jsonl").start()
        cluster = start(net, tmp_path, failback="auto")
        main, backup = (net.address[name] for name in ("main", "backup"))
        try:
            cluster.wait_active(20, "main")
            applied = apply_building(cluster, PLC.format(host=net.bridge_address, port=device.port), tmp_path)
            assert applied.returncode == 0, applied.stderr
            wait_for(lambda: (point_view(cluster, "backup", "plc.temp") or {}).get("quality") == "good", 10, "plc.temp read")
            write = lambda n: ("PUT", "/api/v1/points/plc.setpoint", {"value": n})  # noqa: E731
            with Updater(cluster, write, period=0.05, accepted=202) as writer:
                wait_for(lambda: writer.sent >= 10, 10, "writes acknowledged by main")
                net.cut("main")
                cut = time.time()
                old_connections = {frame["peer"] for frame in device.frames() if frame["peer"].startswith(main + ":")}
                wait_for(lambda: (cluster["backup"].view() or {}).get("role") == "active", 5, "backup to become active")
                holds_for(lambda: (cluster["backup"].view() or {}).get("role") == "active", 5 - (time.time() - cut), "backup active")
                net.heal("main")
                cluster.wait_active(15, "main")  # fail-back, once main has caught up for the hold-off
                wait_for(lambda: writer.acked[-1][1] > time.time() - 1 and writer.sent > 10, 5, "writes through main again")
            last = writer.acked[-1][0]
            wait_for(lambda: confirmed_write(cluster, "main", "plc.setpoint", last), 10, "the last acknowledged write read back")
            assert device.get("holding", 0) == [last]
            failback = activation_after(cluster, "main", cut)
        finally:
            cluster.stop()
            device.kill()
        frames = device.frames()
        first_backup = min(frame["t"] for frame in frames if frame["peer"].startswith(backup + ":") and frame["t"] > cut)
        stale = [f for f in frames if f["peer"].startswith(main + ":") and first_backup < f["t"] < failback]
        assert not stale, f"frames from the deposed main after the backup's first request at {first_backup}: {stale[:5]}"
        reused = [f for f in frames if f["peer"] in old_connections and f["t"] > cut]
        assert not reused, f"frames on main's connections from before the cut, delivered after it: {reused[:5]}"
        written = [f["values"][0] for f in frames if f["fc"] == WRITE_SINGLE and f["address"] == 0]
        assert written == sorted(written), f"an older write reached the device after a newer one: {written}"


def activation_after(cluster: LocalCluster, node: str, after: float) -> float:
    """When `node` proposed its first activation after the wall time `after` (from the replicated failover history)."""
    code, status = call_api(cluster.config, cluster[node].spec.api, "GET", "/api/v1/status")
    assert code == 200, status
    return min(a["since"] for a in status["activations"] if a["node"] == node and a["since"] > after)
