"""Field I/O: CPU of the active polling Modbus devices, device change -> standby image latency (Modbus poll, BACnet COV), failover gap."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness import cpu_shares, millis, parser, report, running_cluster, seconds, summary, view

from plugins.simulator import bacnet
from plugins.simulator.modbus import DeviceProcess
from plugins.simulator.process import free_ports
from webmanager.tools.cli import call_api
from webmanager.tools.launcher import LocalCluster, wait_for

DEVICES = 10
REGISTERS = 500
CPU_SECONDS = 20.0


def building(ports: list[int], rooms: str) -> str:
    """The Modbus devices polled every second, and one BACnet point that only COV updates (its poll is 60 s)."""
    lines = ["[[devices]]", 'name = "rooms"', 'driver = "bacnet"', f'address = "{rooms}"', "poll_interval = 60.0"]
    lines += ["[[points]]", 'name = "rooms.t"', 'device = "rooms"', 'object = "analog-value,2"', "cov = true"]
    for d, port in enumerate(ports):
        lines += ["[[devices]]", f'name = "dev{d}"', 'driver = "modbus"', 'host = "127.0.0.1"', f"port = {port}", "poll_interval = 1.0"]
        for r in range(REGISTERS):
            lines += ["[[points]]", f'name = "dev{d}.r{r}"', f'device = "dev{d}"', 'register = "input"', f"address = {r}"]
    return "\n".join(lines) + "\n"


def apply(cluster: LocalCluster, text: str, directory: Path, timeout: float = 120) -> None:
    path = directory / "building.toml"
    path.write_text(text)
    command = [sys.executable, "-m", "webmanager.tools.main", "config", "apply", str(path), "--config", str(cluster.config.path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)


def point_value(cluster: LocalCluster, node: str, name: str) -> object:
    code, answer = call_api(cluster.config, cluster[node].spec.api, "GET", f"/api/v1/points/{name}")
    return answer["value"] if code == 200 else None


def seen_on_backup(cluster: LocalCluster, point: str, value: object, change: Callable[[], None]) -> float:
    """Seconds from changing a value on the device to that value in the backup's image."""
    started = time.time()
    change()
    wait_for(lambda: point_value(cluster, "backup", point) == value, 10, f"{point} = {value} on the backup", interval=0.005)
    return time.time() - started


def failover_gap(cluster: LocalCluster, device: DeviceProcess) -> tuple[float, float]:
    """SIGKILL the active (main): (the device's last request before the kill to its first after it, kill to that first request)."""
    cluster.wait_active(20, "main")
    wait_for(lambda: device.stats()["requests"], 10, "the device to be polled")
    moment = time.monotonic() + random.uniform(0.0, 1.0)  # kill at a random phase of the 1 s poll cycle
    wait_for(lambda: time.monotonic() >= moment, 2, "the kill moment", interval=0.001)
    killed = time.monotonic()
    cluster["main"].kill()
    after = wait_for(lambda: [r[3] for r in device.stats()["requests"] if r[3] > killed], 10, "the new active to poll the device")
    before = max(r[3] for r in device.stats()["requests"] if r[3] <= killed)
    cluster["main"].start()
    cluster.wait_active(30, "main")  # auto fail-back, ready for the next run
    return min(after) - before, min(after) - killed


def p99(samples: list[float]) -> float:
    return sorted(samples)[int(0.99 * (len(samples) - 1))]


def main() -> int:
    args = parser(__doc__).parse_args()
    random.seed(1)
    ports = free_ports(DEVICES)
    devices = [DeviceProcess(port, REGISTERS).start() for port in ports]
    room = bacnet.DeviceProcess().start()
    try:
        with running_cluster(args.keep) as cluster:
            apply(cluster, building(ports, room.address), cluster.config.path.parent)
            wait_for(lambda: view(cluster, "backup")["points"] >= DEVICES * REGISTERS + 1, 60, "every point in the backup's image")
            cpu = cpu_shares(cluster["main"].pid, args.runs, CPU_SECONDS / args.runs)
            samples = range(max(args.runs, 50))
            latency = [
                seen_on_backup(cluster, f"dev0.r{run}", 1000 + run, lambda run=run: devices[0].set("input", run, [1000 + run]))
                for run in samples
            ]
            cov = [
                seen_on_backup(cluster, "rooms.t", 30.0 + run, lambda run=run: room.set("analog-value,2", 30.0 + run)) for run in samples
            ]
            gaps, resumed = zip(*(failover_gap(cluster, devices[0]) for _ in range(args.runs)), strict=True)
    finally:
        for device in [*devices, room]:
            device.kill()
    ok = report(
        "field I/O",
        [
            (f"CPU of the active polling {DEVICES}x{REGISTERS} registers at 1 s", summary(cpu), "< 30% of one core",
             lambda v: f"{v * 100:.1f}%", lambda s: s["median"] < 0.3),
            ("device change -> backup image (poll 1 s)", summary(latency), "p99 <= 1.1 s", millis,
             lambda s: p99(latency) <= 1.1),
            ("BACnet COV change -> backup image", summary(cov), "p99 <= 150 ms", millis, lambda s: p99(cov) <= 0.15),
            ("device-side failover gap after SIGKILL", summary(list(gaps)), "median <= 1.0 s", seconds, lambda s: s["median"] <= 1.0),
            ("SIGKILL -> first poll by the new active", summary(list(resumed)), "(reported)", seconds, lambda s: None),
        ],
        {"latency_p99": p99(latency), "cov_p99": p99(cov),
         "samples": {"cpu": cpu, "latency": latency, "cov": cov, "gaps": gaps, "resumed": resumed}},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
