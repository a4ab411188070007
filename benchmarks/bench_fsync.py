"""What fsync costs: operator write latency and batched throughput with `fsync = true` against `fsync = false`."""

from __future__ import annotations

import json
import statistics
import time

from harness import (
    BATCH,
    Poster,
    millis,
    parser,
    per_second,
    point_names,
    report,
    running_cluster,
    summary,
    throughput_run,
    updates_body,
)

from webmanager.tools.launcher import LocalCluster

WRITES = 100  # sequential operator writes per run
UPDATES = 100_000


def write_latency(cluster: LocalCluster) -> float:
    """Median seconds for one operator write (PUT, committed on a majority) done one after another."""
    poster = Poster(cluster, "main")
    durations = []
    try:
        for i in range(WRITES):
            started = time.perf_counter()
            status, answer = poster.request("PUT", f"/api/v1/points/fsync.w{i}", json.dumps({"value": i}).encode())
            durations.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"write refused: {status} {answer}")
    finally:
        poster.close()
    return statistics.median(durations)


def main() -> int:
    args = parser(__doc__).parse_args()
    names = point_names(UPDATES)
    bodies = [updates_body(names[i : i + BATCH], float(i)) for i in range(0, UPDATES, BATCH)]
    latency: dict[bool, list[float]] = {True: [], False: []}
    rate: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.runs):
        for fsync in (True, False):
            with running_cluster(args.keep, fsync=fsync) as cluster:
                latency[fsync].append(write_latency(cluster))
                rate[fsync].append(throughput_run(cluster, bodies))
    on, off = statistics.median(latency[True]), statistics.median(latency[False])
    report(
        "fsync cost",
        [
            ("operator write, fsync on", summary(latency[True]), "(reported)", millis, lambda s: None),
            ("operator write, fsync off", summary(latency[False]), "(reported)", millis, lambda s: None),
            ("batched updates/s, fsync on", summary(rate[True], higher_is_better=True), "(reported)", per_second, lambda s: None),
            ("batched updates/s, fsync off", summary(rate[False], higher_is_better=True), "(reported)", per_second, lambda s: None),
        ],
        {
            "write_latency_ratio_on_off": on / off,
            "throughput_ratio_on_off": statistics.median(rate[True]) / statistics.median(rate[False]),
            "samples": {"latency_on": latency[True], "latency_off": latency[False], "rate_on": rate[True], "rate_off": rate[False]},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
