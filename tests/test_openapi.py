"""The OpenAPI document against the real app: it names exactly the routes create_app registers, on a server and on the witness."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from aiohttp import web
from pydantic import ValidationError

from cluster.config import load_config
from cluster.node import ClusterNode
from plugins.building import validate_building
from plugins.manager import load_plugins
from plugins.trend_store import TrendStore
from webmanager import bodies, ui
from webmanager.api import create_app
from webmanager.appkeys import NODE
from webmanager.openapi import OPERATIONS, PATH, document
from webmanager.tools.launcher import write_config

DEMO_BUILDING = Path(__file__).resolve().parents[1] / "config" / "demo-building.toml"


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[dict[str, web.Application]]:
    """The real apps of a server keeping trends and of the witness, for nodes that are built but not started."""
    config = load_config(write_config(tmp_path))
    nodes = {name: ClusterNode(config, name) for name in ("main", "witness")}
    store = TrendStore(tmp_path / "trends.sqlite")
    yield {"main": create_app(nodes["main"], load_plugins(None), store), "witness": create_app(nodes["witness"], load_plugins([]))}
    store.close()
    for node in nodes.values():
        node.guard.close()


def routes(app: web.Application) -> set[tuple[str, str]]:
    """The API's routes: all but HEAD and the browser UI's page and files."""
    return {(route.method, route.resource.canonical) for route in app.router.routes() if route.method != "HEAD"} - ui.ROUTES


def operations(doc: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def test_server_document_names_every_route(apps):
    assert operations(document(apps["main"])) == routes(apps["main"])
    assert ("PUT", "/api/v1/points/{name}") in routes(apps["main"])


def test_witness_document_names_only_its_routes(apps):
    witness = operations(document(apps["witness"]))
    assert witness == routes(apps["witness"])
    assert witness == {("GET", "/api/v1/node"), ("GET", "/api/v1/status"), ("GET", "/metrics"), ("GET", PATH)}


def test_no_operation_is_described_that_no_app_serves(apps):
    assert set(OPERATIONS) == routes(apps["main"]) | routes(apps["witness"])


async def test_document_is_served_with_the_token_only(apps, aiohttp_client):
    app = apps["main"]
    client = await aiohttp_client(app)
    assert (await client.get(PATH)).status == 401
    response = await client.get(PATH, headers={"Authorization": f"Bearer {app[NODE].config.api_token}"})
    assert response.status == 200
    served = await response.json()
    assert served == json.loads(json.dumps(document(app)))
    assert served["openapi"].startswith("3.1") and served["security"] == [{"bearerAuth": []}, {"cookieAuth": []}]
    assert set(served["components"]["securitySchemes"]["bearerAuth"].items()) == {("type", "http"), ("scheme", "bearer")}


def _validator(doc: dict, name: str) -> jsonschema.Draft202012Validator:
    """A validator for components/schemas/NAME that resolves the document's references."""
    return jsonschema.Draft202012Validator({**doc, "$ref": f"#/components/schemas/{name}"})


def test_building_schema_comes_from_the_models_and_takes_the_demo_building(apps):
    doc = document(apps["main"])
    building = json.loads(json.dumps(tomllib.loads(DEMO_BUILDING.read_text()), default=lambda value: value.isoformat()))
    validate_building(building, load_plugins(None))  # the server takes it ...
    _validator(doc, "BuildingConfig").validate(building)  # ... and so does its schema
    sections = doc["components"]["schemas"]["BuildingConfig"]["properties"]
    assert {"devices", "points", "notifiers", "alarms", "logic", "schedules", "trends"} <= set(sections)
    assert "name" in doc["components"]["schemas"]["AlarmEntry"]["required"]
    with pytest.raises(jsonschema.ValidationError):
        _validator(doc, "BuildingConfig").validate({"alarms": [{"name": "a", "point": "p", "type": "sideways"}]})


@pytest.mark.parametrize(
    ("schema", "body", "valid"),
    [
        ("PointBatch", {"updates": [{"name": "ahu1.temp", "value": 21.5, "quality": "uncertain", "ts": 1.7e9}]}, True),
        ("PointBatch", {"updates": []}, False),
        ("PointBatch", {"updates": [{"name": "a", "value": 1, "quality": "fine"}]}, False),
        ("PointWrite", {"value": None}, True),
        ("PointWrite", {"value": [1]}, False),
        ("AlarmAction", {"user": "alice", "minutes": 60}, True),
        ("AlarmAction", {"minutes": 0}, False),
        ("AlarmAction", {"minutes": True}, False),  # a number, not a boolean or a numeric string
        ("AlarmAction", {"minutes": "60"}, False),
        ("AlarmAction", {"user": None}, False),  # left out, it is the caller; null names nobody
        ("PointBatch", {"updates": [{"name": "a", "value": 1, "ts": "1700000000"}]}, False),
        ("PointBatch", {"updates": [{"name": "a", "value": 1, "ts": None}]}, False),
        ("Transfer", {"to": "backup", "timeout": 5}, True),
        ("Transfer", {"timeout": 5}, False),
        ("UserChange", {"role": "operator"}, True),
        ("UserChange", {"role": "boss"}, False),
        ("UserChange", {}, False),
        ("UserChange", {"password": None}, False),
        ("UserChange", {"role": None}, False),
        ("UserChange", {"password": "short"}, False),
        ("Login", {"user": "alice", "password": "x" * 1025}, False),
    ],
)
def test_body_schemas_and_the_handlers_models_agree(apps, schema, body, valid):
    """The document's schema is generated from the model the handler reads the body with: both take the same bodies."""
    assert _validator(document(apps["main"]), schema).is_valid(body) is valid
    model = getattr(bodies, schema)
    try:
        model.model_validate(body)
    except ValidationError:
        assert not valid
    else:
        assert valid
