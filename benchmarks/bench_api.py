"""API: requests/s for point reads (on the active and on a standby) and operator writes (committed through the log)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from harness import load_points, parser, per_second, point_names, report, running_cluster, summary

from webmanager.tools.launcher import LocalCluster

CONNECTIONS = 8  # concurrent keep-alive clients
SECONDS = 10.0
POINTS = 1_000


async def hammer(cluster: LocalCluster, node: str, method: str, body: dict | None) -> tuple[float, int]:
    """Requests/s that `CONNECTIONS` clients get answered by `node` in SECONDS (each waits for its answer), and the failures."""
    base = f"http://{cluster[node].spec.api}/api/v1/points/"
    names = point_names(POINTS)
    answered, failed = 0, 0
    deadline = time.monotonic() + SECONDS

    async def client(session: aiohttp.ClientSession, offset: int) -> None:
        nonlocal answered, failed
        k = offset
        while time.monotonic() < deadline:
            async with session.request(method, base + names[k % POINTS], json=body) as response:
                await response.read()
                answered, failed = answered + (response.status < 300), failed + (response.status >= 300)
            k += CONNECTIONS

    headers = {"Authorization": f"Bearer {cluster.config.api_token}"}
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        started = time.monotonic()
        await asyncio.gather(*(client(session, i) for i in range(CONNECTIONS)))
        return answered / (time.monotonic() - started), failed


def main() -> int:
    args = parser(__doc__, runs=5).parse_args()
    reads, standby_reads, writes, failures = [], [], [], 0
    with running_cluster(args.keep) as cluster:
        load_points(cluster, POINTS)
        for _ in range(args.runs):
            for samples, node, method, body in (
                (reads, "main", "GET", None), (standby_reads, "backup", "GET", None), (writes, "main", "PUT", {"value": 21.5}),
            ):
                rate, failed = asyncio.run(hammer(cluster, node, method, body))
                samples.append(rate)
                failures += failed
    ok = report(
        f"API ({CONNECTIONS} keep-alive clients, {POINTS:,} points)",
        [
            ("point reads/s on the active", summary(reads, higher_is_better=True), "(reported)", per_second, lambda s: None),
            ("point reads/s on a standby", summary(standby_reads, higher_is_better=True), "(reported)", per_second, lambda s: None),
            ("point writes/s (each committed on a majority before the answer)", summary(writes, higher_is_better=True), "(reported)",
             per_second, lambda s: None),
            ("failed requests", summary([float(failures)]), "0", lambda v: f"{v:.0f}", lambda s: s["median"] == 0),
        ],
        {"samples": {"reads": reads, "standby_reads": standby_reads, "writes": writes}},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
