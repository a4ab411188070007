"""Stability: no elections and no role change while 5,000 updates/s flow for 10 minutes with both cores kept busy."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

from harness import paced_updates, parser, point_names, report, running_cluster, seconds, view

from webmanager.tools.launcher import LocalCluster

BUSY_LOOP = "while True: pass"


def watch_roles(cluster: LocalCluster, stop: threading.Event, seen: list[tuple[float, str | None]]) -> None:
    """Record every change of which node is active (polled every 0.2 s)."""
    last: str | None = "main"
    while not stop.wait(0.2):
        try:
            active = cluster.active()
        except AssertionError as exc:  # two actives: the worst possible outcome, keep it
            active = f"TWO ACTIVES: {exc}"
        if active != last:
            seen.append((time.time(), active))
            last = active


def main() -> int:
    arguments = parser(__doc__, runs=1)
    arguments.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    arguments.add_argument("--rate", type=float, default=5000.0, help="point updates per second (default 5000)")
    args = arguments.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(os.cpu_count() or 2)]
    terms, changes, lags, sends = [], [], [], []
    try:
        for _ in range(args.runs):
            with running_cluster(args.keep) as cluster:
                start_term = view(cluster, "main")["term"]
                stop = threading.Event()
                seen: list[tuple[float, str | None]] = []
                watcher = threading.Thread(target=watch_roles, args=(cluster, stop, seen))
                watcher.start()
                try:
                    sent = asyncio.run(paced_updates(cluster, "main", args.rate, 50, args.duration, point_names(5000)))
                finally:
                    stop.set()
                    watcher.join()
                views = cluster.views()
                terms.append(max(v["term"] for v in views.values() if v) - start_term)
                changes.append(len(seen))
                lags.append({name: v["apply_lag"] for name, v in views.items() if v})
                sends.append(sent)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()

    def count(values: list[int]) -> dict:
        return {"runs": len(values), "median": sorted(values)[len(values) // 2], "worst": max(values), "best": min(values)}

    p99 = [lag["backup"]["p99"] for lag in lags]
    ok = report(
        f"stability ({args.duration:.0f} s at {args.rate:,.0f} updates/s, {len(hogs)} busy loops)",
        [
            ("elections (term increase)", count(terms), "0", str, lambda s: s["worst"] == 0),
            ("changes of the active node", count(changes), "0", str, lambda s: s["worst"] == 0),
            ("backup apply lag p99 (last 10k batches)", count(p99), "(reported)", seconds, lambda s: None),
        ],
        {"apply_lag": lags, "sender": sends, "term_increase": terms},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
