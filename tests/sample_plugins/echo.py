"""A well-behaved driver plugin: its devices echo writes back and report a counter."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from plugins.hookspecs import hookimpl
from plugins.types import DeviceContext, DriverSpec, Reading


class EchoDevice(BaseModel):
    period: float = 0.05


class EchoPoint(BaseModel):
    start: int = 0


class EchoDriver:
    def __init__(self, context: DeviceContext) -> None:
        self.context = context

    async def run(self) -> None:
        count = 0
        while True:
            self.context.act("poll")
            self.context.report([Reading(name, point.start + count) for name, point in self.context.points.items()])
            count += 1
            await asyncio.sleep(self.context.settings.period)

    async def write(self, point: str, value):
        self.context.act(f"write {point}")
        return value


@hookimpl
def tandem_drivers(register) -> None:
    register(DriverSpec("echo", EchoDriver, EchoDevice, EchoPoint))
