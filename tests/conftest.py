"""Shared fixtures: real three-process clusters on loopback, with their logs kept as test artifacts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.cli import call_api
from cluster.processes import LocalCluster, wait_for

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture
def make_cluster(tandem_cluster: Callable[..., LocalCluster], request: pytest.FixtureRequest) -> Iterator[Callable[..., LocalCluster]]:
    """Factory: `tandem_cluster` (`make_cluster(failback=..., cluster={...}, timers={...}, envs={node: {VAR: value}})` -> a
    started LocalCluster) that also keeps the node logs in test-artifacts/<test>/<cluster directory>/. With
    failback = "manual" it returns once main is active, as tests of that mode start from there."""
    clusters: list[LocalCluster] = []

    def make(**options: Any) -> LocalCluster:
        clusters.append(tandem_cluster(**options))
        if options.get("failback") == "manual" and options.get("start", True):
            clusters[-1].make_active("main")
        return clusters[-1]

    yield make
    for cluster in clusters:
        cluster.stop()  # before tandem_cluster's teardown, so that the copies hold the logs' last lines
    target = ARTIFACTS / request.node.name
    shutil.rmtree(target, ignore_errors=True)
    for log in (node.log_path for cluster in clusters for node in cluster.nodes.values()):
        if log.exists():
            (target / log.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(log, target / log.parent.name / log.name)


def put(cluster: LocalCluster, point: str, value: Any) -> str:
    """Write a point through the active server, retrying while the active role moves; returns who took it."""

    def attempt() -> str | None:
        active = cluster.active()
        if active is None:
            return None
        code, _ = call_api(cluster.config, cluster[active].spec.api, "PUT", f"/api/v1/points/{point}", {"value": value})
        return active if code == 200 else None

    return wait_for(attempt, 10, f"an active server to accept {point}")


def report(cluster: LocalCluster, values: dict[str, Any]) -> None:
    """Report field values as one batch (POST /api/v1/points) through the active server."""
    body = {"updates": [{"name": name, "value": value} for name, value in values.items()]}

    def attempt() -> bool:
        active = cluster.active()
        return active is not None and call_api(cluster.config, cluster[active].spec.api, "POST", "/api/v1/points", body)[0] == 200

    wait_for(attempt, 10, "an active server to accept a batch")


def get(cluster: LocalCluster, node: str, point: str) -> Any:
    code, answer = call_api(cluster.config, cluster[node].spec.api, "GET", f"/api/v1/points/{point}")
    assert code == 200, f"{node}: GET {point} -> {code} {answer}"
    return answer["value"]


@pytest.fixture(scope="session")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example third-party plugin package, pip-installed into its own folder (put it on PYTHONPATH)."""
    target = tmp_path_factory.mktemp("example-plugin")
    source = Path(__file__).parent / "example_plugin"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    return target
