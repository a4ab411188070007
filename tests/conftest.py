"""Shared fixtures: real three-process clusters on loopback, with their logs kept as test artifacts."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cluster.guard import ActGuard
from cluster.state import ProcessImage, Rejected
from webmanager.tools.cli import call_api
from webmanager.tools.launcher import LocalCluster, wait_for, write_config


def apply_plan(image: ProcessImage, commands: list[Any]) -> None:
    """Apply a configuration plan's log entries in order to an image (a test's own state machine); each must be accepted."""
    for command in commands:
        result = image.apply(command)
        assert not isinstance(result, Rejected), result


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[ActGuard]:
    """A real act guard whose permit always grants term 1, recording to tmp_path/acts.log (for in-process driver tests)."""
    guard = ActGuard("test", lambda margin: 1, 0.0, tmp_path / "acts.log")
    yield guard
    guard.close()


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
    for folder in {node.log_path.parent.name for cluster in clusters for node in cluster.nodes.values()}:
        shutil.rmtree(target / folder, ignore_errors=True)  # the last run's logs; other artifacts (screenshots) stay
    for log in (node.log_path for cluster in clusters for node in cluster.nodes.values()):
        if log.exists():
            (target / log.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(log, target / log.parent.name / log.name)


def serving(cluster: LocalCluster) -> None:
    """Wait until every node's API answers (a standby serves once its plugins are loaded, after main is active)."""
    wait_for(lambda: all(view is not None for view in cluster.views().values()), 15, "every node's API to answer")


@contextmanager
def module_cluster(directory: Path, **options: Any) -> Iterator[LocalCluster]:
    """A cluster shared by a module's tests: started, main active, every node's API answering; stopped afterwards."""
    cluster = LocalCluster(write_config(directory, **options))
    cluster.start()
    try:
        cluster.make_active("main")
        serving(cluster)
        yield cluster
    finally:
        cluster.stop()


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


def tandem_cli(cluster: LocalCluster, *args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a `tandem` command against the cluster's configuration file."""
    command = [sys.executable, "-m", "webmanager.tools.main", *args, "--config", str(cluster.config.path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def apply_building(cluster: LocalCluster, text: str, directory: Path, name: str = "building.toml") -> subprocess.CompletedProcess[str]:
    """Write a building configuration to `directory/name` and `tandem config apply` it."""
    path = directory / name
    path.write_text(text)
    return tandem_cli(cluster, "config", "apply", str(path), cwd=directory)


def point_view(cluster: LocalCluster, node: str, name: str) -> dict[str, Any] | None:
    """A point as `node` serves it (GET /api/v1/points/NAME), or None when it has none."""
    code, answer = call_api(cluster.config, cluster[node].spec.api, "GET", f"/api/v1/points/{name}")
    return answer if code == 200 else None


def confirmed_write(cluster: LocalCluster, node: str, name: str, value: Any) -> dict[str, Any] | None:
    """The point on `node` once a write of `value` is confirmed there (read back, nothing desired any more), else None."""
    point = point_view(cluster, node, name)
    return point if point and point["value"] == value and point["desired"] is None else None


COUNTER = "live.counter"


def count_up(n: int) -> tuple[str, str, dict[str, Any]]:
    """The request that reports COUNTER = n as a field value."""
    return "POST", "/api/v1/points", {"updates": [{"name": COUNTER, "value": n}]}


class Updater:
    """Sends `request(n)` for n = 1, 2, ... every `period` through whichever server accepts it (a thread, independent of
    the client); `acked` holds (n, wall time) of each acknowledged request, `sent` how many were."""

    def __init__(
        self, cluster: LocalCluster, request: Callable[[int], tuple[str, str, Any]] = count_up, period: float = 0.02, accepted: int = 200
    ) -> None:
        self.cluster = cluster
        self.request = request
        self.period = period
        self.accepted = accepted
        self.acked: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def sent(self) -> int:
        return len(self.acked)

    def _run(self) -> None:
        apis = [self.cluster[name].spec.api for name in ("main", "backup")]
        n = 0
        while not self._stop.is_set():
            n += 1
            method, path, body = self.request(n)
            for api in list(apis):
                try:
                    if call_api(self.cluster.config, api, method, path, body, timeout=0.2)[0] == self.accepted:
                        self.acked.append((n, time.time()))
                        break
                except OSError:
                    pass
                apis.remove(api)  # refused, or no answer (a paused or cut-off server): ask it last from now on
                apis.append(api)
            self._stop.wait(self.period)

    def __enter__(self) -> Updater:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def ready_cluster(make_cluster: Callable[..., LocalCluster]) -> Iterator[LocalCluster]:
    """Main active, the backup caught up and with its plugins loaded (ready to take over)."""
    cluster = make_cluster(failback="manual", fsync=False)
    wait_for(lambda: (cluster["backup"].view() or {}).get("blocked", "no answer") is None, 20, "the backup to load its plugins")
    wait_for(lambda: cluster.caught_up("backup", "main"), 10, "the backup to catch up")
    yield cluster


def activation_since(cluster: LocalCluster, node: str) -> float | None:
    """When `node` proposed its activation (wall clock), once it is the active server."""
    view = cluster[node].view()
    if view is None or view["role"] != "active" or view["activation"]["node"] != node:
        return None
    return view["activation"]["since"]


def self_signed(directory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tandem test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(directory / "cert.pem"), str(directory / "key.pem")
