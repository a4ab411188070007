"""Alarms: CPU of the active evaluating 10,000 alarm definitions while 5,000 point updates/s flow (1% of them flapping),
the updates coming from real Modbus devices polled in-process (`--source modbus`, the default) or POSTed as JSON (`http`)."""

from __future__ import annotations

import asyncio
import math
import time

from harness import (
    apply_building,
    cpu_seconds,
    paced_updates,
    parser,
    point_names,
    report,
    running_cluster,
    summary,
    view,
)

from plugins.simulator.modbus import DeviceProcess
from plugins.simulator.process import free_ports
from webmanager.tools.launcher import LocalCluster, wait_for

POINTS = 5_000  # two alarms (high and low) each: 10,000 definitions
RATE, BATCH = 5_000.0, 50  # http: updates/s and updates per POST
PERIOD = 300  # http: batches per cycle of the sent value, 20.0 +- 2.0; each point sees it every 100 batches (1 s)
DEVICES, REGISTERS = 10, 500  # modbus: polled every second, every register changing every second
WAVE_SECONDS = 30  # modbus: the wave's period (steps of up to 0.4 per second)


def alarms(names: list[str]) -> list[dict]:
    """A high and a low alarm per point; the high limits of every 100th point lie inside the wave."""
    entries = []
    for i, name in enumerate(names):
        high = 21.0 if i % 100 == 0 else 30.0
        entries.append({"name": f"{name}.high", "point": name, "type": "high", "limit": high, "deadband": 0.2, "priority": 50})
        entries.append({"name": f"{name}.low", "point": name, "type": "low", "limit": 10.0, "deadband": 0.2, "delay": 5.0})
    return entries


def wave(k: float, period: float) -> float:
    return round(20.0 + 2.0 * math.sin(2 * math.pi * k / period), 2)


class HttpSource:
    """RATE updates/s POSTed to the active as JSON in batches of BATCH: the JSON parsing is part of the active's load."""

    def __init__(self) -> None:
        self.names = point_names(POINTS, "alarm.p")
        self.points = [{"name": name} for name in self.names]

    def flow(self, cluster: LocalCluster, seconds: float) -> None:
        asyncio.run(paced_updates(cluster, "main", RATE, BATCH, seconds, self.names, lambda k: wave(k, PERIOD)))


class ModbusSource:
    """DEVICES simulated Modbus devices of REGISTERS input registers each, polled every second by the active's driver;
    the benchmark moves every register every second, so the driver reports 5,000 changes/s in-process."""

    def __init__(self) -> None:
        self.ports = free_ports(DEVICES)
        self.devices = [DeviceProcess(port, REGISTERS).start() for port in self.ports]
        self.names = [f"dev{d}.r{r}" for d in range(DEVICES) for r in range(REGISTERS)]
        self.devices_doc = [
            {"name": f"dev{d}", "driver": "modbus", "host": "127.0.0.1", "port": port, "poll_interval": 1.0} for d, port in enumerate(self.ports)
        ]
        self.points = [
            {"name": f"dev{d}.r{r}", "device": f"dev{d}", "register": "input", "address": r, "type": "int16", "scale": 0.1}
            for d in range(DEVICES)
            for r in range(REGISTERS)
        ]

    def flow(self, cluster: LocalCluster, seconds: float) -> None:
        started = time.monotonic()
        k = 0
        while time.monotonic() - started < seconds:
            for device in self.devices:
                base = round(wave(k, WAVE_SECONDS) * 10) + k % 2  # k % 2: a change every second, also at the wave's crests
                device.set("input", 0, [base + r % 7 for r in range(REGISTERS)])
            k += 1
            time.sleep(max(0.0, started + k - time.monotonic()))  # the load generator's pacing

    def close(self) -> None:
        for device in self.devices:
            device.kill()


def measure(cluster: LocalCluster, source: HttpSource | ModbusSource, seconds: float) -> tuple[float, float, float]:
    """CPU share of one core used by the active, point updates/s and log entries/s it applied, while `seconds` of
    updates flow."""
    pid = cluster["main"].pid
    before = view(cluster, "main")
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    source.flow(cluster, seconds)
    elapsed, after = time.monotonic() - start, view(cluster, "main")
    rate = lambda key: (after[key] - before[key]) / elapsed  # noqa: E731
    return (cpu_seconds(pid) - start_cpu) / elapsed, rate("updates_applied"), rate("applied_index")


def main() -> int:
    arguments = parser(__doc__, runs=5)
    arguments.add_argument("--seconds", type=float, default=20.0, help="seconds of updates per sample (default 20)")
    arguments.add_argument("--source", choices=["modbus", "http"], default="modbus", help="where the updates come from")
    args = arguments.parse_args()
    source = ModbusSource() if args.source == "modbus" else HttpSource()
    bare, loaded, updates, entries = [], [], [], []
    try:
        with running_cluster(args.keep) as cluster:
            building = {"devices": getattr(source, "devices_doc", []), "points": source.points}
            apply_building(cluster, building)
            if isinstance(source, ModbusSource):
                wait_for(lambda: view(cluster, "backup")["points"] >= POINTS, 60, "every register's point in the backup's image")
            for _ in range(args.runs):
                bare.append(measure(cluster, source, args.seconds)[0])
            apply_building(cluster, {**building, "alarms": alarms(source.names)})
            wait_for(lambda: view(cluster, "main")["functions"]["alarms"]["running"], 30, "the alarms function with 10,000 alarms")
            for _ in range(args.runs):
                cpu, updated, rate = measure(cluster, source, args.seconds)
                loaded.append(cpu), updates.append(updated), entries.append(rate)
    finally:
        if isinstance(source, ModbusSource):
            source.close()
    ok = report(
        f"alarms ({2 * POINTS:,} definitions, 5,000 updates/s from {args.source})",
        [
            ("CPU of the active without alarms", summary(bare), "(reference)", lambda v: f"{v * 100:.1f}%", lambda s: None),
            ("CPU of the active with 10,000 alarms", summary(loaded), "< 30% of one core", lambda v: f"{v * 100:.1f}%",
             lambda s: s["median"] < 0.3),
            # the last second's changes are polled after the window: 19 of 20 land in a 20 s sample (4,750/s)
            ("point updates/s applied on the active", summary(updates, higher_is_better=True), "about 5,000/s", lambda v: f"{v:,.0f}/s",
             lambda s: s["median"] >= 0.9 * 5_000),
            ("log entries/s with alarms (batches, steps)", summary(entries, higher_is_better=True), "(reported)",
             lambda v: f"{v:,.0f}/s", lambda s: None),
        ],
        {"source": args.source, "samples": {"bare": bare, "loaded": loaded, "updates_per_s": updates, "entries_per_s": entries}},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
