"""Alarms: CPU of the active evaluating 10,000 alarm definitions while 5,000 point updates/s flow (1% of them flapping)."""

from __future__ import annotations

import asyncio
import json
import math
import time

from harness import Poster, cpu_seconds, paced_updates, parser, point_names, report, running_cluster, summary, view

from cluster.processes import LocalCluster, wait_for

POINTS = 5_000  # two alarms (high and low) each: 10,000 definitions
RATE, BATCH = 5_000.0, 50
PERIOD = 300  # batches per cycle of the sent value: 20.0 +- 2.0; each point sees it every 100 batches (1 s)


def building(names: list[str]) -> dict:
    """Virtual points with a high and a low alarm each; the high limits of every 100th point lie inside the wave."""
    alarms = []
    for i, name in enumerate(names):
        high = 21.0 if i % 100 == 0 else 30.0
        alarms.append({"name": f"{name}.high", "point": name, "type": "high", "limit": high, "deadband": 0.2, "priority": 50})
        alarms.append({"name": f"{name}.low", "point": name, "type": "low", "limit": 10.0, "deadband": 0.2, "delay": 5.0})
    return {"points": [{"name": name} for name in names], "alarms": alarms}


def wave(k: int) -> float:
    return round(20.0 + 2.0 * math.sin(2 * math.pi * k / PERIOD), 2)


def measure(cluster: LocalCluster, names: list[str], seconds: float) -> tuple[float, dict]:
    """CPU share of one core used by the active while `seconds` of updates flow."""
    pid = cluster["main"].pid
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    sent = asyncio.run(paced_updates(cluster, "main", RATE, BATCH, seconds, names, wave))
    return (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start), sent


def apply(cluster: LocalCluster, building: dict) -> None:
    poster = Poster(cluster, "main")
    try:
        status, answer = poster.post("/api/v1/config", json.dumps(building).encode())
    finally:
        poster.close()
    if status != 200:
        raise RuntimeError(f"the building was refused: {answer}")


def main() -> int:
    arguments = parser(__doc__, runs=5)
    arguments.add_argument("--seconds", type=float, default=20.0, help="seconds of updates per sample (default 20)")
    args = arguments.parse_args()
    names = point_names(POINTS, "alarm.p")
    bare, loaded, entries = [], [], []
    with running_cluster(args.keep) as cluster:
        apply(cluster, {"points": [{"name": n} for n in names]})
        for _ in range(args.runs):
            bare.append(measure(cluster, names, args.seconds)[0])
        apply(cluster, building(names))
        wait_for(lambda: view(cluster, "main")["functions"]["alarms"]["running"], 30, "the alarms function with 10,000 alarms")
        for _ in range(args.runs):
            before = view(cluster, "main")
            cpu, _ = measure(cluster, names, args.seconds)
            loaded.append(cpu)
            after = view(cluster, "main")
            entries.append((after["applied_index"] - before["applied_index"]) / args.seconds)
    ok = report(
        f"alarms ({2 * POINTS:,} definitions, {RATE:,.0f} updates/s)",
        [
            ("CPU of the active without alarms", summary(bare), "(reference)", lambda v: f"{v * 100:.1f}%", lambda s: None),
            ("CPU of the active with 10,000 alarms", summary(loaded), "< 30% of one core", lambda v: f"{v * 100:.1f}%",
             lambda s: s["median"] < 0.3),
            ("log entries/s with alarms (batches, steps)", summary(entries, higher_is_better=True), "(reported)",
             lambda v: f"{v:,.0f}/s", lambda s: None),
        ],
        {"samples": {"bare": bare, "loaded": loaded, "entries_per_s": entries}},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
