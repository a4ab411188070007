"""Replication throughput and lag, catch-up of a wiped node and memory per node, on three real node processes."""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any

from harness import (
    BATCH,
    all_applied,
    load_points,
    millis,
    paced_updates,
    parser,
    per_second,
    point_names,
    report,
    rss_mb,
    running_cluster,
    seconds,
    summary,
    throughput_run,
    updates_body,
    view,
)

from webmanager.tools.launcher import LocalCluster, wait_for

POINTS = 100_000
THROUGHPUT_UPDATES = 200_000


def lag_run(args: Any, rate: float, batch: int, duration: float) -> dict[str, float]:
    """A fresh cluster fed `rate` updates/s; each node's p99 of (apply time - batch stamp)."""
    with running_cluster(args.keep) as cluster:
        sent = asyncio.run(paced_updates(cluster, "main", rate, batch, duration, point_names(1000)))
        if sent["failed"]:
            raise RuntimeError(f"{sent['failed']} batches failed")
        commit = view(cluster, "main")["commit_index"]
        wait_for(lambda: all_applied(cluster, commit), 30, "all nodes to apply")
        return {name: view(cluster, name)["apply_lag"]["p99"] for name in cluster.nodes}


def catch_up_run(cluster: LocalCluster) -> tuple[float, float]:
    """Kill backup, delete its data dir, start it: (seconds until it applied everything, its RSS in MB)."""
    cluster["backup"].kill()
    shutil.rmtree(cluster.config.node("backup").data_dir)
    commit = view(cluster, "main")["commit_index"]
    started = time.monotonic()
    cluster["backup"].start()

    def caught_up() -> bool:
        answer = cluster["backup"].view(timeout=0.5)
        return bool(answer and answer["applied_index"] >= commit and answer["points"] >= POINTS)

    wait_for(caught_up, 30, "the wiped backup to catch up", interval=0.01)
    return time.monotonic() - started, rss_mb(cluster["backup"].pid)


def main() -> int:
    arguments = parser(__doc__)
    arguments.add_argument("--lag-seconds", type=float, default=10.0, help="length of each lag run (default 10)")
    args = arguments.parse_args()
    names = point_names(POINTS)
    bodies = [updates_body(names[i % POINTS : i % POINTS + BATCH], float(i)) for i in range(0, THROUGHPUT_UPDATES, BATCH)]
    rates, catch_ups, rss = [], [], []
    with running_cluster(args.keep) as cluster:
        for _ in range(args.runs):
            rates.append(throughput_run(cluster, bodies))
    lags = {name: [] for name in ("main", "backup", "witness")}
    for _ in range(args.runs):
        for name, p99 in lag_run(args, 5000, 50, args.lag_seconds).items():
            lags[name].append(p99)
    with running_cluster(args.keep, cluster={"snapshot_entries": 100}) as cluster:
        load_points(cluster, POINTS, batch=500)  # 200 entries: the log is compacted, so catch-up installs a snapshot
        wait_for(lambda: all_applied(cluster, view(cluster, "main")["commit_index"]), 30, "all nodes to apply")
        loaded_rss = {name: rss_mb(node.pid) for name, node in cluster.nodes.items()}
        for _ in range(args.runs):
            seconds_taken, backup_rss = catch_up_run(cluster)
            catch_ups.append(seconds_taken)
            rss.append(backup_rss)
        rss += [rss_mb(cluster["main"].pid)]
    ok = report(
        "replication",
        [
            (
                "updates/s applied on all 3 (batches of 5,000)",
                summary(rates, higher_is_better=True),
                ">= 100,000/s",
                per_second,
                lambda s: s["median"] >= 100_000,
            ),
            *[
                (f"apply lag p99 at 5,000/s on {name}", summary(values), "<= 50 ms", millis, lambda s: s["median"] <= 0.05)
                for name, values in lags.items()
            ],
            (f"wiped backup start -> caught up ({POINTS:,} points)", summary(catch_ups), "<= 2 s", seconds, lambda s: s["median"] <= 2.0),
            ("RSS of a server node with 100k points", summary(rss), "<= 300 MB", lambda v: f"{v:.0f} MB", lambda s: s["worst"] <= 300),
        ],
        {"rss_after_load_mb": loaded_rss, "samples": {"rates": rates, "lag_p99": lags, "catch_up": catch_ups, "rss": rss}},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
