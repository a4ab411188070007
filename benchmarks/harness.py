"""Shared benchmark plumbing: real three-node clusters in a temp dir, point loading, statistics and the JSON + table report."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from webmanager.tools.launcher import LocalCluster, wait_for, write_config  # noqa: E402

BATCH = 5_000
SENDERS = 3  # concurrent connections posting batches to the active in throughput runs


@contextmanager
def running_cluster(keep: Path | None = None, **options: Any) -> Iterator[LocalCluster]:
    """A started loopback cluster with main active; stopped (and its temp dir removed) afterwards."""
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        cluster = LocalCluster(write_config(keep or Path(tmp), **options))
        cluster.start()
        try:
            cluster.wait_active(20, "main")
            yield cluster
        finally:
            cluster.stop()


class Poster:
    """A kept-alive HTTP connection to one node's API, posting pre-encoded bodies."""

    def __init__(self, cluster: LocalCluster, node: str) -> None:
        host, port = cluster[node].spec.api.rsplit(":", 1)
        self._connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self._headers = {"Authorization": f"Bearer {cluster.config.api_token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        self._connection.request(method, path, body, self._headers)
        response = self._connection.getresponse()
        return response.status, json.loads(response.read())

    def post(self, path: str, body: bytes) -> tuple[int, Any]:
        return self.request("POST", path, body)

    def close(self) -> None:
        self._connection.close()


def apply_building(cluster: LocalCluster, building: dict[str, Any]) -> None:
    """POST a building configuration to main (the active); RuntimeError if it is refused."""
    poster = Poster(cluster, "main")
    try:
        status, answer = poster.post("/api/v1/config", json.dumps(building).encode())
    finally:
        poster.close()
    if status != 200:
        raise RuntimeError(f"the building was refused: {answer}")


def updates_body(names: list[str], value: float) -> bytes:
    return json.dumps({"updates": [{"name": name, "value": value} for name in names]}).encode()


def point_names(count: int, prefix: str = "bench.p") -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def load_points(cluster: LocalCluster, count: int, batch: int = BATCH) -> None:
    """Give `count` points a value through the active server, `batch` per log entry."""
    names = point_names(count)
    poster = Poster(cluster, cluster.wait_active())
    try:
        for start in range(0, count, batch):
            status, answer = poster.post("/api/v1/points", updates_body(names[start : start + batch], 1.0))
            if status != 200:
                raise RuntimeError(f"loading points failed: {status} {answer}")
    finally:
        poster.close()


def all_applied(cluster: LocalCluster, index: int) -> bool:
    views = cluster.views()
    return all(v is not None and v["applied_index"] >= index for v in views.values())


def throughput_run(cluster: LocalCluster, bodies: list[bytes]) -> float:
    """Post every body (one batch each) over SENDERS connections; updates/s until applied on all three nodes."""
    queue = list(bodies)
    lock = threading.Lock()
    errors: list[str] = []

    def sender() -> None:
        poster = Poster(cluster, "main")
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                status, answer = poster.post("/api/v1/points", body)
                if status != 200:
                    errors.append(f"{status} {answer}")
        finally:
            poster.close()

    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"batches refused: {errors[:3]}")
    commit = view(cluster, "main")["commit_index"]
    wait_for(lambda: all_applied(cluster, commit), 60, "all nodes to apply", interval=0.005)
    return len(bodies) * BATCH / (time.monotonic() - started)


def view(cluster: LocalCluster, node: str) -> dict[str, Any]:
    answer = cluster[node].view()
    if answer is None:
        raise RuntimeError(f"{node} does not answer")
    return answer


def first_act(cluster: LocalCluster, node: str, after_term: int, timeout: float = 10) -> tuple[int, float]:
    """(term, wall time of the first act in that term) of the node once it acts in a term after `after_term`."""

    def acts() -> tuple[int, float] | None:
        answer = cluster[node].view()
        if answer and (answer["acts"]["term"] or 0) > after_term and answer["acts"]["first"] is not None:
            return answer["acts"]["term"], answer["acts"]["first"]
        return None

    return wait_for(acts, timeout, f"{node} to act as the active server", interval=0.005)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_shares(pid: int, runs: int, window: float) -> list[float]:
    """The process's CPU over `runs` back-to-back windows of `window` seconds, as shares of one core."""
    shares = []
    for _ in range(runs):
        start_cpu, start = cpu_seconds(pid), time.monotonic()
        wait_for(lambda: time.monotonic() - start >= window, window + 5, "a CPU window", interval=0.1)
        shares.append((cpu_seconds(pid) - start_cpu) / (time.monotonic() - start))
    return shares


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def summary(samples: list[float], higher_is_better: bool = False) -> dict[str, Any]:
    """Median and worst (max for costs, min for rates) of the runs."""
    if not samples:
        return {"runs": 0, "median": None, "worst": None}
    return {
        "runs": len(samples),
        "median": statistics.median(samples),
        "worst": min(samples) if higher_is_better else max(samples),
        "best": max(samples) if higher_is_better else min(samples),
    }


Row = tuple[str, dict[str, Any], str, Callable[[float], str], Callable[[dict[str, Any]], bool | None]]


def report(benchmark: str, rows: list[Row], extra: dict[str, Any] | None = None) -> bool:
    """Print one JSON line and a table; rows are (metric, summary, target text, format, met?). True if all targets met."""
    results = {metric: {**stats, "target": target, "met": met(stats)} for metric, stats, target, _, met in rows}
    print(json.dumps({"benchmark": benchmark, "results": results, **(extra or {})}))
    table = Table(title=benchmark)
    for column in ("metric", "runs", "median", "worst", "target", "met"):
        table.add_column(column, justify="left" if column in ("metric", "target") else "right")
    for metric, stats, target, fmt, _ in rows:
        met = results[metric]["met"]
        table.add_row(
            metric,
            str(stats["runs"]),
            fmt(stats["median"]) if stats["median"] is not None else "-",
            fmt(stats["worst"]) if stats["worst"] is not None else "-",
            target,
            "-" if met is None else ("yes" if met else "NO"),
        )
    Console(stderr=True, width=120).print(table)
    return all(result["met"] is not False for result in results.values())


def seconds(value: float) -> str:
    return f"{value:.3f} s"


def millis(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def per_second(value: float) -> str:
    return f"{value:,.0f}/s"


def parser(description: str, runs: int = 10) -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--runs", type=int, default=runs, help=f"repetitions (default {runs})")
    arguments.add_argument("--keep", type=Path, help="keep the cluster's data and logs in this directory")
    return arguments


async def paced_updates(
    cluster: LocalCluster, node: str, rate: float, batch: int, duration: float, names: list[str], value: Callable[[int], float] = float
) -> dict[str, Any]:
    """Post `rate` updates/s in batches of `batch` to `node` for `duration` s on a fixed schedule (sends never wait
    for earlier answers), batch k carrying value(k); returns counts of accepted and failed batches and how late the
    sender fell behind."""
    interval = batch / rate
    url = f"http://{cluster[node].spec.api}/api/v1/points"
    headers = {"Authorization": f"Bearer {cluster.config.api_token}"}
    loop = asyncio.get_running_loop()
    outcomes = {"accepted": 0, "failed": 0}
    late = 0.0

    async def post(session: aiohttp.ClientSession, body: bytes) -> None:
        try:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                await response.read()
                outcomes["accepted" if response.status == 200 else "failed"] += 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            outcomes["failed"] += 1

    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as session:
        tasks: set[asyncio.Task] = set()
        start = loop.time()
        for k in range(int(duration / interval)):
            due = start + k * interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            late = max(late, loop.time() - due)
            offset = (k * batch) % len(names)
            task = asyncio.create_task(post(session, updates_body(names[offset : offset + batch], value(k))))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return {**outcomes, "max_send_delay": late}
