"""An example third-party plugin: a "counter" driver whose devices count up, echo writes and can be told to fail."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from plugins.hookspecs import hookimpl
from plugins.types import DeviceContext, DriverSpec, Reading


class CounterDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    period: float = Field(0.05, gt=0)  # seconds between counts
    fail_after: int | None = None  # raise in run() after this many counts (to show isolation)


class CounterPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: int = 1


class CounterDriver:
    """Counts per point; every count and write passes the active guard first."""

    def __init__(self, context: DeviceContext) -> None:
        self.context = context
        self.count = 0

    async def run(self) -> None:
        settings = self.context.settings
        while True:
            self.context.act(f"count {self.context.device}")
            self.count += 1
            self.context.report([Reading(name, self.count * point.step) for name, point in self.context.points.items()])
            if settings.fail_after is not None and self.count >= settings.fail_after:
                raise RuntimeError(f"counter {self.context.device} gave up after {self.count} counts")
            await asyncio.sleep(settings.period)

    async def write(self, point: str, value):
        self.context.act(f"write {point}")
        return value


@hookimpl
def tandem_drivers(register) -> None:
    register(DriverSpec("counter", CounterDriver, CounterDevice, CounterPoint))
