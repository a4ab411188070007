"""Benchmark the process image: freeze/encode/decode of 100k points and UpdatePoints throughput."""

import gc
import json
import pickle
import statistics
import time
from collections.abc import Callable

from cluster.commands import PointUpdate, PutDocument, UpdatePoints, WritePoint
from cluster.state import ProcessImage

POINTS = 100_000
BATCH = 5_000
RUNS = 10
STAMP = 1_700_000_000.0


# A driver knows its point names and its source tag before it polls.
NAMES = [f"site/building-{i % 7}/ahu-{i // 40}/point-{i}" for i in range(POINTS)]
SOURCES = [f"modbus:device-{i // 500}" for i in range(POINTS)]


def make_batch(start: int, ts: float) -> UpdatePoints:
    """Build a validated batch as a driver would, for points start..start+BATCH-1."""
    updates = []
    for i in range(start, start + BATCH):
        value = (i % 2 == 0) if i % 5 == 0 else ts % 100 + i / 100
        updates.append(PointUpdate(NAMES[i], value, "good" if i % 3 else "bad", ts, SOURCES[i]))
    return UpdatePoints(tuple(updates))


def build_image() -> ProcessImage:
    image = ProcessImage()
    for start in range(0, POINTS, BATCH):
        image.apply(make_batch(start, STAMP))
    for n in range(20):
        body = {"host": f"10.0.{n}.1", "port": 502, "unit": n, "points": [{"address": a} for a in range(50)]}
        image.apply(PutDocument("devices", f"device-{n}", body, "admin", STAMP + 1))
    for n in range(1_000):
        image.apply(WritePoint(NAMES[n % 40], float(n), "operator", STAMP + 2 + n))
    return image


def timed(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


class GcClock:
    """Wall time spent in the cyclic garbage collector while registered in gc.callbacks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


def throughput_run(image: ProcessImage, run: int) -> dict[str, float]:
    """Push POINTS updates through build, pickle.dumps, pickle.loads, apply: seconds per stage.

    "gc" is the part of those stages spent in garbage collections; "cpu" is this process's CPU time.
    """
    stages = dict.fromkeys(("build", "dumps", "loads", "apply"), 0.0)
    gc_clock = GcClock()
    gc.callbacks.append(gc_clock)
    cpu_started = time.process_time()
    for start in range(0, POINTS, BATCH):
        seconds, cmd = timed(lambda: make_batch(start, STAMP + 10 + run))
        stages["build"] += seconds
        seconds, wire = timed(lambda: pickle.dumps(cmd))
        stages["dumps"] += seconds
        seconds, received = timed(lambda: pickle.loads(wire))
        stages["loads"] += seconds
        stages["apply"] += timed(lambda: image.apply(received))[0]
    cpu = time.process_time() - cpu_started
    gc.callbacks.remove(gc_clock)
    return {**stages, "total": sum(stages.values()), "gc": gc_clock.seconds, "cpu": cpu}


def main() -> None:
    image = build_image()
    freeze, encode, decode, size = [], [], [], []
    for _ in range(RUNS):
        seconds, frozen = timed(image.freeze)
        freeze.append(seconds * 1e3)
        seconds, data = timed(lambda: ProcessImage.encode(frozen))
        encode.append(seconds * 1e3)
        decode.append(timed(lambda: ProcessImage.decode(data))[0] * 1e3)
        size.append(len(data) / 1e6)
    runs = [throughput_run(image, run) for run in range(RUNS)]
    us_per_update = {name: [stages[name] / POINTS * 1e6 for stages in runs] for name in runs[0]}
    rate = [POINTS / stages["total"] for stages in runs]
    cpu_rate = [POINTS / stages["cpu"] for stages in runs]

    # Each row: metric, median, worst (max for costs, min for rates).
    rows = [
        ("freeze_ms", statistics.median(freeze), max(freeze)),
        ("encode_ms", statistics.median(encode), max(encode)),
        ("decode_ms", statistics.median(decode), max(decode)),
        ("encoded_mb", statistics.median(size), max(size)),
        *((f"{name}_us_per_update", statistics.median(v), max(v)) for name, v in us_per_update.items()),
        ("updates_per_s", statistics.median(rate), min(rate)),
        ("updates_per_cpu_s", statistics.median(cpu_rate), min(cpu_rate)),
    ]
    header = {
        "points": len(image.points),
        "documents": sum(map(len, image.documents.values())),
        "audit": len(image.audit),
        "batch": BATCH,
        "runs": RUNS,
    }
    print(json.dumps(header | {name: {"median": median, "worst": worst} for name, median, worst in rows}))
    print(f"\n{'metric':<26}{'median':>14}{'worst':>14}")
    for name, median, worst in rows:
        print(f"{name:<26}{median:>14,.3f}{worst:>14,.3f}")


if __name__ == "__main__":
    main()
