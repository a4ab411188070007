"""A network partition (cable pull in network namespaces): the old active stops before the new one starts, and heals without flapping."""

from __future__ import annotations

from cluster.guard import read_acts
from cluster.processes import LocalCluster, NODE_NAMES, holds_for, wait_for, write_config
from netns import NetnsHosts


def test_partitioned_main_steps_down_before_backup_activates_and_rejoins_quietly(tmp_path):
    with NetnsHosts(NODE_NAMES) as net:
        config = write_config(tmp_path, failback="manual", hosts=net.address, timers={"lifesign_interval": 0.01})
        cluster = LocalCluster(config, prefixes={host: net.prefix(host) for host in NODE_NAMES})
        cluster.start()
        try:
            assert cluster.wait_active(15, "main") == "main"
            net.cut("main")
            # main is out of the test process's reach too: ask the others who is active
            wait_for(lambda: (cluster["backup"].view() or {}).get("role") == "active", 5, "backup to become active")
            term = cluster["backup"].view()["term"]
            main_acts = read_acts(cluster["main"].spec.data_dir / "acts.log")
            wait_for(lambda: read_acts(cluster["main"].spec.data_dir / "acts.log") == main_acts, 1, "main to stop acting")
            backup_acts = [a for a in read_acts(cluster["backup"].spec.data_dir / "acts.log") if a["term"] == term]
            assert max(a["wall"] for a in main_acts) < min(a["wall"] for a in backup_acts)

            net.heal("main")
            wait_for(lambda: (cluster["main"].view() or {}).get("term") == term, 10, "main to rejoin in the new term")
            holds_for(
                lambda: cluster.active() == "backup" and {v["term"] for v in cluster.views().values() if v} == {term},
                3.0,
                "backup active and no new elections after the heal",
            )
        finally:
            cluster.stop()
