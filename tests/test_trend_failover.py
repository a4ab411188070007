"""Trend history on real node processes: main and backup hold identical SQLite tables after a normal run, after main is
killed and restarted, and after main is wiped and restored from a snapshot; the interval trend has no gap."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from pathlib import Path

from conftest import apply_building, report, tandem_cli

from webmanager.tools.cli import call_api
from webmanager.tools.launcher import wait_for

BUILDING = """
[[points]]
name = "room.temp"

[[points]]
name = "meter"

[[trends]]
name = "room-temp"
point = "room.temp"
deadband = 0.2

[[trends]]
name = "meter-1s"
point = "meter"
mode = "interval"
interval = 1
"""
SAMPLES = "SELECT t.name, s.ts, s.seq, s.value, s.quality FROM samples s JOIN trends t ON t.id = s.trend WHERE s.seq <= ? ORDER BY 1, 2, 3"


def recorded_up_to(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
    return meta["last_seq"] if meta.get("gap_to", 0) <= meta["last_seq"] else 0


def rows(path: Path, upto: int) -> list[tuple]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute(SAMPLES, (upto,)).fetchall()


def identical_tables(cluster, least: int) -> list[tuple]:
    """Wait until both stores recorded the log past `least`; their samples up to the point both reached are identical."""
    main, backup = (cluster[name].spec.data_dir / "trends.sqlite" for name in ("main", "backup"))
    wait_for(lambda: min(recorded_up_to(main), recorded_up_to(backup)) > least, 20, "both trend stores to record the log")
    common = min(recorded_up_to(main), recorded_up_to(backup))
    on_main, on_backup = rows(main, common), rows(backup, common)
    assert on_main == on_backup, f"trend tables differ up to command {common}"
    return on_main


def applied(cluster, node: str) -> int:
    return cluster[node].view()["applied_index"]


def no_gap(samples: list[tuple], trend: str, start: float, end: float) -> None:
    """The interval trend has a sample at every whole second in [start, end]."""
    seconds = [ts for name, ts, *_ in samples if name == trend and start <= ts <= end]
    assert seconds == [float(s) for s in range(int(start), int(end) + 1)], f"{trend} has a gap between {start} and {end}"


def feed(cluster, values: itertools.count, n: int) -> None:
    for _ in range(n):
        i = next(values)
        report(cluster, {"room.temp": 20 + (i % 10) * 0.15, "meter": i})


def test_identical_history_through_a_normal_run_a_kill_and_restart_and_a_wipe_and_restore(make_cluster, tmp_path):
    cluster = make_cluster(cluster={"failback_holdoff": 0.5, "snapshot_entries": 200})
    cluster.wait_active(name="main")
    assert apply_building(cluster, BUILDING, tmp_path).returncode == 0
    values = itertools.count()
    feed(cluster, values, 40)
    first = identical_tables(cluster, applied(cluster, "main"))
    assert {name for name, *_ in first} == {"room-temp", "meter-1s"}

    # main killed: the backup goes on recording (and ticking); main restarts, replays, catches up, takes over again
    cluster["main"].kill()
    killed_at = first[-1][1]
    assert cluster.wait_active(5) == "backup"
    feed(cluster, values, 40)
    cluster.start("main")
    cluster.wait_active(30, name="main")
    feed(cluster, values, 10)
    second = identical_tables(cluster, applied(cluster, "main"))
    assert len(second) > len(first)
    interval = [ts for name, ts, *_ in second if name == "meter-1s"]
    no_gap(second, "meter-1s", interval[0], interval[-1])
    assert interval[-1] > killed_at + 2  # the interval trend went on across the failover

    # main wiped: it comes back from the backup's snapshot, and its history from the backup's store
    feed(cluster, values, 250)  # more than snapshot_entries: the log is compacted
    wait_for((cluster["backup"].spec.data_dir / "raft.snapshot").exists, 30, "the backup to write a snapshot")
    cluster["main"].kill()
    shutil.rmtree(cluster["main"].spec.data_dir)
    assert cluster.wait_active(5) == "backup"
    feed(cluster, values, 20)
    cluster.start("main")
    cluster.wait_active(30, name="main")
    assert "image restored from snapshot" in cluster.log("main")
    third = identical_tables(cluster, applied(cluster, "main"))
    assert set(second) <= set(third)  # the wiped main has the history from before the wipe
    no_gap(third, "meter-1s", interval[0], max(ts for name, ts, *_ in third if name == "meter-1s"))
    assert "trend gap" in cluster.log("main")

    listed = tandem_cli(cluster, "trend", "room.temp", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    code, answer = call_api(cluster.config, cluster["backup"].spec.api, "GET", "/api/v1/trends/meter-1s?step=5")
    assert code == 200 and answer["buckets"] and all(b["count"] <= 5 for b in answer["buckets"])
