"""Points listing at building scale: GET /api/v1/points pages (first, by cursor, by prefix, by search) on a real cluster of 250,000 points."""

from __future__ import annotations

import random
import time
import urllib.parse

from harness import (
    BATCH,
    Poster,
    millis,
    parser,
    point_names,
    report,
    running_cluster,
    summary,
    updates_body,
    view,
)

from webmanager.tools.launcher import LocalCluster, wait_for

POINTS = 250_000
PAGE = 200  # what the Web Manager's Points page asks for
NEW = 1_000  # names reported between the requests that measure merging new names into the index


def load(cluster: LocalCluster, names: list[str]) -> None:
    """Give every name a value through main, BATCH per log entry, and wait until both servers applied them."""
    poster = Poster(cluster, "main")
    try:
        for start in range(0, len(names), BATCH):
            status, answer = poster.post("/api/v1/points", updates_body(names[start : start + BATCH], 1.0))
            if status != 200:
                raise RuntimeError(f"loading points failed: {status} {answer}")
    finally:
        poster.close()
    commit = view(cluster, "main")["commit_index"]
    wait_for(lambda: all(view(cluster, node)["applied_index"] >= commit for node in ("main", "backup")), 60, "both servers to apply the points")


def timed(poster: Poster, query: dict[str, str | int]) -> tuple[float, dict]:
    """Seconds one GET /api/v1/points?query takes to answer, and the answer."""
    before = time.perf_counter()
    status, answer = poster.request("GET", f"/api/v1/points?{urllib.parse.urlencode(query)}", None)
    elapsed = time.perf_counter() - before
    if status != 200:
        raise RuntimeError(f"{query}: {status} {answer}")
    return elapsed, answer


def main() -> int:
    args = parser(__doc__, runs=20).parse_args()
    names = point_names(POINTS)
    random.Random(1).shuffle(names)  # reported in no particular order: the index's first sort is the slow one
    ordered = sorted(names)
    count = lambda test: f"{sum(map(test, names)):,} matches"  # noqa: E731
    queries = {
        "first page": {"limit": PAGE},
        "a page in the middle (after=)": {"limit": PAGE, "after": ordered[POINTS // 2]},
        f"prefix page (bench.p12: {count(lambda n: n.startswith('bench.p12'))})": {"limit": PAGE, "prefix": "bench.p12"},
        f"search page (P1234: {count(lambda n: 'p1234' in n)})": {"limit": PAGE, "search": "P1234"},
        f"search, a later page (34: {count(lambda n: '34' in n)})": {"limit": PAGE, "search": "34", "after": ordered[POINTS // 2]},
    }
    results: dict[str, dict[str, list[float]]] = {"main": {}, "backup": {}}
    with running_cluster(args.keep) as cluster:
        load(cluster, names)
        term = view(cluster, "main")["term"]
        for node in ("main", "backup"):
            poster = Poster(cluster, node)
            results[node]["first request after the start (sorts the names once)"] = [timed(poster, {"limit": PAGE})[0]]
            for label, query in queries.items():
                results[node][label] = [timed(poster, query)[0] for _ in range(args.runs)]
            poster.close()
        merges = []
        reader = Poster(cluster, "main")
        for run in range(5):
            load(cluster, point_names(NEW, f"bench.new{run}."))
            merges.append(timed(reader, {"limit": PAGE})[0])
        reader.close()
        elections = view(cluster, "main")["term"] - term
    rows = [
        (f"{node}: {label}", summary(samples), "<= 100 ms", millis, lambda s: s["median"] <= 0.1)
        if label in queries
        else (f"{node}: {label}", summary(samples), "(reported)", millis, lambda s: None)
        for node, measured in results.items()
        for label, samples in measured.items()
    ]
    rows.append((f"main: first page after {NEW:,} new names (merged into the index)", summary(merges), "<= 100 ms", millis, lambda s: s["median"] <= 0.1))
    rows.append(("elections meanwhile (term changes)", summary([float(elections)]), "0", lambda v: f"{v:.0f}", lambda s: s["worst"] == 0))
    ok = report(f"points listing ({POINTS:,} points, pages of {PAGE})", rows, {"samples_ms": {f"{n}: {k}": [t * 1000 for t in v] for n, m in results.items() for k, v in m.items()}})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
