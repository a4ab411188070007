"""`tandem demo`: main, backup and witness on loopback with a fresh data dir, until Ctrl-C or --duration."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from cluster.config import TandemConfig
from cluster.processes import LocalCluster

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "demo.toml"
START_TIMEOUT = 20.0


def run_demo(config: TandemConfig, args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="tandem-demo-"))
    config_path = workdir / "cluster.toml"
    shutil.copyfile(config.path, config_path)
    cluster = LocalCluster(config_path)
    cluster.start()
    try:
        try:
            active = cluster.wait_active(START_TIMEOUT)
        except TimeoutError:
            print(f"no node became active within {START_TIMEOUT:.0f} s; logs are in {workdir}")
            return 1
        _print_intro(cluster, workdir, config_path, active)
        _watch(cluster, active, args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping the demo cluster ...")
        cluster.stop()
    print(f"stopped; data and logs remain in {workdir}")
    return 0


def _print_intro(cluster: LocalCluster, workdir: Path, config_path: Path, active: str) -> None:
    print(f'Tandem demo cluster "{cluster.config.cluster.name}" is running; data and logs in {workdir}')
    for name, node in cluster.nodes.items():
        print(f"  {name:8} {node.spec.role.value:8} raft {node.spec.raft:16} api http://{node.spec.api}  pid {node.pid}")
    print(f"active: {active}\n")
    print("Try, in another terminal:")
    print(f"  export TANDEM_CONFIG={config_path}")
    print("  tandem status")
    print("  tandem put hall.setpoint 21.5 && tandem get hall.setpoint --json")
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
