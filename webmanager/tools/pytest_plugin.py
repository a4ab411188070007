"""Pytest fixtures for plugin authors: simulated Modbus and BACnet devices and a real three-process Tandem cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported by the fixtures themselves, so that loading this plugin costs every pytest run nothing
    from plugins.simulator import bacnet, modbus
    from webmanager.tools.launcher import LocalCluster


def _started(build: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """A factory that builds and starts simulated devices, all killed when the test ends."""
    started: list[Any] = []

    def start(*args: Any, **kwargs: Any) -> Any:
        device = build(*args, **kwargs)
        started.append(device)
        return device.start()

    yield start
    for device in started:
        device.kill()


@pytest.fixture
def tandem_modbus_device() -> Iterator[Callable[..., modbus.DeviceProcess]]:
    """Factory: `tandem_modbus_device(registers=200, port=None)` starts a simulated Modbus TCP device (unit 1) on
    127.0.0.1 (a free port unless given) and returns its started `plugins.simulator.modbus.DeviceProcess`: read
    `.port`, change values with `.set(register, address, values)`, read them with `.get(register, address, count)`,
    see the requests it served with `.stats()`, and `.pause()`, `.resume()`, `.kill()` or `.start()` it again.
    Every device started is killed at teardown."""
    from plugins.simulator.modbus import DeviceProcess

    yield from _started(lambda registers=200, port=None: DeviceProcess(port, registers))


@pytest.fixture
def tandem_bacnet_device() -> Iterator[Callable[..., bacnet.DeviceProcess]]:
    """Factory: `tandem_bacnet_device(port=None, instance=1001)` starts a simulated BACnet/IP device on 127.0.0.1 (a free
    UDP port unless given) and returns its started `plugins.simulator.bacnet.DeviceProcess`: read `.address`, change
    present values with `.set("analog-value,2", 22.5)`, count the requests it served with `.stats()`, and `.pause()`,
    `.resume()`, `.kill()` or `.start()` it again. Every device started is killed at teardown."""
    from plugins.simulator.bacnet import DeviceProcess

    yield from _started(lambda port=None, instance=1001: DeviceProcess(port, instance))


@pytest.fixture
def tandem_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Factory: `tandem_cluster(envs=None, start=True, **options)` writes a loopback cluster file to
    `tmp_path/clusterN/cluster.toml` with `webmanager.tools.launcher.write_config(directory, **options)` (options: `failback`,
    `fsync`, `cluster={...}`, `timers={...}`) and starts main, backup and witness as real `tandem run` processes, each with
    its extra environment from `envs` (e.g. `{"main": {"PYTHONPATH": ...}}`), logging to `tmp_path/clusterN/NODE.log`.
    Returns the `webmanager.tools.launcher.LocalCluster` (`wait_active()`, `active()`, `cluster["main"].kill()`, ...); every node
    still running is stopped at teardown."""
    from webmanager.tools.launcher import LocalCluster, write_config

    clusters: list[LocalCluster] = []

    def make(envs: dict[str, dict[str, str]] | None = None, start: bool = True, **options: Any) -> LocalCluster:
        cluster = LocalCluster(write_config(tmp_path / f"cluster{len(clusters)}", **options), envs=envs)
        clusters.append(cluster)
        if start:
            cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()
