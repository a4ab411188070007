"""`tandem demo`: main, backup and witness on loopback with a fresh data dir and simulated devices, until Ctrl-C (or
SIGTERM) or --duration."""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
import tomllib
from pathlib import Path

from cluster.config import TandemConfig
from plugins.simulator.process import SimulatorProcess
from webmanager.tools.cli import call_api
from webmanager.tools.launcher import LocalCluster, wait_for

from ..user_api import PASSWORD_LINE

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.toml"
DEMO_BUILDING = DEMO_CONFIG.with_name("demo-building.toml")
START_TIMEOUT = 20.0


def _start_devices() -> list[SimulatorProcess]:
    """The simulated devices of the demo building, with values that wander (ports as in config/demo-building.toml)."""
    from plugins.simulator import (  # here, not at the top: `tandem run` must not pay for importing bacpypes3
        bacnet,
        modbus,
    )

    devices: list[SimulatorProcess] = []
    try:
        for device in (modbus.DeviceProcess(15020, wander=True), modbus.DeviceProcess(15021, wander=True)):
            devices.append(device.start())
        devices.append(bacnet.DeviceProcess(47820, wander=True).start())
    except Exception:
        for device in devices:
            device.kill()
        raise
    return devices


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (kill, timeout, a service manager) stops the demo as Ctrl-C does, nodes included


def run_demo(config: TandemConfig, args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="tandem-demo-"))
    config_path = workdir / "cluster.toml"
    shutil.copyfile(config.path, config_path)
    try:
        devices = _start_devices()
    except (OSError, RuntimeError) as exc:
        print(f"cannot start the simulated devices (ports 15020, 15021, 47820 in use?): {exc}")
        return 1
    cluster = LocalCluster(config_path)
    cluster.start()
    try:
        try:
            active = cluster.wait_active(START_TIMEOUT)
        except TimeoutError:
            print(f"no node became active within {START_TIMEOUT:.0f} s; logs are in {workdir}")
            return 1
        building = tomllib.loads(DEMO_BUILDING.read_text())
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # retried while the active role settles (a start-up hand-over or a lease lapsing under load answers 409)
            code, answer = call_api(cluster.config, cluster[cluster.active() or active].spec.api, "POST", "/api/v1/config", building)
            if code != 409 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if code != 200:
            print(f"applying {DEMO_BUILDING} failed: {answer}")
            return 1
        try:
            password = wait_for(lambda: _initial_password(cluster), START_TIMEOUT, "the first admin's one-time password")
        except TimeoutError as exc:
            print(f"{exc}; logs are in {workdir}")
            return 1
        _print_intro(cluster, workdir, config_path, active, password)
        _watch(cluster, active, args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping the demo cluster ...")
        cluster.stop()
        for device in devices:
            device.kill()
    print(f"stopped; data and logs remain in {workdir}")
    return 0


def _initial_password(cluster: LocalCluster) -> str | None:
    """The one-time password of the first admin, from the log of the server that created it."""
    for name in cluster.nodes:
        for line in cluster.log(name).splitlines():
            if line.startswith(PASSWORD_LINE):
                return line[len(PASSWORD_LINE):].strip()
    return None


def _print_intro(cluster: LocalCluster, workdir: Path, config_path: Path, active: str, password: str) -> None:
    print(f'Tandem demo cluster "{cluster.config.cluster.name}" is running; data and logs in {workdir}')
    for name, node in cluster.nodes.items():
        print(f"  {name:8} {node.spec.role.value:8} raft {node.spec.raft:16} api {node.spec.url}  pid {node.pid}")
    print("  simulated devices: ahu1 modbus 127.0.0.1:15020, meter1 modbus 127.0.0.1:15021, rooms bacnet 127.0.0.1:47820")
    print(f"  building: {DEMO_BUILDING} (applied)")
    print(f"active: {active}\n")
    print("Web Manager (open either in a browser; the page follows the active server by itself):")
    for node in cluster.nodes.values():
        if node.spec.is_server:
            print(f"  {node.spec.url}/    API: {node.spec.url}/api/v1/openapi.json")
    print(f"  log in as admin with the one-time password: {password}")
    print("  (more users: the Users page, or `tandem user add NAME --role operator`; `tandem user token NAME` for API tokens)\n")
    print("Try, in another terminal:")
    print(f"  export TANDEM_CONFIG={config_path}")
    print("  tandem status")
    print("  tandem get ahu1.supply_temp --json     # live values from the simulated devices")
    print("  tandem put ahu1.setpoint 19.5          # written to the device, then read back")
    print("  tandem config export                   # the building configuration")
    print("  tandem alarms --all                    # the AHU's supply-air alarm comes and goes")
    print("  tandem schedules                       # the hall setpoint by time of day (Europe/Berlin)")
    print("  tandem logic                           # rules driving the AHU fan and the rooms' BACnet setpoint")
    print("  tandem trend ahu1.supply_temp --step 60   # history, identical on main and backup")
    print(f"  kill -9 {cluster['main'].pid}        # kill main: the backup becomes active within a second")
    print("  tandem status                 # then watch the roles change here")
    print("  tandem transfer --to backup   # move the active role on purpose")
    print("Stop with Ctrl-C.\n", flush=True)


def _watch(cluster: LocalCluster, active: str | None, duration: float | None) -> None:
    """Print every change of the active server until the duration is over (or forever)."""
    end = None if duration is None else time.monotonic() + duration
    started = time.monotonic()
    while end is None or time.monotonic() < end:
        now = cluster.active()
        if now != active:
            print(f"[{time.monotonic() - started:7.1f} s] active: {active or 'none'} -> {now or 'none'}", flush=True)
            active = now
        time.sleep(0.2)
