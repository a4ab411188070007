"""Logic on real node processes: a running on-delay continues across a failover from its replicated start; a broken
rule is disabled and reported while the others keep running, and runs again once its rule is changed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from conftest import apply_building, point_view, put, tandem_cli

from webmanager.tools.cli import call_api
from webmanager.tools.launcher import holds_for, wait_for

BUILDING = """
[[points]]
name = "a"
writable = true

[[points]]
name = "b"
writable = true

[[points]]
name = "out"
writable = true

[[points]]
name = "ratio"
writable = true

[[points]]
name = "twice"
writable = true

[[logic]]
name = "delayed"
output = "out"
expression = 'on_delay(p("a") > 0, 4)'

[[logic]]
name = "ratio"
output = "ratio"
expression = '100 / p("b")'

[[logic]]
name = "twice"
output = "twice"
expression = '''
  p("a") * 2
'''
"""
TIMER = "on_delay@1:1"


def rules(cluster, node: str) -> dict[str, dict[str, Any]]:
    code, answer = call_api(cluster.config, cluster[node].spec.api, "GET", "/api/v1/logic")
    assert code == 200, answer
    return {rule["name"]: rule for rule in answer["rules"]}


def journal(cluster, node: str) -> list[dict]:
    code, answer = call_api(cluster.config, cluster[node].spec.api, "GET", "/api/v1/logic/journal")
    assert code == 200, answer
    return answer["entries"]


def value_on(cluster, node: str, point: str, value: Any) -> dict[str, Any] | None:
    """The point as `node` serves it once it holds `value` (of the same type), else None."""
    view = point_view(cluster, node, point)
    return view if view and type(view["value"]) is type(value) and view["value"] == value else None


def applied(cluster, text: str, directory: Path) -> None:
    """Apply the building through the active server, retrying while a loaded machine moves the active role."""
    wait_for(lambda: apply_building(cluster, text, directory).returncode == 0, 30, "an active server to apply the building")


def test_an_on_delay_running_across_a_failover_continues_from_its_replicated_start(make_cluster, tmp_path):
    cluster = make_cluster()
    cluster.wait_active(30, name="main")  # the backup hands back if it won the first election
    applied(cluster, BUILDING, tmp_path)
    put(cluster, "a", 0)
    wait_for(lambda: value_on(cluster, "backup", "out", False), 10, "the rule writing out = false")
    put(cluster, "a", 1)
    since = wait_for(lambda: rules(cluster, "backup")["delayed"]["state"].get(TIMER, {}).get("since"), 10, "the timer start replicated")
    assert value_on(cluster, "backup", "out", False)
    wait_for(lambda: time.time() >= since + 2, 5, "the timer half way")
    cluster["main"].kill()
    assert cluster.wait_active(10) == "backup"
    out = wait_for(lambda: value_on(cluster, "backup", "out", True), 15, "the backup turning out on")
    activated = cluster["backup"].view()["activation"]["since"]
    assert out["timestamp"] >= since + 4 - 0.05, "turned on before its delay"
    assert out["timestamp"] < activated + 4, "the delay restarted on the new active instead of continuing"
    assert out["timestamp"] <= max(since + 4, activated) + 1.5, "the new active did not finish the delay on time"
    assert rules(cluster, "backup")["delayed"]["state"] == {TIMER: {"since": since}}  # the start the old active stamped


def test_a_broken_rule_is_disabled_and_reported_while_the_others_keep_running(make_cluster, tmp_path):
    cluster = make_cluster()
    applied(cluster, BUILDING, tmp_path)
    put(cluster, "b", 0)
    put(cluster, "a", 3)
    wait_for(lambda: value_on(cluster, "backup", "twice", 6), 10, "twice = 6")
    broken = wait_for(lambda: rules(cluster, "backup")["ratio"]["disabled"], 10, "the ratio rule disabled")
    assert broken == "ZeroDivisionError: division by zero"
    assert [(e["rule"], e["event"], e["error"]) for e in journal(cluster, "backup")] == [("ratio", "disabled", broken)]
    put(cluster, "a", 5)
    wait_for(lambda: value_on(cluster, "main", "twice", 10), 10, "the other rule still following its input")
    put(cluster, "b", 4)
    listed = json.loads(tandem_cli(cluster, "logic", "--json", cwd=tmp_path).stdout)
    assert {rule["name"]: rule["disabled"] for rule in listed} == {"delayed": None, "ratio": broken, "twice": None}
    holds_for(lambda: point_view(cluster, "main", "ratio") is None, 1.0, "a disabled rule writing nothing, even with its input fine")
    applied(cluster, BUILDING.replace('100 / p("b")', '100 / max(p("b"), 1)'), tmp_path)
    wait_for(lambda: value_on(cluster, "backup", "ratio", 25.0), 10, "the changed rule running again")
    assert rules(cluster, "backup")["ratio"]["disabled"] is None and rules(cluster, "backup")["ratio"]["version"] == 2
