"""Building scale: CPU of the active polling many Modbus devices, the units of one recording device whose registers wander."""

from __future__ import annotations

import math
import time

from bench_field import apply
from harness import cpu_shares, parser, report, running_cluster, summary, view

from plugins.simulator.modbus_recorder import RecorderProcess
from webmanager.tools.cli import call_api
from webmanager.tools.launcher import LocalCluster, wait_for

WANDER = 0.01  # share of each unit's registers 0..999 that the device changes by one step every second
DEADBAND = 1.5  # on the points at odd addresses: a one-step change is not reported, two steps are


def building(port: int, devices: int, registers: int, poll_interval: float) -> str:
    """Devices dev0.. as units 1.. of the device at `port`, each with input registers 0..registers-1 as points devD.rR."""
    lines = []
    for d in range(devices):
        lines += ["[[devices]]", f'name = "dev{d}"', 'driver = "modbus"', 'host = "127.0.0.1"', f"port = {port}", f"unit = {d + 1}"]
        lines += [f"poll_interval = {poll_interval}"]
        for r in range(registers):
            lines += ["[[points]]", f'name = "dev{d}.r{r}"', f'device = "dev{d}"', 'register = "input"', f"address = {r}"]
            lines += [f"deadband = {DEADBAND}"] if r % 2 else []
    return "\n".join(lines) + "\n"


def all_good(cluster: LocalCluster, devices: int, registers: int) -> bool:
    """Every point of every device reads good in the backup's image (asking the active would add to what is measured)."""
    code, answer = call_api(cluster.config, cluster["backup"].spec.api, "GET", "/api/v1/devices")
    return code == 200 and len(answer["devices"]) == devices and all(d["qualities"] == {"good": registers} for d in answer["devices"])


def main() -> int:
    arguments = parser(__doc__)
    arguments.add_argument("--devices", type=int, default=20, help="devices, units 1..N of one recording device (default 20)")
    arguments.add_argument("--registers", type=int, default=1000, help="input registers (points) per device (default 1000; 0..999 move)")
    arguments.add_argument("--poll-interval", type=float, default=0.4, help="seconds (default 0.4)")
    arguments.add_argument("--window", type=float, help="seconds per CPU sample (default: whole poll intervals, at least 4 s)")
    args = arguments.parse_args()
    points, poll = args.devices * args.registers, args.poll_interval
    window = args.window or poll * math.ceil(4.0 / poll)
    device = RecorderProcess(units=args.devices, wander=WANDER).start()
    cpu, updates = [], []
    try:
        with running_cluster(args.keep) as cluster:
            started = time.monotonic()
            apply(cluster, building(device.port, args.devices, args.registers, poll), cluster.config.path.parent, 120 + points / 500)
            wait_for(lambda: all_good(cluster, args.devices, args.registers), 60 + points / 1000, "every point good", interval=1.0)
            ready, settled = time.monotonic() - started, time.monotonic() + poll
            wait_for(lambda: time.monotonic() >= settled, poll + 1, "one more poll cycle", interval=0.05)
            for _ in range(args.runs):
                before, start = view(cluster, "main")["updates_applied"], time.monotonic()
                cpu += cpu_shares(cluster["main"].pid, 1, window)
                updates.append((view(cluster, "main")["updates_applied"] - before) / (time.monotonic() - start))
    finally:
        device.kill()
    reads = args.devices * math.ceil(args.registers / 125) / poll
    ok = report(
        f"building scale: {args.devices} devices x {args.registers} registers at {poll:g} s ({points / poll:,.0f} readings/s, "
        f"{reads:,.0f} reads/s)",
        [
            (f"CPU of the active polling {points:,} points", summary(cpu), "< 50% of one core", lambda v: f"{v * 100:.1f}%",
             lambda s: s["median"] < 0.5),
            ("point updates/s committed (changes beyond the deadband)", summary(updates, higher_is_better=True), "(reported)",
             lambda v: f"{v:,.0f}/s", lambda s: None),
            ("apply -> every point good", summary([ready]), "(reported)", lambda v: f"{v:.1f} s", lambda s: None),
        ],
        {"devices": args.devices, "registers": args.registers, "poll_interval": poll, "window": window,
         "samples": {"cpu": cpu, "updates_per_s": updates}},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
