"""Helpers for driver tests that run a driver in-process against a simulated device: collect its readings, run it, wait."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from plugins.types import Driver, Reading


class Collector:
    """The `report` callable: keeps the latest reading per point, counts the reports and keeps each report's points."""

    def __init__(self) -> None:
        self.latest: dict[str, Reading] = {}
        self.reported: list[list[str]] = []  # per report, the points it carried

    @property
    def reports(self) -> int:
        return len(self.reported)

    def __call__(self, readings: list[Reading]) -> None:
        self.latest.update((reading.point, reading) for reading in readings)
        self.reported.append([reading.point for reading in readings])

    def since(self, report: int) -> list[str]:
        """The points reported from report number `report` (0: the first) on, in order."""
        return [point for points in self.reported[report:] for point in points]

    def value(self, name: str) -> tuple[Any, str] | None:
        reading = self.latest.get(name)
        return None if reading is None else (reading.value, reading.quality)

    def all(self, quality: str, value: Any = None) -> bool:
        return bool(self.latest) and all(r.quality == quality and (value is None or r.value == value) for r in self.latest.values())


@contextlib.asynccontextmanager
async def running(driver: Driver) -> AsyncIterator[asyncio.Task]:
    """Run `driver.run()` as a task for the block; cancel it and wait for it afterwards."""
    task = asyncio.create_task(driver.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    """Poll `condition` on the event loop until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)
    return result
