"""/metrics on real node processes: parsed as Prometheus text, it agrees with /api/v1/node and follows reports, failovers and
a stalled trend writer."""

from __future__ import annotations

import sqlite3
import urllib.error
import urllib.request

import aiohttp
import pytest
from conftest import module_cluster, report, serving
from prometheus_client.parser import text_string_to_metric_families

from plugins.trend_store import MAX_QUEUED
from webmanager.appkeys import MAX_BATCH
from webmanager.tools.cli import call_api
from webmanager.tools.launcher import LocalCluster, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("metrics")) as cluster:
        yield cluster


def scrape(cluster: LocalCluster, node: str, token: str | None = None) -> Samples:
    """Every sample of the node's /metrics: (name, sorted labels) -> value."""
    request = urllib.request.Request(
        f"http://{cluster[node].spec.api}/metrics", headers={"Authorization": f"Bearer {token or cluster.config.api_token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers.get_content_type() == "text/plain"
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def role(samples: Samples) -> str:
    roles = [dict(labels)["role"] for (name, labels), value in samples.items() if name == "tandem_role" and value == 1]
    assert len(roles) == 1, roles
    return roles[0]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def agrees(cluster: LocalCluster, node: str) -> bool:
    """Whether a scrape and the node's view taken right after it show the same role, term and indexes."""
    samples, view = scrape(cluster, node), cluster[node].view()
    return (role(samples), value(samples, "tandem_raft_term"), value(samples, "tandem_raft_applied_entries_total")) == (
        view["role"],
        view["term"],
        view["applied_index"],
    ) and value(samples, "tandem_raft_committed_entries_total") == view["commit_index"]


@pytest.mark.parametrize("node", ["main", "backup", "witness"])
def test_metrics_agree_with_the_node_view(cluster, node):
    wait_for(lambda: agrees(cluster, node), 10, f"{node}'s metrics to match its view")
    samples = scrape(cluster, node)
    assert value(samples, "tandem_node_info", node=node, config_role=node) == 1
    assert value(samples, "tandem_points") == cluster[node].view()["points"]
    assert ("process_resident_memory_bytes", ()) in samples


def test_roles_and_what_each_node_has(cluster):
    main, backup, witness = (scrape(cluster, node) for node in ("main", "backup", "witness"))
    assert (role(main), role(backup), role(witness)) == ("active", "standby", "witness")
    assert value(main, "tandem_raft_leader") == 1 and value(backup, "tandem_raft_leader") == 0
    assert value(main, "tandem_role_changes_total", role="active") >= 1
    assert value(main, "tandem_peer_connected", peer="backup") == 1
    assert value(main, "tandem_functions_in_error") == 0 and value(main, "tandem_devices") == 0
    assert not any(name.startswith(("tandem_function", "tandem_device")) for name, _ in witness)  # the witness runs no plugins
    assert ("tandem_websocket_clients", ()) in backup and ("tandem_websocket_clients", ()) not in witness  # no live feed there


async def test_websocket_clients_are_counted(cluster):
    before = value(scrape(cluster, "main"), "tandem_websocket_clients")
    headers = {"Authorization": f"Bearer {cluster.config.api_token}"}
    async with aiohttp.ClientSession() as session, session.ws_connect(f"http://{cluster['main'].spec.api}/api/v1/live", headers=headers):
        wait_for(lambda: value(scrape(cluster, "main"), "tandem_websocket_clients") == before + 1, 10, "the live client to be counted")
    wait_for(lambda: value(scrape(cluster, "main"), "tandem_websocket_clients") == before, 10, "the closed client to be let go")


def test_reports_move_the_apply_counter_and_the_points(cluster):
    before = scrape(cluster, "backup")
    report(cluster, {"metrics.a": 1.5, "metrics.b": 2, "metrics.c": True})
    commit = cluster["main"].view()["commit_index"]
    after = wait_for(
        lambda: (lambda s: s if value(s, "tandem_raft_applied_entries_total") >= commit else None)(scrape(cluster, "backup")),
        10,
        "the backup's applied counter to reach main's commit index",
    )
    assert value(after, "tandem_raft_applied_entries_total") > value(before, "tandem_raft_applied_entries_total")
    assert value(after, "tandem_points") == value(before, "tandem_points") + 3
    assert value(after, "tandem_apply_lag_batches") == value(before, "tandem_apply_lag_batches") + 1
    assert value(after, "tandem_apply_lag_seconds", stat="max") >= 0


def test_scrape_needs_the_token(cluster):
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(cluster, "main", token="wrong")
    assert refused.value.code == 401


def test_a_stalled_trend_writer_shows_its_bounded_queue_and_the_samples_it_dropped(cluster):
    """Main's trend store is stalled (the test holds its file's write lock, as a hung disk would): the queue fills to its
    bound, the rest is dropped and counted, and the metrics show both; the backup's store is not affected."""
    trended = "metrics.trended"
    building = {"points": [{"name": trended}], "trends": [{"name": trended, "point": trended}]}
    assert call_api(cluster.config, cluster["main"].spec.api, "POST", "/api/v1/config", building)[0] == 200
    before = scrape(cluster, "main")
    assert value(before, "tandem_trend_queue_bound_samples") == MAX_QUEUED and value(before, "tandem_trend_samples_dropped_total") == 0
    batches = MAX_QUEUED // MAX_BATCH + 1  # one more than fits: each update of the trended point is a sample
    stall = sqlite3.connect(cluster["main"].spec.data_dir / "trends.sqlite", isolation_level=None)
    stall.execute("BEGIN IMMEDIATE")
    try:
        for k in range(batches):
            body = {"updates": [{"name": trended, "value": k * MAX_BATCH + i} for i in range(MAX_BATCH)]}
            code, answer = call_api(cluster.config, cluster["main"].spec.api, "POST", "/api/v1/points", body)
            assert code == 200, answer
        stalled = scrape(cluster, "main")
    finally:
        stall.rollback()
    assert value(stalled, "tandem_trend_samples_dropped_total") == MAX_BATCH  # the last batch found no room
    assert (batches - 1) * MAX_BATCH <= value(stalled, "tandem_trend_queue_samples") <= MAX_QUEUED
    wait_for(lambda: value(scrape(cluster, "main"), "tandem_trend_queue_samples") == 0, 30, "main's trend writer to catch up")
    assert value(scrape(cluster, "main"), "tandem_trend_samples_dropped_total") == MAX_BATCH
    assert value(scrape(cluster, "backup"), "tandem_trend_samples_dropped_total") == 0
    assert cluster["main"].view()["trends"]["dropped"] == MAX_BATCH  # the node's status says it too


def test_device_errors_are_counted(make_cluster, example_plugin):
    env = {"PYTHONPATH": str(example_plugin)}
    cluster = make_cluster(cluster={"plugins": ["example"]}, envs={"main": env, "backup": env})
    cluster.wait_active(name="main")
    building = {
        "devices": [{"name": "c1", "driver": "counter", "period": 0.05}, {"name": "c2", "driver": "counter", "period": 0.05, "fail_at_start": True}],
        "points": [{"name": "c1.n", "device": "c1"}, {"name": "c2.n", "device": "c2"}],
    }
    assert call_api(cluster.config, cluster["main"].spec.api, "POST", "/api/v1/config", building)[0] == 200
    wait_for(lambda: value(scrape(cluster, "main"), "tandem_devices_in_error") == 1, 10, "main to count c2 in error")
    samples = scrape(cluster, "main")
    assert value(samples, "tandem_devices") == 2
    assert (value(samples, "tandem_device_error", device="c1"), value(samples, "tandem_device_error", device="c2")) == (0, 1)


def test_failover_shows_in_the_metrics(make_cluster):
    cluster = make_cluster(failback="manual")
    serving(cluster)
    before = scrape(cluster, "backup")
    assert role(before) == "standby"
    cluster["main"].kill()
    cluster.wait_active(name="backup")
    after = wait_for(lambda: (lambda s: s if role(s) == "active" else None)(scrape(cluster, "backup")), 10, "backup's metrics to say active")
    assert value(after, "tandem_role_changes_total", role="active") == value(before, "tandem_role_changes_total", role="active") + 1
    assert value(after, "tandem_raft_term") > value(before, "tandem_raft_term")
    assert value(after, "tandem_raft_leader") == 1 and value(after, "tandem_peer_connected", peer="main") == 0
