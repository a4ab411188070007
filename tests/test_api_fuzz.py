"""Fuzz the API of real node processes from the OpenAPI document they serve (schemathesis): no request answers 5xx or an
undocumented status, and every node survives."""

from __future__ import annotations

import http.client

import pytest
import schemathesis
from conftest import module_cluster, report
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from webmanager.tools.cli import call_api
from webmanager.tools.launcher import LocalCluster, wait_for

# the names the document gives as examples, so that requests reach a point, an alarm and a trend with samples
BUILDING = {
    "points": [{"name": "ahu1.temp"}],
    "alarms": [{"name": "ahu1.temp.high", "point": "ahu1.temp", "type": "high", "limit": 30}],
    "trends": [{"name": "ahu1.temp", "point": "ahu1.temp"}],
}
@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: object, value: object) -> bytes:
    """A building sent as lines: the document's schema for it is a string (the lines themselves)."""
    return str(value).encode()


EXAMPLES_PER_OPERATION = 25  # the module takes about 12 s on 2 cores; 300 per operation (100 s) found nothing more
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("fuzz")) as cluster:
        assert call_api(cluster.config, cluster["main"].spec.api, "POST", "/api/v1/config", BUILDING)[0] == 200
        report(cluster, {"ahu1.temp": 35.0})  # raises the alarm and records a trend sample
        yield cluster


def load(cluster: LocalCluster, node: str) -> schemathesis.BaseSchema:
    """The document `node` serves, aimed at that node with the bearer token."""
    auth = {"Authorization": f"Bearer {cluster.config.api_token}"}
    api = f"http://{cluster[node].spec.api}"
    schema = schemathesis.openapi.from_url(f"{api}/api/v1/openapi.json", headers=auth, timeout=5)
    schema.config.update(base_url=api, headers=auth, request_timeout=70)  # a transfer may take up to its 60 s timeout
    return schema


@pytest.fixture(scope="module")
def server_api(cluster):
    return load(cluster, "main")


@pytest.fixture(scope="module")
def witness_api(cluster):
    return load(cluster, "witness")


def check(case: schemathesis.Case, cluster: LocalCluster) -> None:
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance])
    dead = [name for name, node in cluster.nodes.items() if not node.alive]
    assert not dead, f"{dead} died after {case.method} {case.formatted_path}"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/points", b"\xff\xfe not UTF-8"),  # was 500: UnicodeDecodeError
        ("POST", "/api/v1/config", "{}".encode("utf-16")),
        ("GET", "/api/v1/trends/_samples?after=0&upto=9223372036854775808", None),  # was 500: SQLite integer overflow
        ("GET", "/api/v1/trends/ahu1.temp?from=-1e300&to=1e300&step=2e300", None),  # was 500: a bucket before year 1
        ("GET", "/api/v1/trends/ahu1.temp?from=0&to=1e12&format=csv", None),
    ],
)
def test_requests_that_once_failed_are_refused(cluster, method, path, body):  # before the fuzzing may drop the trend
    host, port = cluster["main"].spec.api.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request(method, path, body, {"Authorization": f"Bearer {cluster.config.api_token}", "Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 400 and b"error" in response.read()
    connection.close()


SERVER = schemathesis.pytest.from_fixture("server_api")
BOUNDED = settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))


@SERVER.exclude(method="POST", path="/api/v1/config").parametrize()
@BOUNDED
def test_server_api(case, cluster):
    check(case, cluster)


@SERVER.include(method="POST", path="/api/v1/config").parametrize()  # last: a new building may drop the example point
@BOUNDED
def test_server_configuration(case, cluster):
    check(case, cluster)


@schemathesis.pytest.from_fixture("witness_api").parametrize()
@BOUNDED
def test_witness_api(case, cluster):
    check(case, cluster)


def test_cluster_still_serves_after_fuzzing(cluster):
    active = cluster.wait_active()
    others = [name for name in ("main", "backup") if name != active]
    wait_for(lambda: cluster.caught_up(others[0], active) and cluster.caught_up("witness", active), 10, "every node to follow the active")
