"""The live feed (WebSocket /api/v1/live) on real node processes: auth, snapshots and changes, alarms, bad frames, slow
consumers dropped, the standby serving its replicated image."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from conftest import apply_building, module_cluster, put, report

from webmanager.tools.cli import call_api
from webmanager.tools.launcher import LocalCluster, wait_for

BUILDING = """
[[points]]
name = "live.room"
writable = true

[[alarms]]
name = "live-hot"
point = "live.room"
type = "high"
limit = 25.0
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with module_cluster(tmp_path_factory.mktemp("live"), failback="manual", fsync=False) as cluster:
        yield cluster


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def live_url(cluster: LocalCluster, node: str) -> str:
    return f"http://{cluster[node].spec.api}/api/v1/live"


async def connect(session: aiohttp.ClientSession, cluster: LocalCluster, node: str = "main") -> aiohttp.ClientWebSocketResponse:
    """A live feed connection with the bearer token, past its greeting (this node's role)."""
    ws = await session.ws_connect(live_url(cluster, node), headers={"Authorization": f"Bearer {cluster.config.api_token}"})
    greeting = await receive(ws, "role")
    active = cluster.config.node("main")
    assert greeting == {"type": "role", "node": node, "role": "active" if node == "main" else "standby", "active": "main", "active_api": active.api}
    return ws


async def receive(ws: aiohttp.ClientWebSocketResponse, kind: str, match: Callable[[dict], bool] = lambda m: True, timeout: float = 10) -> dict:
    """The next message of type `kind` satisfying `match`, skipping others; TimeoutError after `timeout` s."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.receive()
            assert frame.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {frame.type} {frame.data}"
            message = json.loads(frame.data)
            if message["type"] == kind and match(message):
                return message


def values(message: dict) -> dict[str, Any]:
    return {item["name"]: item["value"] for item in message["values"]}


def live_status(cluster: LocalCluster, node: str) -> dict[str, int]:
    view = cluster[node].view()
    assert view is not None, f"{node} does not answer"
    return view["live"]


async def test_without_the_token_the_feed_answers_401_and_the_query_token_works(cluster, session):
    for url in (live_url(cluster, "main"), live_url(cluster, "main") + "?token=wrong"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url)
        assert refused.value.status == 401
    async with session.ws_connect(live_url(cluster, "main") + f"?token={cluster.config.api_token}") as ws:
        assert (await receive(ws, "role"))["role"] == "active"


async def test_the_witness_serves_no_live_feed(cluster, session):
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(session, cluster, "witness")
    assert refused.value.status == 404


async def test_a_subscription_starts_with_a_snapshot_then_sends_the_changes_of_its_points(cluster, session):
    await asyncio.to_thread(report, cluster, {"live.a": 1, "live.b": 2})
    ws = await connect(session, cluster)
    await ws.send_json({"subscribe": {"points": ["live.a", "live.unknown"]}})
    snapshot = await receive(ws, "points")
    assert snapshot["snapshot"] is True and values(snapshot) == {"live.a": 1}
    assert set(snapshot["values"][0]) == {"name", "value", "quality", "ts"}
    await asyncio.to_thread(report, cluster, {"live.a": 3, "live.b": 4})
    change = await receive(ws, "points")
    assert "snapshot" not in change and values(change) == {"live.a": 3}
    await asyncio.to_thread(report, cluster, {"live.unknown": 5})  # subscribed before it had a value
    assert values(await receive(ws, "points")) == {"live.unknown": 5}
    await ws.send_json({"subscribe": {"points": "*"}})
    everything = values(await receive(ws, "points"))
    assert {"live.a": 3, "live.b": 4, "live.unknown": 5}.items() <= everything.items()
    await ws.close()


async def test_alarm_state_changes_are_sent_to_alarm_subscribers(cluster, session, tmp_path):
    applied = await asyncio.to_thread(apply_building, cluster, BUILDING, tmp_path)
    assert applied.returncode == 0, applied.stderr
    await asyncio.to_thread(put, cluster, "live.room", 20.0)
    ws = await connect(session, cluster)
    await ws.send_json({"subscribe": {"points": ["live.room"], "alarms": True}})
    snapshot = await receive(ws, "alarms")
    assert snapshot["snapshot"] is True
    assert [(a["name"], a["state"]) for a in snapshot["alarms"] if a["name"] == "live-hot"] == [("live-hot", "normal")]
    await asyncio.to_thread(put, cluster, "live.room", 30.0)
    raised = await receive(ws, "alarms", lambda m: any(a["name"] == "live-hot" for a in m["alarms"]))
    assert [(a["name"], a["state"], a["value"]) for a in raised["alarms"]] == [("live-hot", "active-unacked", 30.0)]
    await ws.close()


async def test_a_bad_frame_is_answered_with_an_error_and_the_connection_stays_usable(cluster, session):
    ws = await connect(session, cluster)
    for frame in ("not json", json.dumps([1]), json.dumps({"subscribe": {"points": 5}}), json.dumps({"subscribe": {"colour": 1}}),
                  json.dumps({"dance": {}}), json.dumps({"subscribe": {"alarms": "yes"}}), "[" * 100_000 + "]" * 100_000):
        await ws.send_str(frame)
        error = await receive(ws, "error")
        assert error["error"], frame
    await ws.send_bytes(b"\x00\x01")
    assert "text" in (await receive(ws, "error"))["error"]
    await ws.send_json({"ping": 7})
    assert (await receive(ws, "pong"))["pong"] == 7
    await asyncio.to_thread(report, cluster, {"live.after-errors": 1})
    await ws.send_json({"subscribe": {"points": ["live.after-errors"]}})
    assert values(await receive(ws, "points")) == {"live.after-errors": 1}
    await ws.close()


async def test_a_slow_consumer_is_dropped_while_a_normal_client_keeps_receiving(cluster, session):
    slow = await connect(session, cluster)
    await slow.send_json({"subscribe": {"points": "*"}})  # and never reads again
    normal = await connect(session, cluster)
    await normal.send_json({"subscribe": {"points": ["live.tick"]}})
    before = live_status(cluster, "main")
    latest: dict[str, int] = {}

    async def read_normal() -> None:
        while True:
            latest.update(values(await receive(normal, "points")))

    reader = asyncio.create_task(read_normal())
    filler = "x" * 100_000

    def flood() -> int:
        """Big changes until main drops a client; returns the last tick sent."""
        tick = 0
        while live_status(cluster, "main")["dropped"] == before["dropped"]:
            tick += 1
            body = {"updates": [{"name": "live.big", "value": f"{tick}{filler}"}, {"name": "live.tick", "value": tick}]}
            code, answer = call_api(cluster.config, cluster["main"].spec.api, "POST", "/api/v1/points", body)
            assert code == 200, answer
            assert tick < 2_000, "the slow consumer was never dropped"
        return tick

    last = await asyncio.to_thread(flood)
    after = live_status(cluster, "main")
    assert after["clients"] == before["clients"] - 1
    await asyncio.wait_for(asyncio.to_thread(wait_for, lambda: latest.get("live.tick") == last, 10, "the normal client to get the last tick"), 15)
    reader.cancel()
    async with asyncio.timeout(20):  # the slow client finally reads: what was sent, then the close
        frame = await slow.receive()
        while frame.type is aiohttp.WSMsgType.TEXT:
            frame = await slow.receive()
    assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    if frame.type is aiohttp.WSMsgType.CLOSE:
        assert (frame.data, frame.extra) == (aiohttp.WSCloseCode.TRY_AGAIN_LATER, "slow consumer")
    await normal.close()


async def test_the_standby_serves_live_values_from_its_replicated_image(cluster, session):
    ws = await connect(session, cluster, "backup")
    await ws.send_json({"subscribe": {"points": ["live.s"]}})
    assert values(await receive(ws, "points")) == {}
    await asyncio.to_thread(report, cluster, {"live.s": 42})
    change = await receive(ws, "points")
    assert values(change) == {"live.s": 42}
    await ws.close()


async def test_a_server_shutting_down_closes_its_live_connections_with_going_away(make_cluster, session):
    cluster = make_cluster(failback="manual", fsync=False)
    await asyncio.to_thread(wait_for, cluster["backup"].view, 15, "the backup's API")
    ws = await connect(session, cluster, "backup")
    await ws.send_json({"subscribe": {"points": "*"}})
    await receive(ws, "points")
    stopping = asyncio.create_task(asyncio.to_thread(cluster["backup"].stop, 30))
    async with asyncio.timeout(5):
        frame = await ws.receive()
    assert (frame.type, frame.data, frame.extra) == (aiohttp.WSMsgType.CLOSE, aiohttp.WSCloseCode.GOING_AWAY, "server shutting down")
    await asyncio.wait_for(stopping, 5)  # not held up by the open connection
    assert not cluster["backup"].alive
