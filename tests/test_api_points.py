"""The points API on real node processes: batches of field values, validation errors that name the field, standby answers."""

from __future__ import annotations

import http.client

import pytest

from cluster.cli import call_api
from cluster.processes import wait_for
from conftest import module_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("api")) as cluster:
        yield cluster


def post(cluster, node: str, body) -> tuple[int, dict]:
    return call_api(cluster.config, cluster[node].spec.api, "POST", "/api/v1/points", body)


def test_batch_is_applied_on_every_server(cluster):
    code, answer = post(cluster, "main", {"updates": [{"name": "ahu.t1", "value": 21.5}, {"name": "ahu.on", "value": True, "quality": "uncertain"}]})
    assert (code, answer) == (200, {"accepted": 2})
    commit = cluster["main"].view()["commit_index"]
    wait_for(lambda: (cluster["backup"].view() or {}).get("applied_index", 0) >= commit, 10, "backup to apply the batch")
    code, point = call_api(cluster.config, cluster["backup"].spec.api, "GET", "/api/v1/points/ahu.on")
    assert code == 200
    assert (point["value"], point["quality"], point["source"]) == (True, "uncertain", "api")


def test_source_timestamp_is_kept(cluster):
    code, _ = post(cluster, "main", {"updates": [{"name": "ahu.t2", "value": 1, "ts": 1700000000}]})
    assert code == 200
    code, point = call_api(cluster.config, cluster["main"].spec.api, "GET", "/api/v1/points/ahu.t2")
    assert point["timestamp"] == 1700000000.0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"updates": [{"name": "a", "value": 1}, {"name": "b", "value": 2, "quality": "fine"}]}, "updates[1].quality"),
        ({"updates": [{"name": "a b", "value": 1}]}, "updates[0].name"),
        ({"updates": [{"name": "a", "value": [1, 2]}]}, "updates[0].value"),
        ({"updates": [{"name": "a", "value": 1, "ts": "yesterday"}]}, "updates[0].ts"),
        ({"updates": [{"name": "a", "value": 1, "ts": 1e999}]}, "updates[0].ts"),
        ({"updates": [{"name": "a", "value": 1, "colour": "red"}]}, "updates[0]"),
        ({"updates": []}, "updates"),
        ({"updates": [{"name": "a"}]}, "updates[0]"),
        ([1, 2], "body"),
        ({"points": []}, "body"),
    ],
)
def test_bad_batches_are_refused_naming_the_field(cluster, body, field):
    code, answer = post(cluster, "main", body)
    assert code == 400
    assert answer["field"] == field and answer["error"].startswith(field)


def test_body_that_is_not_json_is_refused(cluster):
    host, port = cluster["main"].spec.api.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request("POST", "/api/v1/points", b"{not json", {"Authorization": f"Bearer {cluster.config.api_token}"})
    response = connection.getresponse()
    assert response.status == 400 and b"updates" in response.read()
    connection.close()


def test_too_many_updates_are_refused(cluster):
    code, answer = post(cluster, "main", {"updates": [{"name": f"p{i}", "value": i} for i in range(20_001)]})
    assert code == 400 and "20000" in answer["error"]


def test_standby_answers_409_naming_the_active(cluster):
    code, answer = post(cluster, "backup", {"updates": [{"name": "a", "value": 1}]})
    assert code == 409
    assert answer["active"] == "main" and answer["active_api"] == cluster["main"].spec.api


def test_witness_has_no_points_api(cluster):
    code, _ = post(cluster, "witness", {"updates": [{"name": "a", "value": 1}]})
    assert code in (404, 405)
