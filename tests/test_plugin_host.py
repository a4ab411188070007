"""The plugin host on real node processes: a third-party driver found by entry point runs only on the active server,
follows failover and fail-back, is isolated when it fails, and a server missing a required plugin never becomes active."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from conftest import apply_building, confirmed_write, point_view, tandem_cli

from cluster.guard import read_acts
from webmanager.tools.launcher import holds_for, wait_for

BUILDING = """
[[devices]]
name = "c1"
driver = "counter"
period = 0.05

[[devices]]
name = "c2"
driver = "counter"
period = 0.05
{c2_extra}

[[points]]
name = "c1.n"
device = "c1"

[[points]]
name = "c2.n"
device = "c2"
step = 10

[[points]]
name = "setpoint"
writable = true
"""


def apply(cluster, tmp_path: Path, c2_extra: str = "") -> subprocess.CompletedProcess[str]:
    return apply_building(cluster, BUILDING.format(c2_extra=c2_extra), tmp_path)


def counting_on(cluster, node: str, name: str) -> bool:
    """The point's value changes in the node's image within a second (a new active's counter starts again at 1)."""
    first = wait_for(lambda: point_view(cluster, node, name), 10, f"{name} on {node}")["value"]
    return bool(wait_for(lambda: point_view(cluster, node, name)["value"] != first, 1.0, f"{name} changing on {node}"))


def device_status(cluster, node: str) -> dict:
    return (cluster[node].view() or {}).get("plugins", {}).get("devices", {})


def test_driver_runs_on_the_active_only_and_follows_failover(make_cluster, example_plugin, tmp_path):
    env = {"PYTHONPATH": str(example_plugin)}
    cluster = make_cluster(cluster={"plugins": ["example"]}, envs={"main": env, "backup": env})
    cluster.wait_active(name="main")
    result = apply(cluster, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "5 document(s) changed" in result.stdout
    assert counting_on(cluster, "main", "c1.n") and counting_on(cluster, "backup", "c2.n")
    assert point_view(cluster, "backup", "c1.n")["source"] == "counter:c1"
    assert set(device_status(cluster, "main")) == {"c1", "c2"} and device_status(cluster, "backup") == {}
    assert cluster["main"].view()["plugins"]["loaded"] == ["example"]
    assert cluster["witness"].view().get("plugins") is None  # the witness runs no plugins

    again = apply(cluster, tmp_path)
    assert again.returncode == 0 and "already applied" in again.stdout

    cluster["main"].kill()
    assert cluster.wait_active(5) == "backup"
    assert counting_on(cluster, "backup", "c1.n")
    cluster["main"].start()
    assert cluster.wait_active(15, "main") == "main"
    wait_for(lambda: device_status(cluster, "backup") == {}, 1.0, "backup to stop its drivers")
    assert counting_on(cluster, "main", "c2.n")
    main_term = cluster["main"].view()["term"]
    main_first = min(a["wall"] for a in read_acts(cluster["main"].spec.data_dir / "acts.log") if a["term"] == main_term)
    backup_counts = [a for a in read_acts(cluster["backup"].spec.data_dir / "acts.log") if a["what"].startswith("count")]
    assert backup_counts and max(a["wall"] for a in backup_counts) < main_first


def test_a_driver_failing_at_start_or_while_running_is_isolated_and_reported(make_cluster, example_plugin, tmp_path):
    env = {"PYTHONPATH": str(example_plugin)}
    cluster = make_cluster(cluster={"plugins": ["example"]}, envs={"main": env, "backup": env})
    cluster.wait_active(name="main")
    assert apply(cluster, tmp_path, c2_extra="fail_at_start = true").returncode == 0
    wait_for(lambda: "no licence" in (device_status(cluster, "main").get("c2", {}).get("error") or ""), 10, "c2's start error in status")
    assert device_status(cluster, "main")["c2"]["running"] is False
    status = tandem_cli(cluster, "status", cwd=tmp_path)
    assert "main: device c2: " in status.stdout and "no licence" in status.stdout
    assert counting_on(cluster, "main", "c1.n")
    assert apply(cluster, tmp_path, c2_extra="fail_after = 3").returncode == 0
    wait_for(lambda: "gave up after 3 counts" in (device_status(cluster, "main").get("c2", {}).get("error") or ""), 10, "c2's error in status")
    assert counting_on(cluster, "main", "c1.n")
    assert cluster.active() == "main"
    assert cluster.log("main").count("gave up after 3 counts") == 1  # logged once, though it is restarted and fails again


def test_a_reading_the_log_cannot_hold_makes_only_its_point_bad(make_cluster, example_plugin, tmp_path):
    env = {"PYTHONPATH": str(example_plugin)}
    cluster = make_cluster(cluster={"plugins": ["example"]}, envs={"main": env, "backup": env})
    cluster.wait_active(name="main")
    building = '[[devices]]\nname = "c1"\ndriver = "counter"\n\n[[points]]\nname = "c1.n"\ndevice = "c1"\n\n'
    building += '[[points]]\nname = "c1.nan"\ndevice = "c1"\nbroken = true\n'
    assert apply_building(cluster, building, tmp_path).returncode == 0
    assert counting_on(cluster, "backup", "c1.n")  # the batches with the NaN in them went in, without it
    assert point_view(cluster, "backup", "c1.nan")["quality"] == "bad" and point_view(cluster, "backup", "c1.nan")["value"] is None
    assert cluster.log("main").count("point c1.nan: reading nan from counter:c1 refused") == 1  # logged once, not per batch


def test_bad_building_file_is_refused_naming_file_and_key(make_cluster, example_plugin, tmp_path):
    env = {"PYTHONPATH": str(example_plugin)}
    cluster = make_cluster(cluster={"plugins": ["example"]}, envs={"main": env, "backup": env})
    cluster.wait_active(name="main")
    result = apply(cluster, tmp_path, c2_extra="colour = 'red'")
    assert result.returncode == 2
    assert f"{tmp_path / 'building.toml'}: devices[1].colour: Extra inputs are not permitted" in result.stderr
    assert "driver" not in tandem_cli(cluster, "config", "export", cwd=tmp_path).stdout  # nothing was applied


def test_config_export_round_trips(make_cluster, example_plugin, tmp_path):
    env = {"PYTHONPATH": str(example_plugin)}
    cluster = make_cluster(cluster={"plugins": ["example"]}, envs={"main": env, "backup": env})
    cluster.wait_active(name="main")
    assert apply(cluster, tmp_path).returncode == 0
    exported = tandem_cli(cluster, "config", "export", cwd=tmp_path)
    assert exported.returncode == 0 and 'driver = "counter"' in exported.stdout
    (tmp_path / "exported.toml").write_text(exported.stdout)
    again = tandem_cli(cluster, "config", "apply", str(tmp_path / "exported.toml"), cwd=tmp_path)
    assert again.returncode == 0 and "already applied" in again.stdout


def test_a_server_without_a_required_plugin_never_becomes_active(make_cluster, example_plugin, tmp_path):
    cluster = make_cluster(cluster={"plugins": ["example"]}, envs={"main": {"PYTHONPATH": str(example_plugin)}})
    cluster.wait_active(name="main")
    blocked = wait_for(lambda: (cluster["backup"].view() or {}).get("blocked"), 10, "backup to report why it is blocked")
    assert "example" in blocked
    assert [p["plugin"] for p in cluster["backup"].view()["plugins"]["problems"]] == ["example"]
    status = tandem_cli(cluster, "status", cwd=tmp_path)
    assert status.returncode == 0 and "backup: plugin example failed at load" in status.stdout
    cluster["main"].kill()
    holds_for(lambda: cluster.active() is None, 3.0, "no active while the only live server lacks a plugin")
    cluster["main"].start()
    assert cluster.wait_active(15, "main") == "main"


SETPOINT = """
[[devices]]
name = "c1"
driver = "counter"
period = 0.05
write_delay = {delay}

[[points]]
name = "c1.sp"
device = "c1"
step = 0
writable = true

[[points]]
name = "c1.n"
device = "c1"
"""


def apply_setpoint(cluster, tmp_path: Path, delay: float) -> None:
    result = apply_building(cluster, SETPOINT.format(delay=delay), tmp_path, "setpoint.toml")
    assert result.returncode == 0, result.stderr


def writes_of(cluster, node: str, point: str) -> list[dict]:
    return [a for a in read_acts(cluster[node].spec.data_dir / "acts.log") if a["what"].startswith(f"write {point} ")]


def test_operator_write_is_committed_then_driven_to_the_device_once(make_cluster, example_plugin, tmp_path):
    env = {"PYTHONPATH": str(example_plugin)}
    cluster = make_cluster(cluster={"plugins": ["example"]}, envs={"main": env, "backup": env})
    cluster.wait_active(name="main")
    apply_setpoint(cluster, tmp_path, delay=0.0)
    result = tandem_cli(cluster, "put", "c1.sp", "7", cwd=tmp_path)
    assert result.returncode == 0 and "c1.sp = 7 (committed; the active drives the device" in result.stdout
    wait_for(lambda: (point_view(cluster, "backup", "c1.sp") or {}).get("value") == 7, 10, "the read-back of 7 on the backup")
    assert point_view(cluster, "backup", "c1.sp")["desired"] is None
    assert len(writes_of(cluster, "main", "c1.sp")) == 1
    cluster["main"].kill()
    assert cluster.wait_active(5) == "backup"
    assert counting_on(cluster, "backup", "c1.n")
    holds_for(lambda: writes_of(cluster, "backup", "c1.sp") == [], 1.0, "backup not repeating a confirmed write")


def test_write_outstanding_at_failover_is_driven_once_by_the_new_active(make_cluster, example_plugin, tmp_path):
    env = {"PYTHONPATH": str(example_plugin)}
    cluster = make_cluster(cluster={"plugins": ["example"]}, envs={"main": env, "backup": env}, failback="manual")
    cluster.wait_active(name="main")
    apply_setpoint(cluster, tmp_path, delay=3.0)  # main is killed in the middle of its write
    assert tandem_cli(cluster, "put", "c1.sp", "9", cwd=tmp_path).returncode == 0
    wait_for(lambda: (point_view(cluster, "backup", "c1.sp") or {}).get("desired"), 10, "the desired write to reach the backup")
    cluster["main"].kill()
    assert writes_of(cluster, "main", "c1.sp") == []  # main never got to the device
    assert cluster.wait_active(5) == "backup"
    confirmed = wait_for(lambda: confirmed_write(cluster, "backup", "c1.sp", 9), 10, "backup to drive and confirm the write")
    assert confirmed["source"] == "counter:c1"
    assert [a["what"] for a in writes_of(cluster, "backup", "c1.sp")] == ["write c1.sp = 9"]


def test_paused_active_never_polls_after_the_new_active_began(make_cluster, example_plugin, tmp_path):
    env = {"PYTHONPATH": str(example_plugin)}
    cluster = make_cluster(cluster={"plugins": ["example"]}, envs={"main": env, "backup": env}, failback="manual")
    cluster.wait_active(name="main")
    assert apply(cluster, tmp_path).returncode == 0
    assert counting_on(cluster, "main", "c1.n")
    cluster["main"].signal(signal.SIGSTOP)
    assert cluster.wait_active(5) == "backup"
    assert counting_on(cluster, "backup", "c1.n")
    cluster["main"].signal(signal.SIGCONT)
    wait_for(lambda: (cluster["main"].view() or {}).get("role") == "standby", 10, "main to resume as a standby")
    wait_for(lambda: device_status(cluster, "main") == {}, 1.0, "main to stop its drivers")
    backup_term = cluster["backup"].view()["term"]
    backup_first = min(a["wall"] for a in read_acts(cluster["backup"].spec.data_dir / "acts.log") if a["term"] == backup_term)
    main_counts = [a["wall"] for a in read_acts(cluster["main"].spec.data_dir / "acts.log") if a["what"].startswith("count")]
    assert main_counts and max(main_counts) < backup_first


def test_a_main_without_a_required_plugin_gets_no_fail_back_and_no_transfer(make_cluster, example_plugin, tmp_path):
    cluster = make_cluster(cluster={"plugins": ["example"], "failback_holdoff": 0.5}, envs={"backup": {"PYTHONPATH": str(example_plugin)}})
    assert cluster.wait_active(15) == "backup"
    wait_for(lambda: (cluster["main"].view() or {}).get("blocked"), 10, "main to report why it is blocked")
    holds_for(lambda: cluster.active() == "backup", 3.0, "backup staying active (no fail-back to a blocked main)")
    result = tandem_cli(cluster, "transfer", "--to", "main", cwd=tmp_path)
    assert result.returncode != 0 and "may not become active" in result.stderr
    assert cluster.active() == "backup"
