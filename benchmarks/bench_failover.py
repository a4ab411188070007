"""Failover (SIGKILL, SIGSTOP), fail-back with 100k points and planned transfer gap, on three real node processes."""

from __future__ import annotations

import signal
import time
from typing import Any

from harness import (
    first_act,
    load_points,
    millis,
    parser,
    report,
    running_cluster,
    seconds,
    summary,
    view,
)

from cluster.guard import read_acts
from webmanager.tools.cli import call_api
from webmanager.tools.launcher import LocalCluster, wait_for

POINTS = 100_000


def steady(cluster: LocalCluster) -> int:
    """Main active and backup caught up, the starting point of every run; returns the term."""
    cluster.wait_active(20, "main")
    wait_for(lambda: cluster.caught_up("backup", "main"), 30, "backup to catch up with main")
    return view(cluster, "main")["term"]


def fail_back(cluster: LocalCluster, term: int) -> float:
    """Start the (stopped) main process; seconds until main acts in a term after `term`."""
    started = time.time()
    cluster["main"].start()
    _, first = first_act(cluster, "main", term, timeout=30)
    return first - started


def kill_run(cluster: LocalCluster) -> tuple[float, float]:
    term = steady(cluster)
    killed = time.time()
    cluster["main"].kill()
    term, first = first_act(cluster, "backup", term)
    return first - killed, fail_back(cluster, term)


def pause_run(cluster: LocalCluster, pause: float) -> tuple[float, float]:
    """SIGSTOP main until backup acts (+ `pause`), SIGCONT; returns (failover s, overlap s: <0 means none)."""
    term = steady(cluster)
    stopped = time.time()
    cluster["main"].signal(signal.SIGSTOP)
    term, first = first_act(cluster, "backup", term)
    wait_for(lambda: time.time() > stopped + pause, pause + 1, "the pause to last")
    cluster["main"].signal(signal.SIGCONT)
    wait_for(lambda: (cluster["main"].view() or {}).get("term", 0) >= term, 10, "main to learn the new term")
    acts = read_acts(cluster.config.node("main").data_dir / "acts.log")
    old_last = max(act["wall"] for act in acts if act["term"] < term)
    return first - stopped, old_last - first


def transfer_run(cluster: LocalCluster, source: str, target: str) -> float:
    wait_for(lambda: cluster.caught_up(target, source), 30, f"{target} to catch up with {source}")
    term = view(cluster, source)["term"]
    code, answer = call_api(cluster.config, cluster[source].spec.api, "POST", "/api/v1/cluster/transfer", {"to": target}, timeout=10)
    if code != 200:
        raise RuntimeError(f"transfer {source} -> {target} failed: {code} {answer}")
    acting_term, first = first_act(cluster, target, term)
    if acting_term != answer["term"]:
        raise RuntimeError(f"{target} acts in term {acting_term}, transfer reported {answer['term']}")
    return first - answer["last_act"]


def main() -> int:
    arguments = parser(__doc__)
    arguments.add_argument("--pause", type=float, default=1.5, help="seconds main stays SIGSTOPped (default 1.5)")
    args = arguments.parse_args()
    runs: dict[str, list[float]] = {"kill": [], "failback": [], "pause": [], "overlap": [], "transfer": []}
    with running_cluster(args.keep) as cluster:
        load_points(cluster, POINTS)
        for _ in range(args.runs):
            failover, back = kill_run(cluster)
            runs["kill"].append(failover)
            runs["failback"].append(back)
        for _ in range(args.runs):
            failover, overlap = pause_run(cluster, args.pause)
            runs["pause"].append(failover)
            runs["overlap"].append(overlap)
            steady(cluster)  # auto fail-back after the pause
        for _ in range(args.runs):
            runs["transfer"].append(transfer_run(cluster, "main", "backup"))
            runs["transfer"].append(transfer_run(cluster, "backup", "main"))
        points = view(cluster, "main")["points"]
    kill, pause = summary(runs["kill"]), summary(runs["pause"])
    overlap = summary(runs["overlap"])

    def failover_met(stats: dict[str, Any]) -> bool:
        return stats["median"] <= 0.8 and stats["worst"] <= 1.5

    ok = report(
        "failover",
        [
            ("SIGKILL active -> backup acts", kill, "median <= 0.8 s, max <= 1.5 s", seconds, failover_met),
            ("SIGSTOP active -> backup acts", pause, "median <= 0.8 s, max <= 1.5 s", seconds, failover_met),
            ("old active's last act - new first act", overlap, "< 0 (no overlap)", millis, lambda s: s["worst"] < 0),
            ("planned transfer gap", summary(runs["transfer"]), "median <= 300 ms", millis, lambda s: s["median"] <= 0.3),
            (
                f"fail-back: main start -> active ({points:,} points)",
                summary(runs["failback"]),
                "median <= 3 s",
                seconds,
                lambda s: s["median"] <= 3.0,
            ),
        ],
        {"points": points, "samples": runs},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
