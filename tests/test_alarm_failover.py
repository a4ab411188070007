"""Alarms on real node processes across failover and fail-back: one notification per event, acknowledgements that
follow the active server, identical journals, on-delay and shelving on the running function."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import apply_building, tandem_cli

from webmanager.tools.cli import call_api
from webmanager.tools.launcher import holds_for, wait_for

BUILDING = """
[[points]]
name = "room.temp"
writable = true

[[notifiers]]
name = "ops"
notifier = "webhook"
url = "{url}"

[[alarms]]
name = "room-hot"
point = "room.temp"
type = "high"
limit = 25.0
deadband = 0.5
priority = 10
class = "comfort"
message = "room too warm"

[[alarms]]
name = "room-cold"
point = "room.temp"
type = "low"
limit = 15.0
delay = 1.5
"""


class Sink:
    """A real webhook receiver on loopback: records every POST; answers `status`."""

    def __init__(self) -> None:
        self.status = 200
        self.received: list[tuple[int, str, dict]] = []  # (status answered, Idempotency-Key, event)
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                sink.received.append((sink.status, self.headers.get("Idempotency-Key", ""), event))
                self.send_response(sink.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict]:
        return [event for status, _, event in self.received if status < 300]


@pytest.fixture
def sink() -> Iterator[Sink]:
    receiver = Sink()
    yield receiver
    receiver.server.shutdown()


def alarms(cluster, node: str) -> dict[str, Any]:
    code, answer = call_api(cluster.config, cluster[node].spec.api, "GET", "/api/v1/alarms")
    assert code == 200, answer
    return answer


def alarm(cluster, node: str, name: str) -> dict[str, Any]:
    return next(a for a in alarms(cluster, node)["alarms"] if a["name"] == name)


def journal(cluster, node: str) -> list[dict]:
    code, answer = call_api(cluster.config, cluster[node].spec.api, "GET", "/api/v1/alarms/journal")
    assert code == 200, answer
    return answer["entries"]


def put(cluster, value: float, cwd: Path) -> None:
    result = tandem_cli(cluster, "put", "room.temp", str(value), cwd=cwd)
    assert result.returncode == 0, result.stderr


def building_applied(cluster, sink: Sink, tmp_path: Path) -> None:
    applied = apply_building(cluster, BUILDING.format(url=sink.url), tmp_path)
    assert applied.returncode == 0, applied.stderr
    wait_for(lambda: alarms(cluster, "backup")["notifiers"]["ops"]["delivered"] is not None, 10, "the notifier to start")


def test_alarm_acknowledged_on_the_backup_is_acknowledged_on_main_after_fail_back(make_cluster, sink, tmp_path):
    cluster = make_cluster(cluster={"failback_holdoff": 0.5})
    cluster.wait_active(name="main")
    building_applied(cluster, sink, tmp_path)
    put(cluster, 30.0, tmp_path)
    wait_for(lambda: alarms(cluster, "backup")["notifiers"]["ops"]["behind"] == 0 and sink.delivered(), 10, "the raise notified and recorded")
    assert alarm(cluster, "backup", "room-hot")["state"] == "active-unacked"

    cluster["main"].kill()
    assert cluster.wait_active(5) == "backup"
    acked = tandem_cli(cluster, "ack", "room-hot", "--user", "alice", "--comment", "window open", cwd=tmp_path)
    assert acked.returncode == 0, acked.stderr
    assert "room-hot: active-acked" in acked.stdout

    cluster.start("main")
    cluster.wait_active(30, name="main")  # caught up, then handed back
    on_main = alarm(cluster, "main", "room-hot")
    assert on_main["state"] == "active-acked" and on_main["ack"]["user"] == "alice" and on_main["ack"]["comment"] == "window open"
    holds_for(lambda: len(sink.received) == 1, 1.5, "one notification in total")
    assert sink.delivered()[0]["event"] == "raised" and sink.delivered()[0]["alarm"] == "room-hot"
    wait_for(lambda: journal(cluster, "main") == journal(cluster, "backup"), 5, "identical journals")
    assert [(e["alarm"], e["event"]) for e in journal(cluster, "main")] == [("room-hot", "raised"), ("room-hot", "acked")]


def test_an_event_the_receiver_refused_is_delivered_once_by_the_new_active(make_cluster, sink, tmp_path):
    cluster = make_cluster(failback="manual")
    building_applied(cluster, sink, tmp_path)
    sink.status = 503
    put(cluster, 30.0, tmp_path)
    wait_for(lambda: sink.received, 10, "main trying to notify")
    cluster["main"].kill()
    sink.status = 200
    assert cluster.wait_active(5) == "backup"
    delivered = wait_for(sink.delivered, 15, "the backup delivering the event")
    holds_for(lambda: len(sink.delivered()) == 1, 1.0, "delivered once")
    keys = {key for _, key, _ in sink.received}
    assert keys == {str(delivered[0]["id"])}  # every attempt carried the same idempotency key
    assert alarms(cluster, "backup")["notifiers"]["ops"]["behind"] == 0


def test_on_delay_deadband_and_shelving_on_the_running_function(make_cluster, sink, tmp_path):
    cluster = make_cluster(failback="manual")
    building_applied(cluster, sink, tmp_path)
    put(cluster, 10.0, tmp_path)
    holds_for(lambda: alarm(cluster, "main", "room-cold")["state"] == "normal", 1.0, "room-cold waiting out its on-delay")
    wait_for(lambda: alarm(cluster, "main", "room-cold")["state"] == "active-unacked", 5, "room-cold raised after 1.5 s")
    put(cluster, 26.0, tmp_path)
    wait_for(lambda: alarm(cluster, "main", "room-hot")["state"] == "active-unacked", 5, "room-hot raised")
    assert alarm(cluster, "main", "room-cold")["state"] == "returned-unacked"
    put(cluster, 24.8, tmp_path)  # inside the deadband: still active
    holds_for(lambda: alarm(cluster, "main", "room-hot")["state"] == "active-unacked", 1.0, "room-hot held by its deadband")
    shelved = tandem_cli(cluster, "shelve", "room-cold", "--minutes", "0.03", cwd=tmp_path)  # 1.8 s
    assert shelved.returncode == 0, shelved.stderr
    put(cluster, 10.0, tmp_path)
    holds_for(lambda: alarm(cluster, "main", "room-cold")["state"] == "returned-unacked", 1.0, "a shelved alarm not raised")
    wait_for(lambda: alarm(cluster, "main", "room-cold")["state"] == "active-unacked", 5, "raised once the shelf expired")
    cold = [e["event"] for e in journal(cluster, "main") if e["alarm"] == "room-cold"]
    assert cold == ["raised", "returned", "shelved", "unshelved", "raised"]
    listed = tandem_cli(cluster, "alarms", "--json", cwd=tmp_path)
    assert [a["name"] for a in json.loads(listed.stdout)] == ["room-hot", "room-cold"]  # priority 10 before 100


def test_the_journal_keeps_its_entries_for_journal_days(make_cluster, sink, tmp_path):
    cluster = make_cluster(failback="manual", cluster={"journal_days": 2 / 86_400})  # two seconds
    building_applied(cluster, sink, tmp_path)
    put(cluster, 30.0, tmp_path)
    raised = wait_for(lambda: journal(cluster, "main"), 5, "room-hot raised")
    assert [(e["seq"], e["event"]) for e in raised] == [(1, "raised")]
    wait_for(lambda: time.time() > raised[0]["ts"] + 2.5, 5, "the raise to grow older than two seconds")
    put(cluster, 20.0, tmp_path)
    wait_for(lambda: [(e["seq"], e["event"]) for e in journal(cluster, "backup")] == [(2, "returned")], 5, "the raise pruned, numbering kept")
