"""The Python client (webmanager.tools.client.TandemClient) on a real three-process cluster: it follows a SIGKILLed active and a
planned transfer by itself, keeps its subscription and has values flowing again within 2 s of the new activation."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from conftest import COUNTER as POINT
from conftest import Updater, activation_since
from driver_kit import until

from webmanager.tools.cli import call_api
from webmanager.tools.client import TandemClient
from webmanager.tools.launcher import LocalCluster


class Received:
    """The client's messages with their arrival times."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, dict]] = []

    def __call__(self, message: dict) -> None:
        self.messages.append((time.time(), message))

    def counter_after(self, moment: float, above: int) -> float | None:
        """Arrival time of the first change (not a snapshot) after `moment` carrying a count above `above`."""
        for arrived, message in self.messages:
            if arrived > moment and message["type"] == "points" and not message.get("snapshot"):
                if any(item["name"] == POINT and item["value"] > above for item in message["values"]):
                    return arrived
        return None

    def last_count(self) -> int:
        counts = [item["value"] for _, m in self.messages if m["type"] == "points" for item in m["values"] if item["name"] == POINT]
        return max(counts, default=0)


def servers(cluster: LocalCluster) -> list[str]:
    return [node.api for node in cluster.config.cluster.nodes]


@pytest.mark.parametrize("fail", ["kill", "pause"])
async def test_the_client_follows_a_failed_active_and_values_flow_again_within_2_s(ready_cluster, fail):
    """kill: SIGKILL closes the connections at once. pause: SIGSTOP leaves them open with nothing coming (as after a
    power cut); the client's heartbeat notices."""
    cluster = ready_cluster
    received = Received()
    async with TandemClient(servers(cluster), cluster.config.api_token, on_message=received) as client:
        await client.subscribe(points=[POINT])
        with Updater(cluster):
            await until(lambda: received.last_count() >= 5, "values flowing from main", 10)
            assert (client.active, client.connected_to) == ("main", cluster["main"].spec.api)
            before = received.last_count()
            killed = time.time()
            await asyncio.to_thread(cluster["main"].kill if fail == "kill" else lambda: cluster["main"].signal(signal.SIGSTOP))
            written = asyncio.create_task(client.write("live.set", 7))  # retried until the backup takes it
            flowing = await until(lambda: received.counter_after(killed, before), "values flowing again", 10)
            activated = await until(lambda: activation_since(cluster, "backup"), "backup active", 5)
            assert (client.active, client.connected_to) == ("backup", cluster["backup"].spec.api)
            assert flowing - activated < 2.0, f"values flowed {flowing - activated:.3f} s after the backup's activation"
            assert (await asyncio.wait_for(written, 15))["value"] == 7
        cluster["main"].signal(signal.SIGCONT)
        snapshots = [m for arrived, m in received.messages if arrived > killed and m.get("snapshot")]
        assert snapshots and {item["name"] for m in snapshots for item in m["values"]} == {POINT}  # resubscribed, same points


async def test_the_client_follows_a_planned_transfer(ready_cluster):
    cluster = ready_cluster
    received = Received()
    async with TandemClient(servers(cluster), cluster.config.api_token, on_message=received) as client:
        await client.subscribe(points=[POINT])
        with Updater(cluster):
            await until(lambda: client.connected_to == cluster["main"].spec.api and received.last_count() > 0, "values from main", 10)
            moved = time.time()
            code, answer = await asyncio.to_thread(
                call_api, cluster.config, cluster["main"].spec.api, "POST", "/api/v1/cluster/transfer", {"to": "backup"}, timeout=10
            )
            assert code == 200, answer
            before = received.last_count()
            flowing = await until(lambda: received.counter_after(moved, before), "values flowing from the backup", 10)
            assert flowing - moved < 2.0
            assert (client.active, client.connected_to) == ("backup", cluster["backup"].spec.api)
    roles = [(m["node"], m["role"]) for arrived, m in received.messages if arrived > moved and m["type"] == "role"]
    assert roles[:2] == [("main", "standby"), ("backup", "active")]  # told by main, then greeted by the backup
