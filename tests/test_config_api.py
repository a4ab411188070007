"""POST /api/v1/config on real node processes: a building as NDJSON with progress, staged in bounded parts that become
visible at once (a standby never shows half of it), audited per kind; a JSON body over the limit and a bad line are
refused, naming what to do and where."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import module_cluster

from cluster.commands import MAX_PART_DOCUMENTS
from webmanager.tools.cli import call_api
from webmanager.tools.launcher import LocalCluster, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with module_cluster(tmp_path_factory.mktemp("config-api")) as cluster:
        yield cluster


def post(
    cluster: LocalCluster, body: bytes, content_type: str, headers: dict[str, str] | None = None, query: str = ""
) -> tuple[int, str, list[Any]]:
    """POST /api/v1/config to main; (status, content type, the answer's JSON values: one, or one per NDJSON line)."""
    host, port = cluster["main"].spec.api.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request("POST", "/api/v1/config" + query, body, {"Authorization": f"Bearer {cluster.config.api_token}", "Content-Type": content_type, **(headers or {})})
    response = connection.getresponse()
    kind = response.headers.get_content_type()
    text = response.read().decode()
    return response.status, kind, [json.loads(line) for line in text.splitlines()] if kind == "application/x-ndjson" else [json.loads(text)]


def points(count: int, prefix: str = "hall.p") -> list[dict[str, Any]]:
    return [{"name": f"{prefix}{i}", "writable": True} for i in range(count)]


def lines(building: dict[str, list[dict[str, Any]]]) -> bytes:
    return gzip.compress("\n".join(json.dumps({section: entry}) for section, entries in building.items() for entry in entries).encode())


def test_a_building_as_ndjson_is_staged_in_parts_with_progress_and_audited_per_kind(cluster):
    count = 2 * MAX_PART_DOCUMENTS + 100
    status, kind, answer = post(cluster, lines({"points": points(count)}), "application/x-ndjson", {"Content-Encoding": "gzip", "Accept": "application/x-ndjson"})
    assert (status, kind) == (200, "application/x-ndjson")
    steps = [line["progress"]["step"] for line in answer[:-1]]
    assert steps == ["received", "validated", "planned", "committed", "committed", "committed"], answer
    assert answer[2]["progress"] == {"step": "planned", "changed": count, "parts": 3}
    assert [line["progress"]["part"] for line in answer[3:-1]] == [1, 2, 3]
    assert answer[-1] == {"changed": count, "status": 200}
    code, audit = call_api(cluster.config, cluster["main"].spec.api, "GET", "/api/v1/audit?limit=10000")
    assert code == 200
    assert [(entry["action"], entry["target"]) for entry in audit["entries"][-1:]] == [("apply", "points")]
    assert audit["entries"][-1]["detail"].startswith(f"{count} put, 0 deleted (change ")


def test_a_standby_shows_a_staged_change_whole_or_not_at_all(cluster):
    before = len(config(cluster, "main")["points"])
    wait_for(lambda: len(config(cluster, "backup")["points"]) == before, 10, "the backup to hold the building main holds")
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(len(config(cluster, "backup")["points"]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        status, _, answer = post(cluster, lines({"points": points(20_000, "wing.p")}), "application/x-ndjson", {"Content-Encoding": "gzip"})
    finally:
        done.set()
        watcher.join()
    assert status == 200 and answer == [{"changed": 20_000 + before}], answer  # the hall points are deleted: not in this building
    assert len(seen) >= 3, "the watcher looked too seldom to see anything in between"
    assert set(seen) <= {before, 20_000}, f"the backup showed {sorted(set(seen))} points, between {before} and 20000"


def config(cluster: LocalCluster, node: str) -> dict[str, Any]:
    code, building = call_api(cluster.config, cluster[node].spec.api, "GET", "/api/v1/config", timeout=60)
    assert code == 200, building
    return building


def test_a_json_body_over_8_mib_is_refused_naming_ndjson(cluster):
    body = json.dumps({"points": points(120_000, "a-long-name-for-a-point-to-make-the-body-big.")}).encode()
    assert len(body) > 8 * 2**20
    status, _, [answer] = post(cluster, body, "application/json")
    assert status == 413 and "application/x-ndjson" in answer["error"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"points": {"name": "a"}}\nnot json\n', "line 2: not JSON"),
        (b'{"points": {"name": "a"}}\n[1, 2]\n', 'line 2: expected one {"section": entry} object'),
        (b'{"points": {"name": "a"}, "devices": {"name": "b"}}\n', 'line 1: expected one {"section": entry} object'),
    ],
)
def test_a_bad_ndjson_line_is_refused_naming_it(cluster, body, says):
    status, _, [answer] = post(cluster, body, "application/x-ndjson")
    assert status == 400 and answer["error"].startswith(says), answer


def test_an_ndjson_entry_error_names_the_section_and_index(cluster):
    body = b'{"points": {"name": "ok"}}\n{"points": {"name": "bad", "deadband": -1}}\n'
    status, _, [answer] = post(cluster, body, "application/x-ndjson")
    assert status == 400 and answer["problems"] == ["points[1].deadband: Input should be greater than or equal to 0"]


def test_one_section_is_read_and_changed_alone_with_references_checked_against_the_image(cluster):
    points = len(config(cluster, "main")["points"])
    rule = {"name": "wing-copy", "output": "wing.p1", "expression": 'p("wing.p0") * 2'}
    status, _, [answer] = post(cluster, json.dumps({"logic": [rule]}).encode(), "application/json", query="?kinds=logic")
    assert (status, answer) == (200, {"changed": 1})
    code, logic = call_api(cluster.config, cluster["main"].spec.api, "GET", "/api/v1/config?kinds=logic")
    assert code == 200 and list(logic) == ["logic"] and logic["logic"][0]["output"] == "wing.p1"
    assert len(config(cluster, "main")["points"]) == points  # the points were not sent, and not changed
    wrong = {**rule, "expression": 'p("wing.nowhere")'}
    status, _, [answer] = post(cluster, json.dumps({"logic": [wrong]}).encode(), "application/json", query="?kinds=logic")
    assert status == 400 and answer["problems"] == ["logic[0].expression: line 1, column 3: unknown point 'wing.nowhere'"]
    status, _, [answer] = post(cluster, json.dumps({"points": []}).encode(), "application/json", query="?kinds=logic")
    assert status == 400 and answer["problems"] == ["points: no such section; this change has logic"]
    code, answer = call_api(cluster.config, cluster["main"].spec.api, "GET", "/api/v1/config?kinds=logic,sprinklers")
    assert code == 400 and answer["error"].startswith("kinds: sprinklers; the sections are devices, points, notifiers")
