"""Buildings of 50k, 100k and 250k Modbus points (1,000 per device, polled every 5 s; bench_building's building and
device) on three real node processes: apply time, elections during the apply, the largest log entry and the longest apply
step, RSS, polling CPU, catch-up of a wiped node and fail-back."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_building import WANDER, all_good, building
from harness import (
    cpu_shares,
    first_act,
    parser,
    report,
    rss_mb,
    running_cluster,
    seconds,
    summary,
    view,
)

from plugins.simulator.modbus_recorder import RecorderProcess
from webmanager.tools.launcher import LocalCluster, wait_for

REGISTERS = 1_000
POLL = 5.0
CPU_WINDOW = 10.0


def terms(cluster: LocalCluster) -> dict[str, int]:
    return {name: view(cluster, name)["term"] for name in cluster.nodes}


def catch_up(cluster: LocalCluster, points: int) -> float:
    """Kill the backup, delete its data, start it: seconds until it applied everything main had committed."""
    cluster["backup"].kill()
    shutil.rmtree(cluster.config.node("backup").data_dir)
    commit = view(cluster, "main")["commit_index"]
    started = time.monotonic()
    cluster["backup"].start()
    wait_for(lambda: (lambda v: v and v["applied_index"] >= commit and v["points"] >= points)(cluster["backup"].view(timeout=0.5)), 60,
             "the wiped backup to catch up", interval=0.01)
    return time.monotonic() - started


def fail_back(cluster: LocalCluster) -> tuple[float, float]:
    """SIGKILL main, wait for the backup to act, start main: (main start -> main acts, main caught up -> main acts)."""
    cluster.wait_active(30, "main")
    wait_for(lambda: cluster.caught_up("backup", "main"), 60, "the backup to catch up")
    term = view(cluster, "main")["term"]
    cluster["main"].kill()
    term, _ = first_act(cluster, "backup", term, timeout=30)
    started = time.time()
    cluster["main"].start()
    caught: list[float] = []

    def main_acts() -> tuple[int, float] | None:
        if not caught and cluster.caught_up("main", "backup"):
            caught.append(time.time())
        acts = (cluster["main"].view(timeout=0.5) or {}).get("acts") or {}
        return (acts["term"], acts["first"]) if (acts.get("term") or 0) > term and acts.get("first") else None

    _, first = wait_for(main_acts, 60, "main to act again", interval=0.01)
    return first - started, first - caught[0]


def run(points: int, keep: Path | None) -> dict[str, Any]:
    devices = points // REGISTERS
    device = RecorderProcess(units=devices, wander=WANDER).start()
    try:
        with running_cluster(keep / str(points) if keep else None, failback="auto") as cluster:
            directory = cluster.config.path.parent
            wait_for(lambda: all(cluster[name].view() for name in cluster.nodes), 30, "every node's API to answer")
            (directory / "building.toml").write_text(building(device.port, devices, REGISTERS, POLL))
            before, lease_lapses = terms(cluster), cluster.log("main").count("is standby")
            started = time.monotonic()
            command = [sys.executable, "-m", "webmanager.tools.main", "config", "apply", str(directory / "building.toml"), "--config", str(cluster.config.path)]
            applied = subprocess.run(command, capture_output=True, text=True, timeout=900)
            apply_time = time.monotonic() - started
            if applied.returncode != 0:
                raise RuntimeError(applied.stderr)
            elections = sum(terms(cluster).values()) - sum(before.values())
            lapses = cluster.log("main").count("is standby") - lease_lapses
            started = time.monotonic()
            wait_for(lambda: all_good(cluster, devices, REGISTERS), 120, "every point to read good", interval=0.5)
            first_poll = time.monotonic() - started
            views = {name: view(cluster, name) for name in cluster.nodes}
            rss = {name: rss_mb(cluster[name].pid) for name in cluster.nodes}
            cpu = cpu_shares(cluster["main"].pid, 3, CPU_WINDOW)
            caught_up = catch_up(cluster, points)
            back, after_caught_up = fail_back(cluster)
            holdoff = cluster.config.cluster.failback_holdoff
    finally:
        device.kill()
    return {
        "points": points, "apply": apply_time, "elections": elections, "lease_lapses": lapses, "first_poll": first_poll,
        "largest_entry": max(v["largest_entry"] for v in views.values()), "longest_apply": max(v["longest_apply"] for v in views.values()),
        "rss": rss, "cpu": cpu, "catch_up": caught_up, "failback": back, "failback_after_caught_up": after_caught_up, "holdoff": holdoff,
    }


def main() -> int:
    arguments = parser(__doc__, runs=1)
    arguments.add_argument("--points", default="50000,100000,250000", help="comma-separated building sizes (default 50000,100000,250000)")
    args = arguments.parse_args()
    results = [run(int(size), args.keep) for size in args.points.split(",")]
    one = lambda value: {"runs": 1, "median": value, "worst": value, "best": value}  # noqa: E731
    rows = []
    for r in results:
        n = f"{r['points'] // 1000}k"
        rows += [
            (f"{n}: tandem config apply (TOML read included)", one(r["apply"]), "-", seconds, lambda s: None),
            (f"{n}: elections / lease lapses during the apply", one(r["elections"] + r["lease_lapses"]), "0", lambda v: f"{v:.0f}", lambda s: s["worst"] == 0),
            (f"{n}: largest log entry", one(r["largest_entry"]), "<= 1 MiB", lambda v: f"{v / 1024:.0f} KiB", lambda s: s["worst"] <= 2**20),
            (f"{n}: longest apply of one entry (Raft thread)", one(r["longest_apply"]), "<= 100 ms", seconds, lambda s: s["worst"] <= 0.1),
            (f"{n}: RSS of the largest node", one(max(r["rss"].values())), "-", lambda v: f"{v:.0f} MB", lambda s: None),
            (f"{n}: CPU of the active polling every point at {POLL:.0f} s", summary(r["cpu"]), "< 50% of one core", lambda v: f"{v * 100:.1f}%",
             lambda s: s["median"] < 0.5),
            (f"{n}: wiped node: start -> caught up", one(r["catch_up"]), "<= 2 s", seconds, lambda s: s["worst"] <= 2.0),
            (f"{n}: fail-back: main caught up -> acts", one(r["failback_after_caught_up"]), f"<= hold-off {r['holdoff']:.0f} s + 0.5 s",
             seconds, lambda s, h=r["holdoff"]: s["worst"] <= h + 0.5),
            (f"{n}: fail-back: main start -> acts", one(r["failback"]), "-", seconds, lambda s: None),
        ]
    ok = report("building scale", rows, {"runs": results})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
