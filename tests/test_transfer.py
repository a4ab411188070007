"""Planned leadership transfer through the real `tandem transfer` command."""

from __future__ import annotations

import re
import time

from conftest import tandem_cli

from webmanager.tools.launcher import wait_for


def test_transfer_to_each_server_reports_the_gap(make_cluster):
    cluster = make_cluster(failback="manual", timers={"lifesign_interval": 0.01})
    assert cluster.wait_active(name="main") == "main"
    wait_for(lambda: cluster["main"].view()["peers"]["backup"]["eligible"], 10, "the backup to load its plugins")
    for target in ("backup", "main"):
        result = tandem_cli(cluster, "transfer", "--to", target)
        assert result.returncode == 0, result.stderr
        gap = re.search(r"gap in acting: (\d+) ms", result.stdout)
        assert gap, result.stdout
        assert int(gap.group(1)) < 1000
        assert cluster.active() == target


def test_transfer_to_the_witness_is_refused(make_cluster):
    cluster = make_cluster()
    assert cluster.wait_active(name="main") == "main"
    result = tandem_cli(cluster, "transfer", "--to", "witness")
    assert result.returncode == 2
    assert "never becomes active" in result.stderr
    assert cluster.active() == "main"


def test_transfer_to_an_unreachable_node_fails_in_time_and_main_stays_active(make_cluster):
    cluster = make_cluster(timers={"lifesign_interval": 0.01})
    assert cluster.wait_active(name="main") == "main"
    wait_for(lambda: cluster["main"].view()["peers"]["backup"]["eligible"], 10, "the backup to load its plugins (a blocked one is refused)")
    cluster["backup"].kill()
    started = time.monotonic()
    result = tandem_cli(cluster, "transfer", "--to", "backup", "--timeout", "1")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "backup was not reachable and caught up within the timeout; main stays active" in result.stderr
    assert elapsed < 1 + 3  # the transfer timeout plus process start-up
    last_act = cluster["main"].view()["acts"]["last"]
    wait_for(lambda: cluster["main"].view()["acts"]["last"] > last_act, 2, "main to act again")
    assert cluster.active() == "main"
