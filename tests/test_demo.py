"""`tandem demo` on a fresh machine: three nodes, simulated devices, the demo building applied, values flowing, clean stop."""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from webmanager.tools.launcher import wait_for

DEVICE_PORTS = (15020, 15021)
NODE_PORTS = (7001, 7002, 7003, 8001, 8002, 8003)  # config/demo.toml


def tandem(*args: str, config: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "webmanager.tools.main", *args, "--config", config], capture_output=True, text=True, timeout=30)


def read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """The demo's output up to the line holding `marker` (read by a thread: select() cannot see a text stream's buffer)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen, deadline = "", time.monotonic() + timeout
    while marker not in seen:
        try:
            seen += lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"the demo did not print {marker!r}; it printed:\n{seen}") from None
    return seen


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def good_value(config: str, point: str) -> object:
    result = tandem("get", point, "--json", config=config)
    answer = json.loads(result.stdout) if result.returncode == 0 else {}
    return answer.get("value") if answer.get("quality") == "good" else None


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_runs_the_building_and_stops_cleanly(tmp_path, stop):
    demo = subprocess.Popen(
        [sys.executable, "-m", "webmanager.tools.main", "demo"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
    )
    try:
        intro = read_until(demo, "Stop with Ctrl-C", 60)
        assert "demo-building.toml (applied)" in intro and "log in as admin with the one-time password: " in intro
        config = next(line.split("=", 1)[1].strip() for line in intro.splitlines() if "export TANDEM_CONFIG=" in line)
        pages = [line.split()[0] for line in intro.splitlines() if " API: " in line]
        password = intro.split("one-time password: ", 1)[1].split()[0]
        assert pages == ["http://127.0.0.1:8001/", "http://127.0.0.1:8002/"]
        with urllib.request.urlopen(pages[0], timeout=10) as page:
            assert page.status == 200 and b"/ui/app.js" in page.read()
        login = urllib.request.Request(f"{pages[0]}api/v1/login", json.dumps({"user": "admin", "password": password}).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(login, timeout=10) as answer:
            assert json.load(answer)["role"] == "admin"  # the printed password logs in
        first = wait_for(lambda: good_value(config, "ahu1.supply_temp"), 20, "a good supply temperature from the simulated AHU")
        assert 20.0 <= first <= 26.0
        wait_for(lambda: good_value(config, "room1.temp"), 20, "a room temperature from the simulated BACnet device")
        assert tandem("put", "ahu1.setpoint", "19.5", config=config).returncode == 0
        wait_for(lambda: good_value(config, "ahu1.setpoint") == 19.5, 10, "the setpoint read back from the AHU")
        hall = wait_for(lambda: good_value(config, "hall.setpoint"), 10, "the schedule to set the hall setpoint")
        assert hall in (15.0, 17.0, 19.0, 21.0)
        wait_for(lambda: good_value(config, "rooms.setpoint") == hall + 0.5, 20, "the logic rule to drive the rooms' BACnet setpoint")
        trend = tandem("trend", "ahu1.supply_temp", "--json", config=config)
        assert trend.returncode == 0 and json.loads(trend.stdout)["samples"], trend.stderr
    finally:
        demo.send_signal(stop)
        assert demo.wait(30) == 0
    wait_for(lambda: all(port_free(port) for port in DEVICE_PORTS + NODE_PORTS), 5, "the simulated devices and the nodes to stop")
