"""Network partitions in network namespaces (cable pulls and black-holed links): the old active stops before the new one
starts, no frame it queued reaches a device after the new active's first request, heals cause no flapping, and a standby
that was cut off is current again within 2 s of the heal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from conftest import Updater, apply_building, confirmed_write, point_view
from netns import NetnsHosts

from cluster.guard import read_acts
from plugins.simulator.modbus_recorder import RecorderProcess
from webmanager.tools.cli import call_api
from webmanager.tools.launcher import NODE_NAMES, LocalCluster, holds_for, wait_for, write_config

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
    with NetnsHosts(NODE_NAMES) as net, plc_under_control(net, tmp_path) as (cluster, device):
        outcome = cut_the_active(net, cluster, device)
    assert not outcome.stale, f"frames from the deposed main after the backup's first request: {outcome.stale[:5]}"
    assert not outcome.reused, f"frames on main's connections from before the cut, delivered after it: {outcome.reused[:5]}"
    assert outcome.written == sorted(outcome.written), f"an older write reached the device after a newer one: {outcome.written}"


@contextmanager
def plc_under_control(net: NetnsHosts, directory: Path) -> Iterator[tuple[LocalCluster, RecorderProcess]]:
    """A recording device on the bridge, polled every 50 ms by main (failback auto) from its own namespace."""
    directory.mkdir(parents=True, exist_ok=True)
    device = RecorderProcess(net.bridge_address, log=directory / "frames.jsonl").start()
    cluster = start(net, directory, failback="auto")
    try:
        cluster.wait_active(20, "main")
        applied = apply_building(cluster, PLC.format(host=net.bridge_address, port=device.port), directory)
        assert applied.returncode == 0, applied.stderr
        wait_for(lambda: (point_view(cluster, "backup", "plc.temp") or {}).get("quality") == "good", 10, "plc.temp read")
        yield cluster, device
    finally:
        cluster.stop()
        device.kill()


class Cut(NamedTuple):
    """What the device saw of one cut of the active: `stale` requests from it after the new active's first one and
    before its own return, `reused` ones on its connections from before the cut, the values `written`, in order."""

    stale: list[dict]
    reused: list[dict]
    written: list[int]
    takeover: float  # seconds from the cut to the backup's first request


def cut_the_active(net: NetnsHosts, cluster: LocalCluster, device: RecorderProcess, seconds: float = 5.0) -> Cut:
    """With a writer at 20 writes/s, pull main's cable for `seconds`, put it back, wait for the fail-back and for the last
    acknowledged write to be read back from the device."""
    main, backup = net.address["main"] + ":", net.address["backup"] + ":"
    write = lambda n: ("PUT", "/api/v1/points/plc.setpoint", {"value": n})  # noqa: E731
    with Updater(cluster, write, period=0.05, accepted=202) as writer:
        wait_for(lambda: writer.sent >= 10, 10, "writes acknowledged by main")
        net.cut("main")
        cut = time.time()
        old_connections = {frame["peer"] for frame in device.frames() if frame["peer"].startswith(main)}
        wait_for(lambda: (cluster["backup"].view() or {}).get("role") == "active", 5, "backup to become active")
        holds_for(lambda: (cluster["backup"].view() or {}).get("role") == "active", seconds - (time.time() - cut), "backup active")
        net.heal("main")
        cluster.wait_active(15, "main")  # fail-back, once main has caught up for the hold-off
        wait_for(lambda: writer.acked[-1][1] > time.time() - 1, 5, "writes through main again")
    last = writer.acked[-1][0]
    wait_for(lambda: confirmed_write(cluster, "main", "plc.setpoint", last), 10, "the last acknowledged write read back")
    assert device.get("holding", 0) == [last], "the device does not hold the last acknowledged write"
    failback = activation_after(cluster, "main", cut)
    frames = [frame for frame in device.frames() if frame["t"] > cut]
    first_backup = min(frame["t"] for frame in frames if frame["peer"].startswith(backup))
    return Cut(
        stale=[f for f in frames if f["peer"].startswith(main) and first_backup < f["t"] < failback],
        reused=[f for f in frames if f["peer"] in old_connections],
        written=[f["values"][0] for f in device.frames() if f["fc"] == WRITE_SINGLE and f["address"] == 0],
        takeover=first_backup - cut,
    )


def activation_after(cluster: LocalCluster, node: str, after: float) -> float:
    """When `node` proposed its first activation after the wall time `after` (from the replicated failover history)."""
    code, status = call_api(cluster.config, cluster[node].spec.api, "GET", "/api/v1/status")
    assert code == 200, status
    return min(a["since"] for a in status["activations"] if a["node"] == node and a["since"] > after)


def test_a_standby_cut_off_from_the_active_is_current_within_2_s_of_every_heal(tmp_path):
    """Only the link between main and backup is black-holed (the witness sees both, so main stays active), ten times for
    10 s each, while a writer commits 20 writes/s: after every heal the backup holds every acknowledged write within 2 s."""
    with NetnsHosts(NODE_NAMES) as net:
        cluster = start(net, tmp_path, failback="manual")
        try:
            cluster.make_active("main")
            with Updater(cluster, count_to, period=0.05) as writer:
                wait_for(lambda: writer.sent >= 10, 10, "writes acknowledged")
                for round in range(10):
                    took = cut_the_standby(net, cluster, writer)
                    assert took <= 2.0, f"heal {round + 1}: the backup held every acknowledged write only after {took:.2f} s"
        finally:
            cluster.stop()


def count_to(n: int) -> tuple[str, str, dict]:
    """An operator write of n to a virtual point (applied at once)."""
    return "PUT", "/api/v1/points/test.counter", {"value": n}


def cut_the_standby(net: NetnsHosts, cluster: LocalCluster, writer: Updater, seconds: float = 10.0) -> float:
    """Black-hole the link between main and backup for `seconds` while `writer` (count_to) runs; main must stay active.
    Returns the seconds from the heal until the backup holds every write acknowledged before it."""
    net.block("main", "backup")
    holds_for(lambda: cluster.active() == "main", seconds, "main active while the backup is cut off")
    net.unblock("main", "backup")
    healed, last = time.monotonic(), writer.acked[-1][0]
    counter = lambda: (point_view(cluster, "backup", "test.counter") or {}).get("value") or 0  # noqa: E731
    wait_for(lambda: counter() >= last, 10, "the backup to catch up after the heal")
    return time.monotonic() - healed
