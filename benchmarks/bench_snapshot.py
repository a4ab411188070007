"""Benchmark the process image: freeze/encode/decode of 100k points and UpdatePoints throughput."""

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
    return UpdatePoints(
        tuple(
            PointUpdate(NAMES[i], (i % 2 == 0) if i % 5 == 0 else ts % 100 + i / 100, "good" if i % 3 else "bad", ts, SOURCES[i])
            for i in range(start, start + BATCH)
        )
    )


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


def throughput_run(image: ProcessImage, run: int) -> dict[str, float]:
    """Push POINTS updates through build -> pickle.dumps -> pickle.loads -> apply; seconds per stage."""
    stages = dict.fromkeys(("build", "dumps", "loads", "apply"), 0.0)
    for start in range(0, POINTS, BATCH):
        seconds, cmd = timed(lambda: make_batch(start, STAMP + 10 + run))
        stages["build"] += seconds
        seconds, wire = timed(lambda: pickle.dumps(cmd))
        stages["dumps"] += seconds
        seconds, received = timed(lambda: pickle.loads(wire))
        stages["loads"] += seconds
        stages["apply"] += timed(lambda: image.apply(received))[0]
    return stages


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "max": max(samples)}


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
    rate = [POINTS / sum(stages.values()) for stages in runs]
    per_update = {name: [stages[name] / POINTS * 1e6 for stages in runs] for name in runs[0]}

    result = {
        "points": len(image.points),
        "documents": sum(map(len, image.documents.values())),
        "audit": len(image.audit),
        "runs": RUNS,
        "freeze_ms": summary(freeze),
        "encode_ms": summary(encode),
        "decode_ms": summary(decode),
        "encoded_mb": summary(size),
        "batch": BATCH,
        "updates_per_s": {"median": statistics.median(rate), "min": min(rate)},
        "us_per_update": {name: summary(samples) for name, samples in per_update.items()},
    }
    print(json.dumps(result))
    rows = [
        ("freeze (ms)", summary(freeze)),
        ("encode (ms)", summary(encode)),
        ("decode (ms)", summary(decode)),
        ("encoded size (MB)", summary(size)),
    ]
    rows += [(f"{name} (us/update)", summary(samples)) for name, samples in per_update.items()]
    print(f"\n{'metric':<24}{'median':>12}{'max':>12}")
    for name, stats in rows:
        print(f"{name:<24}{stats['median']:>12.3f}{stats['max']:>12.3f}")
    print(f"{'updates/s (min=worst)':<24}{statistics.median(rate):>12,.0f}{min(rate):>12,.0f}")


if __name__ == "__main__":
    main()
