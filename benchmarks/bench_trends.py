"""Trends: samples/s a server records (its store alone, and end to end on a real cluster), the query of one week at
1-minute resolution for one point, and the store's size per million samples."""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from harness import (
    BATCH,
    apply_building,
    millis,
    paced_updates,
    parser,
    per_second,
    report,
    running_cluster,
    summary,
    view,
)

from cluster import changes
from cluster.commands import ApplyDocuments, PointUpdate, PutDocument, Step, UpdatePoints
from cluster.state import ProcessImage
from plugins.trend_store import TrendStore
from plugins.trends import FUNCTION, TICK, TrendEntry, TrendFeed
from webmanager.tools.launcher import LocalCluster, wait_for

TRENDS = 10_000  # change trends (deadband 0) on as many points
UPDATES = 500_000  # per ingest run: every update a change, so every update a sample
WEEK, MINUTE = 7 * 86_400, 60
CLUSTER_POINTS, CLUSTER_RATE, CLUSTER_SECONDS = 5_000, 50_000.0, 10.0  # end to end: trended updates/s posted to the active


class Server:
    """One server's trending in-process: a process image, its feed and its store. The feed here offers samples as fast as
    it can, faster than any writer: the queue's bound is lifted so that the runs measure the writer, not the dropping."""

    def __init__(self, path: Path) -> None:
        self.image = ProcessImage()
        self.store = TrendStore(path, max_queued=2 * UPDATES)
        self.feed = TrendFeed(lambda: self.image, self.store)

    def apply(self, command) -> None:
        result = self.image.apply(command)
        self.feed(changes.applied(command, result, self.image))


def define(server: Server, names: list[str], **entry) -> None:
    server.apply(ApplyDocuments(tuple(PutDocument(FUNCTION, name, TrendEntry(point=name, **entry).model_dump(), "bench", 1.0) for name in names)))


def ingest_run(directory: Path) -> tuple[float, float, float]:
    """Samples/s recorded (feeding to written), the feed's share of that time, and bytes per million samples."""
    server = Server(directory / "trends.sqlite")
    names = [f"p{i}" for i in range(TRENDS)]
    define(server, names)
    batches = [
        UpdatePoints(tuple(PointUpdate(name, float(k + i), "good", 1e9 + k + i / TRENDS, "bench") for i, name in enumerate(names[start : start + 1000])))
        for k in range(UPDATES // TRENDS)
        for start in range(0, TRENDS, 1000)
    ]
    fed = 0.0
    started = time.perf_counter()
    for batch in batches:
        change = changes.applied(batch, server.image.apply(batch), server.image)  # the node's apply derives it
        before = time.perf_counter()
        server.feed(change)
        fed += time.perf_counter() - before
    server.store.flushed().result(timeout=600)
    elapsed = time.perf_counter() - started
    server.store.close()
    with sqlite3.connect(server.store.path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        count = db.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert count == UPDATES, f"recorded {count} of {UPDATES} samples"
    size = sum(p.stat().st_size for p in directory.glob("trends.sqlite*"))
    return count / elapsed, fed / elapsed, size / count * 1e6


def week_store(directory: Path) -> TrendStore:
    """A store holding one week of 1-minute interval samples for 50 points (504,000 samples), fed by real ticks."""
    server = Server(directory / "trends.sqlite")
    names = [f"m{i}" for i in range(50)]
    define(server, names, mode="interval", interval=MINUTE)
    start = 1_800_000_000 - WEEK
    previous = None
    for k in range(WEEK // MINUTE):
        at = start + k * MINUTE
        server.apply(UpdatePoints(tuple(PointUpdate(name, 20.0 + (k % 97) * 0.1, "good", at - 30.0, "bench") for name in names)))
        tick = {"at": at, "from": previous["at"] if previous else at - 1}
        server.apply(Step(FUNCTION, None, float(at), changes=((TICK, previous, tick),)))
        previous = tick
    server.store.flushed().result(timeout=600)
    return server.store


def timed(call, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        before = time.perf_counter()
        call()
        times.append(time.perf_counter() - before)
    return times


def end_to_end(cluster: LocalCluster, names: list[str]) -> tuple[float, float, int]:
    """While CLUSTER_RATE trended updates/s (each a change) are posted to the active for CLUSTER_SECONDS: the samples/s
    both servers' stores recorded over that time, the seconds from the last batch until both had recorded everything,
    and how often the active role was lost meanwhile."""
    stores = [cluster[name].spec.data_dir / "trends.sqlite" for name in ("main", "backup")]
    before, term = min(_rows(path) for path in stores), view(cluster, "main")["term"]
    started = time.monotonic()
    sent = asyncio.run(paced_updates(cluster, "main", CLUSTER_RATE, BATCH, CLUSTER_SECONDS, names, lambda k: float(started + k)))
    if sent["failed"]:
        raise RuntimeError(f"{sent['failed']} batches refused")
    sent_at, applied = time.monotonic(), view(cluster, "main")["commands_applied"]
    wait_for(lambda: all(_recorded(path) >= applied for path in stores), 120, "both stores to record the batches", interval=0.01)
    lag = time.monotonic() - sent_at
    return (min(_rows(path) for path in stores) - before) / CLUSTER_SECONDS, lag, view(cluster, "main")["term"] - term


def trended_cluster(cluster: LocalCluster) -> list[str]:
    """Apply CLUSTER_POINTS virtual points, each with a change trend (deadband 0)."""
    names = [f"trended.p{i}" for i in range(CLUSTER_POINTS)]
    apply_building(cluster, {"points": [{"name": n} for n in names], "trends": [{"name": n, "point": n} for n in names]})
    return names


def _rows(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM samples").fetchone()[0]


def _recorded(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT key, value FROM meta")).get("last_seq", 0)


def main() -> int:
    arguments = parser(__doc__, runs=5)
    args = arguments.parse_args()
    rates, feed_shares, sizes = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="tandem-bench-trends-") as tmp:
            rate, feed_share, size = ingest_run(Path(tmp))
        rates.append(rate), feed_shares.append(feed_share), sizes.append(size)
    with tempfile.TemporaryDirectory(prefix="tandem-bench-trends-") as tmp:
        store = week_store(Path(tmp))
        end = 1_800_000_000.0
        raw = timed(lambda: store.history("m7", end - WEEK, end + 1, 100_000), 50)
        bucketed = timed(lambda: store.buckets("m7", end - WEEK, end + 1, MINUTE), 50)
        assert len(store.history("m7", end - WEEK, end + 1, 100_000)) == WEEK // MINUTE
        store.close()
    cluster_rates, lags, terms = [], [], []
    with running_cluster(args.keep) as cluster:
        names = trended_cluster(cluster)
        for _ in range(args.runs):
            rate, lag, elections = end_to_end(cluster, names)
            cluster_rates.append(rate), lags.append(lag), terms.append(elections)
    ok = report(
        "trends",
        [
            ("store ingest: samples/s recorded (10,000 change trends)", summary(rates, higher_is_better=True), ">= 50,000/s", per_second,
             lambda s: s["median"] >= 50_000),
            ("of that time, deriving samples on the Raft thread", summary(feed_shares), "(reported)", lambda v: f"{v * 100:.0f}%", lambda s: None),
            (f"end to end at {CLUSTER_RATE:,.0f} trended updates/s: samples/s recorded by both servers", summary(cluster_rates, higher_is_better=True),
             ">= 50,000/s", per_second, lambda s: s["median"] >= 50_000 * 0.95),
            ("end to end: last batch -> recorded by both servers", summary(lags), "(reported)", millis, lambda s: None),
            ("elections meanwhile (term changes)", summary(terms), "0", lambda v: f"{v:.0f}", lambda s: s["worst"] == 0),
            ("query: one week at 1 min for one point, raw (10,080)", summary(raw), "<= 50 ms", millis, lambda s: s["median"] <= 0.05),
            ("query: one week in 1-min min/max/avg buckets", summary(bucketed), "<= 50 ms", millis, lambda s: s["median"] <= 0.05),
            ("store size per million samples", summary(sizes), "(reported)", lambda v: f"{v / 2**20:.1f} MiB", lambda s: None),
        ],
        {"samples": {"ingest": rates, "feed_share": feed_shares, "cluster": cluster_rates, "lag_s": lags, "elections": terms, "raw_ms": [t * 1000 for t in raw],
                     "bucket_ms": [t * 1000 for t in bucketed], "bytes_per_million": sizes},
         "p99_raw_ms": statistics.quantiles(raw, n=100)[98] * 1000},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
