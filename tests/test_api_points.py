"""The points API on real node processes: batches of field values, validation errors that name the field, standby answers,
and paging through the points of a big building."""

from __future__ import annotations

import http.client
import json
import random
import urllib.parse

import pytest
from conftest import module_cluster

from cluster.names import MAX_NAME_LENGTH
from webmanager.appkeys import MAX_BATCH
from webmanager.tools.cli import call_api
from webmanager.tools.launcher import wait_for


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


def get(cluster, node: str, path: str) -> tuple[int, dict]:
    return call_api(cluster.config, cluster[node].spec.api, "GET", path)


def test_points_are_listed_sorted_filtered_and_limited(cluster):
    names = ["list.b", "list.a", "list.c", "other.list"]
    assert post(cluster, "main", {"updates": [{"name": name, "value": i} for i, name in enumerate(names)]})[0] == 200
    code, answer = get(cluster, "main", "/api/v1/points?prefix=list.")
    assert code == 200 and [p["name"] for p in answer["points"]] == ["list.a", "list.b", "list.c"] and answer["total"] == 3
    assert answer["points"][0]["value"] == 1 and answer["points"][0]["quality"] == "good"
    code, answer = get(cluster, "main", "/api/v1/points?search=LIST&limit=2")
    assert code == 200 and [p["name"] for p in answer["points"]] == ["list.a", "list.b"] and answer["total"] == 4
    for query in ("limit=0", "limit=10001", "limit=many"):
        code, answer = get(cluster, "main", f"/api/v1/points?{query}")
        assert code == 400 and "limit" in answer["error"], query


def pages(cluster, node: str, query: dict[str, str | int]) -> tuple[list[str], set[int]]:
    """Every name GET /api/v1/points answers for `query`, page by page (each page's `next` is the following `after`), and
    the totals the pages gave."""
    names: list[str] = []
    totals: set[int] = set()
    cursor: dict[str, str] = {}
    while True:
        code, answer = get(cluster, node, f"/api/v1/points?{urllib.parse.urlencode({**query, **cursor})}")
        assert code == 200, answer
        names += [point["name"] for point in answer["points"]]
        totals.add(answer["total"])
        if answer["next"] is None:
            return names, totals
        assert answer["next"] == names[-1] and len(answer["points"]) == query["limit"]
        cursor = {"after": answer["next"]}


def test_paging_through_25000_points_visits_each_once_in_order_with_prefix_and_search(cluster):
    names = [f"big.f{floor}.Room{room:03d}.{kind}" for floor in range(5) for room in range(1000) for kind in ("Temp", "sp", "co2", "occ", "valve")]
    random.Random(13).shuffle(names)  # reported in no particular order
    for start in range(0, len(names), MAX_BATCH):
        assert post(cluster, "main", {"updates": [{"name": name, "value": 1.0} for name in names[start : start + MAX_BATCH]]})[0] == 200
    commit = cluster["main"].view()["commit_index"]
    wait_for(lambda: (cluster["backup"].view() or {}).get("applied_index", 0) >= commit, 10, "backup to apply the batches")
    names.sort()
    for node, query, expected in [
        ("main", {"prefix": "big.", "limit": 1000}, names),
        ("backup", {"prefix": "big.f3.", "limit": 333}, [name for name in names if name.startswith("big.f3.")]),
        ("main", {"prefix": "big.", "search": "room04", "limit": 100}, [name for name in names if "room04" in name.lower()]),
        ("backup", {"prefix": "big.f1", "search": "TEMP", "limit": 10_000}, [name for name in names if name.startswith("big.f1") and "temp" in name.lower()]),
    ]:
        seen, totals = pages(cluster, node, query)
        assert seen == expected and totals == {len(expected)}, (node, query)
    everything, _ = pages(cluster, "main", {"limit": 10_000})
    assert everything == sorted(set(everything)) and [name for name in everything if name.startswith("big.")] == names
    code, answer = get(cluster, "main", "/api/v1/points?prefix=big.&after=big.zzz")
    assert (code, answer["points"], answer["total"], answer["next"]) == (200, [], len(names), None)
    for query in ("after=", f"after={'a' * (MAX_NAME_LENGTH + 1)}"):
        code, answer = get(cluster, "main", f"/api/v1/points?{query}")
        assert code == 400 and "'after'" in answer["error"], query


BUILDING = {
    "devices": [{"name": "plant", "driver": "modbus", "host": "127.0.0.1", "port": 1, "poll_interval": 0.2, "timeout": 0.2}],
    "points": [{"name": "plant.temp", "device": "plant", "register": "holding", "address": 0}, {"name": "plant.mode", "writable": True}],
    "logic": [{"name": "follow", "output": "plant.mode", "expression": 'p("plant.temp") > 20'}],
}


def test_devices_show_the_health_the_active_sees_on_every_server(cluster):
    code, answer = call_api(cluster.config, cluster["main"].spec.api, "POST", "/api/v1/config", BUILDING)
    assert code == 200, answer
    for node in ("main", "backup"):  # nobody listens on port 1: the device's point has no communication; its driver runs
        def failing() -> dict | None:
            code, answer = get(cluster, node, "/api/v1/devices")
            device = answer["devices"][0] if code == 200 and answer["devices"] else None
            return answer if device and device["qualities"] == {"comm-failure": 1} and answer["health_from"] == "main" else None

        answer = wait_for(failing, 15, f"{node} to show the device failing")
        device = answer["devices"][0]
        assert (device["name"], device["driver"], device["host"], device["points"], device["running"], device["error"]) == ("plant", "modbus", "127.0.0.1", 1, True, None)
    assert post(cluster, "main", {"updates": [{"name": "plant.mode", "value": False}]})[0] == 200
    code, answer = get(cluster, "main", "/api/v1/points?prefix=plant.mode")
    assert [(p["device"], p["writable"]) for p in answer["points"]] == [(None, True)]


def test_plugins_are_listed_with_what_they_registered(cluster):
    code, answer = get(cluster, "backup", "/api/v1/plugins")
    assert code == 200 and answer["node"] == "backup" and answer["problems"] == []
    assert set(answer["required"]) == set(answer["loaded"]) and "modbus" in answer["loaded"]
    assert {"name": "modbus", "plugin": "modbus"} in answer["drivers"] and {"name": "logic", "plugin": "logic"} in answer["functions"]
    assert {"name": "mail", "plugin": "mail"} in answer["notifiers"] and {"name": "webhook", "plugin": "webhook"} in answer["notifiers"]


def test_a_configuration_check_validates_on_any_server_and_commits_nothing(cluster):
    assert call_api(cluster.config, cluster["main"].spec.api, "POST", "/api/v1/config", BUILDING)[0] == 200
    changed = {**BUILDING, "logic": [{**BUILDING["logic"][0], "expression": 'p("plant.temp") > 25'}]}
    for node in ("main", "backup"):
        code, answer = call_api(cluster.config, cluster[node].spec.api, "POST", "/api/v1/config?check=1", changed)
        assert (code, answer) == (200, {"changed": 1, "checked": True}), node
    broken = {**BUILDING, "logic": [{**BUILDING["logic"][0], "expression": 'p("plant.tmp") >'}]}
    code, answer = call_api(cluster.config, cluster["backup"].spec.api, "POST", "/api/v1/config?check=1", broken)
    assert code == 400 and any(problem.startswith("logic[0].expression") for problem in answer["problems"]), answer
    code, building = get(cluster, "main", "/api/v1/config")
    assert building["logic"][0]["expression"] == BUILDING["logic"][0]["expression"]  # a check commits nothing
    assert call_api(cluster.config, cluster["backup"].spec.api, "POST", "/api/v1/config", changed)[0] == 409


def test_a_stale_if_match_is_refused_so_an_editor_does_not_undo_what_it_did_not_see(cluster):
    host, port = cluster["main"].spec.api.rsplit(":", 1)
    headers = {"Authorization": f"Bearer {cluster.config.api_token}", "Content-Type": "application/json"}

    def send(method: str, body: dict | None = None, **extra: str) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request(method, "/api/v1/config", None if body is None else json.dumps(body), {**headers, **extra})
        response = connection.getresponse()
        response.body = json.loads(response.read())
        connection.close()
        return response

    assert send("POST", BUILDING).status == 200
    read = send("GET")
    etag = read.headers["ETag"]
    assert read.status == 200 and etag.startswith('"') and send("GET").headers["ETag"] == etag  # the same until a change
    other = {**BUILDING, "logic": [{**BUILDING["logic"][0], "expression": 'p("plant.temp") > 30'}]}
    assert send("POST", other, **{"If-Match": etag}).status == 200  # somebody else's change, made from the same read
    mine = {**read.body, "points": read.body["points"] + [{"name": "plant.extra"}]}  # built from the older read
    refused = send("POST", mine, **{"If-Match": etag})
    assert refused.status == 412 and "changed since you read it" in refused.body["error"]
    assert send("GET").body["logic"][0]["expression"] == 'p("plant.temp") > 30'  # not undone
