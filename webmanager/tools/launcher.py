"""Start and stop node processes (`tandem run`) on loopback and wait for cluster conditions: for the demo, tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cluster.config import Standing, TandemConfig, load_config
from plugins.simulator.process import free_ports

from .cli import call_api

T = TypeVar("T")
NODE_NAMES = ("main", "backup", "witness")


def write_config(
    directory: Path,
    *,
    failback: str = "auto",
    fsync: bool = True,
    cluster: dict[str, Any] | None = None,
    timers: dict[str, float] | None = None,
    hosts: dict[str, str] | None = None,
) -> Path:
    """A three-node loopback cluster config with free ports, data dirs under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ports = free_ports(6)
    settings = {"failback": failback, "fsync": fsync, **(cluster or {})}
    lines = ["[cluster]", 'name = "test"', f'secret = "{os.urandom(16).hex()}"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    lines.append("[cluster.timers]")
    lines += [f"{key} = {value}" for key, value in (timers or {}).items()]
    for i, name in enumerate(NODE_NAMES):
        host = (hosts or {}).get(name, "127.0.0.1")
        lines += [
            "[[cluster.nodes]]",
            f'name = "{name}"',
            f'role = "{name}"',
            f'raft = "{host}:{ports[i]}"',
            f'api = "{host}:{ports[3 + i]}"',
            f'data_dir = "{name}"',
        ]
    path = directory / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll `condition` until it returns something truthy; raise TimeoutError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def holds_for(condition: Callable[[], bool], seconds: float, what: str, interval: float = 0.05) -> None:
    """Check `condition` continuously for `seconds`; raise AssertionError naming `what` the moment it fails."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not condition():
            raise AssertionError(f"{what} stopped holding")
        time.sleep(interval)


class NodeProcess:
    """One `tandem run` process with its log file."""

    def __init__(
        self, config: TandemConfig, name: str, log_dir: Path, prefix: list[str] | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.config = config
        self.name = name
        self.spec = config.node(name)
        self.log_path = log_dir / f"{name}.log"
        self._prefix = prefix or []
        self._env = None if env is None else {**os.environ, **env}
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        command = [*self._prefix, sys.executable, "-m", "webmanager.tools.main", "run", "--config", str(self.config.path), "--node", self.name]
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self._env)
        log.close()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.popen is not None:
            self.signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGCONT (in case it is paused), SIGTERM, then SIGKILL after `timeout`."""
        if not self.alive:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def view(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """The node's own status (/api/v1/node), or None when it does not answer."""
        try:
            code, answer = call_api(self.config, self.spec.api, "GET", "/api/v1/node", timeout=timeout)
        except (OSError, ValueError):
            return None
        return answer if code == 200 else None


class LocalCluster:
    """Main, backup and witness as separate processes for one configuration file."""

    def __init__(
        self, config_path: Path, prefixes: dict[str, list[str]] | None = None, envs: dict[str, dict[str, str]] | None = None
    ) -> None:
        self.config = load_config(config_path)
        log_dir = config_path.parent
        self.nodes = {
            name: NodeProcess(self.config, name, log_dir, (prefixes or {}).get(name), (envs or {}).get(name)) for name in NODE_NAMES
        }

    def __getitem__(self, name: str) -> NodeProcess:
        return self.nodes[name]

    def start(self, *names: str) -> None:
        for name in names or NODE_NAMES:
            self.nodes[name].start()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def views(self) -> dict[str, dict[str, Any] | None]:
        return {name: node.view() if node.alive else None for name, node in self.nodes.items()}

    def active(self) -> str | None:
        """The one node that says it is active, or None (two would be a bug and raises)."""
        actives = [name for name, view in self.views().items() if view and view["role"] == Standing.ACTIVE]
        if len(actives) > 1:
            raise AssertionError(f"two active servers at once: {actives}")
        return actives[0] if actives else None

    def wait_active(self, timeout: float = 15.0, name: str | None = None) -> str:
        what = f"{name} to be active" if name else "an active server"
        return wait_for(lambda: (lambda a: a if a and (name is None or a == name) else None)(self.active()), timeout, what)

    def caught_up(self, node: str, leader: str) -> bool:
        """Whether `node` has applied everything `leader` has committed (both must answer)."""
        views = self.views()
        mine, theirs = views[node], views[leader]
        return bool(mine and theirs and mine["applied_index"] >= theirs["commit_index"])

    def make_active(self, name: str, timeout: float = 20.0) -> None:
        """Wait for an active server and, if it is not `name`, transfer the role to `name`.

        Main normally wins a cold start (the backup waits longer before its first campaign), but on a
        heavily loaded machine main's process can start late; with failback = "manual" nothing moves it back.
        """
        active = self.wait_active(timeout)
        if active != name:
            call_api(self.config, self[active].spec.api, "POST", "/api/v1/cluster/transfer", {"to": name}, timeout=10)
        self.wait_active(timeout, name)

    def log(self, name: str) -> str:
        return self.nodes[name].log_path.read_text(errors="replace")
