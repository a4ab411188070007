"""Failover, fail-back, pause and restart behaviour of three real node processes on loopback."""

from __future__ import annotations

import json
import signal

from conftest import get, put, tandem_cli

from cluster.guard import read_acts
from webmanager.tools.cli import call_api
from webmanager.tools.launcher import holds_for, wait_for

POINTS = [f"hall.t{i}" for i in range(30)]


def write_points(cluster, tag: str = "v") -> dict[str, str]:
    values = {name: f"{tag}-{i}" for i, name in enumerate(POINTS)}
    for name, value in values.items():
        put(cluster, name, value)
    return values


def assert_points(cluster, node: str, values: dict[str, str]) -> None:
    assert {name: get(cluster, node, name) for name in values} == values


def fail_over_with_points(cluster) -> dict[str, str]:
    """Main active, points written, main SIGKILLed, backup active with every committed point."""
    assert cluster.wait_active(name="main") == "main"
    values = write_points(cluster)
    cluster["main"].kill()
    assert cluster.wait_active(5) == "backup"
    assert_points(cluster, "backup", values)
    return values


def test_kill_main_backup_takes_over_then_main_fails_back(make_cluster):
    cluster = make_cluster()
    fail_over_with_points(cluster)
    more = write_points(cluster, "after-failover")
    cluster["main"].start()
    assert cluster.wait_active(15, "main") == "main"
    assert_points(cluster, "main", more)
    # the replicated failover history: the cold start, the failover with the gap the backup measured, the fail-back
    code, status = call_api(cluster.config, cluster["backup"].spec.api, "GET", "/api/v1/status")
    assert code == 200, status
    history = [(a["node"], a["previous"]) for a in reversed(status["activations"])]
    assert history[-2:] == [("backup", "main"), ("main", "backup")], history
    failover = status["activations"][1]
    assert 0.0 < failover["gap"] < 5.0 and failover["term"] < status["activations"][0]["term"]


def test_manual_failback_keeps_backup_active(make_cluster):
    cluster = make_cluster(failback="manual", cluster={"failback_holdoff": 1.0})
    values = fail_over_with_points(cluster)
    cluster["main"].start()
    wait_for(lambda: cluster.caught_up("main", "backup"), 15, "main to catch up")
    holds_for(lambda: cluster.active() == "backup", 3.0, "backup staying active with failback=manual")
    assert_points(cluster, "main", values)


def test_witness_never_becomes_active_and_a_returning_server_takes_over(make_cluster):
    cluster = make_cluster()
    values = fail_over_with_points(cluster)
    cluster["backup"].kill()
    holds_for(
        lambda: cluster.active() is None and cluster["witness"].view()["role"] == "witness",
        3.0,
        "no active and the witness not active",
    )
    status = tandem_cli(cluster, "status")  # the table shows the unreachable servers and says there is no active
    assert status.returncode == 1 and status.stderr == "" and "active = NONE" in status.stdout and status.stdout.count(" NO ") == 2, status.stdout + status.stderr
    cluster["backup"].start()
    assert cluster.wait_active(10) == "backup"
    assert_points(cluster, "backup", values)


def test_paused_active_never_acts_after_the_new_activation(make_cluster):
    cluster = make_cluster(timers={"lifesign_interval": 0.01})
    assert cluster.wait_active(name="main") == "main"
    cluster["main"].signal(signal.SIGSTOP)
    assert cluster.wait_active(5) == "backup"
    backup_term = cluster["backup"].view()["term"]
    cluster["main"].signal(signal.SIGCONT)
    wait_for(lambda: (cluster["main"].view() or {}).get("term") == backup_term, 5, "main to learn the new term")
    assert cluster.active() == "backup"
    main_acts = read_acts(cluster["main"].spec.data_dir / "acts.log")
    backup_acts = [a for a in read_acts(cluster["backup"].spec.data_dir / "acts.log") if a["term"] == backup_term]
    assert main_acts and backup_acts
    assert max(a["wall"] for a in main_acts) < min(a["wall"] for a in backup_acts)


def test_main_restarting_repeatedly_moves_nothing(make_cluster):
    cluster = make_cluster(failback="manual")
    assert cluster.wait_active(name="main") == "main"
    cluster["main"].kill()
    assert cluster.wait_active(5) == "backup"
    term = cluster["backup"].view()["term"]
    for _ in range(5):
        cluster["main"].start()
        wait_for(lambda: cluster.caught_up("main", "backup"), 15, "main to rejoin")
        cluster["main"].kill()
        assert cluster.active() == "backup"
    cluster["main"].start()
    wait_for(lambda: cluster.caught_up("main", "backup"), 15, "main to rejoin")
    holds_for(lambda: cluster.active() == "backup", 1.0, "backup staying active")
    assert {name: (view or {}).get("term") for name, view in cluster.views().items()} == dict.fromkeys(cluster.nodes, term)


def test_kill_all_three_and_restart_keeps_state(make_cluster):
    cluster = make_cluster()
    cluster.wait_active()
    values = write_points(cluster)
    for node in cluster.nodes.values():
        node.kill()
    cluster.start()
    active = cluster.wait_active(15)
    assert_points(cluster, active, values)
    for name in ("main", "backup"):
        wait_for(lambda: cluster.caught_up(name, active), 10, f"{name} to apply everything")
        assert_points(cluster, name, values)


def test_a_standby_that_comes_back_in_a_newer_term_is_followed_again(make_cluster):
    """The backup returns with a term newer than the active's (as after a pre-vote that passed and an election that did
    not): it ignores the active's entries, and the sticky active ignores its vote requests. It tells the active, which
    re-elects itself at once in a newer term; the backup follows it again and catches up."""
    cluster = make_cluster(failback="manual")
    values = write_points(cluster)
    cluster["backup"].stop()
    term = cluster["main"].view()["term"]
    meta = cluster["backup"].spec.data_dir / "raft.journal.meta"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "currentTerm": term + 5, "votedForNodeId": cluster["backup"].spec.raft}))
    more = write_points(cluster, "while-away")
    cluster["backup"].start()
    wait_for(lambda: (cluster["main"].view() or {}).get("term", 0) > term + 5, 10, "main to re-elect itself in a newer term")
    assert cluster.wait_active(5) == "main"
    wait_for(lambda: cluster.caught_up("backup", "main"), 10, "the backup to follow main again")
    assert_points(cluster, "backup", {**values, **more})
    assert "stepping down and re-electing at once" in cluster.log("main")
