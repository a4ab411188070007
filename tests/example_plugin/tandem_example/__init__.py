"""An example third-party plugin: a "counter" driver whose points count up (step != 0) or hold what was written (step = 0)."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from plugins.hookspecs import hookimpl
from plugins.types import DeviceContext, DriverSpec, Reading


class CounterDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    period: float = Field(0.05, gt=0)  # seconds between counts
    fail_after: int | None = None  # raise in run() after this many counts (to show isolation)
    fail_at_start: bool = False  # raise when the host builds the driver
    write_delay: float = Field(0.0, ge=0)  # seconds a write takes (to catch a failover in the middle of one)


class CounterPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: int = 1  # 0: a setpoint that holds the last written value
    broken: bool = False  # report NaN, which the log cannot hold (to show that only this point is affected)


class CounterDriver:
    """Counts per point; every count and write passes the active guard first."""

    def __init__(self, context: DeviceContext) -> None:
        if context.settings.fail_at_start:
            raise RuntimeError(f"counter {context.device} cannot start: no licence")
        self.context = context
        self.count = 0
        self.held: dict[str, object] = {}

    async def run(self) -> None:
        settings = self.context.settings
        while True:
            self.context.act(f"count {self.context.device}")
            self.count += 1
            self.context.report([Reading(name, self._value(name, point)) for name, point in self.context.points.items()])
            if settings.fail_after is not None and self.count >= settings.fail_after:
                raise RuntimeError(f"counter {self.context.device} gave up after {self.count} counts")
            await asyncio.sleep(settings.period)

    def _value(self, name: str, point: CounterPoint) -> object:
        if point.broken:
            return float("nan")
        return self.count * point.step if point.step else self.held.get(name, 0)

    async def write(self, point: str, value):
        await asyncio.sleep(self.context.settings.write_delay)
        self.context.act(f"write {point} = {value}")
        self.held[point] = value
        return value


@hookimpl
def tandem_drivers(register) -> None:
    register(DriverSpec("counter", CounterDriver, CounterDevice, CounterPoint))
