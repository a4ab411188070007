"""A damaged journal or snapshot never lets a node start silently empty."""

from __future__ import annotations

import os
import shutil

from conftest import get, put, report

from webmanager.tools.launcher import wait_for

POINTS = [f"store.p{i}" for i in range(20)]


def fill(cluster) -> None:
    for i, name in enumerate(POINTS):
        put(cluster, name, i)


def test_corrupt_journal_refuses_to_start(make_cluster):
    cluster = make_cluster()
    cluster.wait_active(name="main")
    fill(cluster)
    cluster["backup"].kill()
    journal = cluster["backup"].spec.data_dir / "raft.journal"
    data = bytearray(journal.read_bytes())
    data[len(data) // 2] ^= 0xFF
    journal.write_bytes(bytes(data))
    cluster["backup"].start()
    code = wait_for(lambda: cluster["backup"].popen.poll(), 15, "backup to refuse to start")
    assert code == 2
    log = cluster.log("backup")
    assert "refuses to start" in log and "corrupt" in log and str(journal) in log


def test_truncated_journal_recovers_from_peers(make_cluster):
    cluster = make_cluster(failback="manual")
    cluster.wait_active(name="main")
    fill(cluster)
    cluster["backup"].kill()
    journal = cluster["backup"].spec.data_dir / "raft.journal"
    os.truncate(journal, journal.stat().st_size - 7)
    cluster["backup"].start()
    wait_for(lambda: cluster.caught_up("backup", "main"), 15, "backup to catch up")
    assert [get(cluster, "backup", name) for name in POINTS] == list(range(len(POINTS)))
    assert "torn" in cluster.log("backup") or "truncat" in cluster.log("backup")


def test_corrupt_snapshot_refuses_to_start(make_cluster):
    cluster = make_cluster(cluster={"snapshot_entries": 100})
    cluster.wait_active(name="main")
    snapshot = cluster["backup"].spec.data_dir / "raft.snapshot"
    for round_ in range(8):
        fill(cluster)
        if snapshot.exists():
            break
    wait_for(snapshot.exists, 30, "the backup to write a snapshot")
    cluster["backup"].kill()
    snapshot.write_bytes(b"not a snapshot")
    cluster["backup"].start()
    code = wait_for(lambda: cluster["backup"].popen.poll(), 15, "backup to refuse to start")
    assert code == 2
    assert "snapshot" in cluster.log("backup") and "refuses to start" in cluster.log("backup")


def test_wiped_backup_resyncs_from_a_snapshot_and_takes_over(make_cluster):
    cluster = make_cluster(failback="manual", cluster={"snapshot_entries": 100})
    cluster.wait_active(name="main")
    values = {f"wiped.p{i}": i for i in range(300)}
    names = list(values)
    for start in range(0, len(names), 2):  # 150 log entries: more than snapshot_entries, so main compacts its log
        report(cluster, {name: values[name] for name in names[start : start + 2]})
    wait_for((cluster["main"].spec.data_dir / "raft.snapshot").exists, 30, "main to write a snapshot")
    cluster["backup"].kill()
    shutil.rmtree(cluster["backup"].spec.data_dir)
    cluster["backup"].start()
    commit = cluster["main"].view()["commit_index"]
    wait_for(lambda: (cluster["backup"].view() or {}).get("applied_index", 0) >= commit, 15, "the wiped backup to catch up")
    assert "image restored from snapshot" in cluster.log("backup")
    cluster["main"].kill()
    assert cluster.wait_active(5) == "backup"
    assert {name: get(cluster, "backup", name) for name in names} == values
