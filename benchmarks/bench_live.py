"""Live feed: delivery latency to 200 WebSocket clients at 2,000 point changes/s, and the Python client's failover time."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
from harness import (
    first_act,
    millis,
    paced_updates,
    parser,
    point_names,
    report,
    running_cluster,
    seconds,
    summary,
    view,
)

from webmanager.tools.client import TandemClient
from webmanager.tools.launcher import LocalCluster, wait_for

CLIENTS = 200
WORKERS = 4  # processes sharing the clients, so that reading and timing them does not queue behind one event loop
RATE, BATCH = 2_000.0, 50  # point changes/s, changes per POST (40 batches/s)
POINTS = 2_000  # each point changes once a second, so no change is merged away
FANOUT_SECONDS = 10.0
DRAIN_TIMEOUT = 10.0  # seconds the clients may take to receive the last changes of a run
BUCKETS_PER_SECOND = 10_000  # latency histogram resolution: 0.1 ms
POINT = "bench.live"  # the point a writer counts up during the failover runs
WRITE_INTERVAL = 0.02


class Latencies:
    """A histogram of update ts -> receipt in a client, over every value every client received."""

    def __init__(self, counts: list[int] | None = None) -> None:
        self.counts = counts or [0] * (10 * BUCKETS_PER_SECOND + 1)

    def add(self, now: float, values: list[dict[str, Any]]) -> None:
        counts, last = self.counts, len(self.counts) - 1
        for item in values:
            bucket = int((now - item["ts"]) * BUCKETS_PER_SECOND)
            counts[min(last, max(0, bucket))] += 1

    @property
    def total(self) -> int:
        return sum(self.counts)

    def percentile(self, fraction: float) -> float:
        rank, seen = fraction * self.total, 0
        for bucket, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return (bucket + 1) / BUCKETS_PER_SECOND
        return len(self.counts) / BUCKETS_PER_SECOND


async def listen(ws: aiohttp.ClientWebSocketResponse, latencies: list[Latencies]) -> None:
    """Read every message of one client, adding its changes to the current histogram (latencies[0])."""
    async for frame in ws:
        if frame.type is not aiohttp.WSMsgType.TEXT:
            break
        now = time.time()
        message = json.loads(frame.data)
        if message["type"] == "points" and not message.get("snapshot"):
            latencies[0].add(now, message["values"])


def client_worker(url: str, token: str, count: int, pipe: Connection) -> None:
    """A process holding `count` live clients subscribed to every point. Commands on `pipe`: "reset" starts a new
    histogram; a number of values waits (up to DRAIN_TIMEOUT) until that many arrived and answers the histogram; None ends."""
    asyncio.run(_serve_clients(url, token, count, pipe))


async def _serve_clients(url: str, token: str, count: int, pipe: Connection) -> None:
    latencies = [Latencies()]
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), headers=headers) as session:
        sockets = [await session.ws_connect(url) for _ in range(count)]
        for ws in sockets:
            await ws.send_json({"subscribe": {"points": "*"}})
        readers = [asyncio.create_task(listen(ws, latencies)) for ws in sockets]
        pipe.send("ready")
        while (command := await asyncio.to_thread(pipe.recv)) is not None:
            if command == "reset":
                latencies[0] = Latencies()
                pipe.send("ok")
                continue
            try:
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    while latencies[0].total < command:
                        await asyncio.sleep(0.05)
            except TimeoutError:
                pass  # reported as the delivered share
            pipe.send(latencies[0].counts)
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)


async def ask(pipes: list[Connection], commands: list[Any]) -> list[Any]:
    for pipe, command in zip(pipes, commands):
        pipe.send(command)
    return [await asyncio.to_thread(pipe.recv) for pipe in pipes]


async def fanout(cluster: LocalCluster, runs: int) -> tuple[list[float], list[float], list[float], list[dict[str, Any]]]:
    """`runs` runs of FANOUT_SECONDS at RATE with CLIENTS subscribed to every point: (p50s, p99s, delivered, sender)."""
    url = f"http://{cluster['main'].spec.api}/api/v1/live"
    names = point_names(POINTS, "live.p")
    shares = [CLIENTS // WORKERS + (i < CLIENTS % WORKERS) for i in range(WORKERS)]
    context = multiprocessing.get_context("spawn")
    pipes, workers = [], []
    for share in shares:
        mine, theirs = context.Pipe()
        workers.append(context.Process(target=client_worker, args=(url, cluster.config.api_token, share, theirs)))
        workers[-1].start()
        pipes.append(mine)
    p50s, p99s, delivered, sender = [], [], [], []
    try:
        await asyncio.gather(*(asyncio.to_thread(pipe.recv) for pipe in pipes))  # "ready"
        for _ in range(runs):
            await ask(pipes, ["reset"] * WORKERS)
            outcome = await paced_updates(cluster, "main", RATE, BATCH, FANOUT_SECONDS, names)
            histograms = await ask(pipes, [outcome["accepted"] * BATCH * share for share in shares])
            latencies = Latencies([sum(counts) for counts in zip(*histograms)])
            expected = outcome["accepted"] * BATCH * CLIENTS
            p50s.append(latencies.percentile(0.5))
            p99s.append(latencies.percentile(0.99))
            delivered.append(latencies.total / expected if expected else 0.0)
            sender.append(outcome)
    finally:
        for pipe in pipes:
            pipe.send(None)
        for worker in workers:
            worker.join(30)
    return p50s, p99s, delivered, sender


class Arrivals:
    """Arrival times and values of POINT in the client's change messages."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, Any]] = []

    def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "points" and not message.get("snapshot"):
            self.changes.extend((time.time(), item["value"]) for item in message["values"] if item["name"] == POINT)

    def latest(self) -> Any:
        return self.changes[-1][1] if self.changes else 0

    def first_after(self, moment: float, above: int) -> float | None:
        return next((arrived for arrived, value in self.changes if arrived > moment and value > above), None)


async def keep_writing(session: aiohttp.ClientSession, cluster: LocalCluster) -> None:
    """Count POINT up every WRITE_INTERVAL, posting to both servers at once: the active takes it, a standby answers 409."""
    urls = [f"http://{cluster[name].spec.api}/api/v1/points" for name in ("main", "backup")]

    async def post(url: str, body: dict[str, Any]) -> None:
        try:
            async with session.post(url, json=body) as response:
                await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass

    count = 0
    while True:
        count += 1
        await asyncio.gather(*(post(url, {"updates": [{"name": POINT, "value": count}]}) for url in urls))
        await asyncio.sleep(WRITE_INTERVAL)


async def until(condition: Any, timeout: float, what: str) -> Any:
    return await asyncio.to_thread(wait_for, condition, timeout, what, 0.005)


async def failovers(cluster: LocalCluster, runs: int) -> tuple[list[float], list[float]]:
    """SIGKILL main with a subscribed client, then restart it (fail-back): (kill -> values flowing, the backup's first act
    as the active -> values flowing)."""
    servers = [node.api for node in cluster.config.cluster.nodes]
    arrivals = Arrivals()
    from_kill, from_activation = [], []
    headers = {"Authorization": f"Bearer {cluster.config.api_token}"}
    async with TandemClient(servers, cluster.config.api_token, on_message=arrivals) as client, aiohttp.ClientSession(
        headers=headers, timeout=aiohttp.ClientTimeout(total=0.5)
    ) as session:
        await client.subscribe(points=[POINT])
        writer = asyncio.create_task(keep_writing(session, cluster))
        for _ in range(runs):
            await until(lambda: cluster.caught_up("backup", "main"), 30, "the backup to catch up")
            start = time.time()
            await until(lambda: client.connected_to == cluster["main"].spec.api and arrivals.first_after(start, 0), 30, "values from main")
            term, before, killed = view(cluster, "main")["term"], arrivals.latest(), time.time()
            cluster["main"].kill()
            flowing = await until(lambda: arrivals.first_after(killed, before), 10, "values flowing again")
            term, activated = await asyncio.to_thread(first_act, cluster, "backup", term)
            from_kill.append(flowing - killed)
            from_activation.append(flowing - activated)
            cluster["main"].start()
            await asyncio.to_thread(first_act, cluster, "main", term, 30)  # fail-back
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    return from_kill, from_activation


def main() -> int:
    args = parser(__doc__, runs=5).parse_args()
    with running_cluster(args.keep) as cluster:
        p50s, p99s, delivered, sender = asyncio.run(fanout(cluster, args.runs))
        from_kill, from_activation = asyncio.run(failovers(cluster, args.runs))
    ok = report(
        "live",
        [
            (f"fan-out latency p50 ({CLIENTS} clients, {RATE:,.0f} changes/s)", summary(p50s), "-", millis, lambda s: None),
            (f"fan-out latency p99 ({CLIENTS} clients, {RATE:,.0f} changes/s)", summary(p99s), "<= 100 ms", millis, lambda s: s["worst"] <= 0.1),
            ("fan-out: share of changes delivered", summary(delivered, higher_is_better=True), "1.0", lambda v: f"{v:.4f}", lambda s: s["worst"] >= 1.0),
            ("SIGKILL active -> values flowing in the client", summary(from_kill), "median <= 2 s", seconds, lambda s: s["median"] <= 2.0),
            ("new active's first act -> values flowing", summary(from_activation), "max <= 2 s", seconds, lambda s: s["worst"] <= 2.0),
        ],
        {"clients": CLIENTS, "rate": RATE, "sender": sender, "samples": {"p50": p50s, "p99": p99s, "kill": from_kill, "activation": from_activation}},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
