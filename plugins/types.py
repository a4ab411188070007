"""Typed records that plugins hand to the host through the registration hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel

from cluster.commands import Scalar


class Driver(Protocol):
    """One device's connection, owned by the active server while it is active."""

    async def run(self) -> None:
        """Talk to the device (connect, poll, subscribe) until cancelled; reconnect by yourself on errors."""

    async def write(self, point: str, value: Scalar) -> Scalar:
        """Drive `point` to `value` on the device (not sending it again if the device already holds it: after a failover
        this may repeat a write the old active made) and return the value read back."""


@dataclass(frozen=True)
class Reading:
    """A value a driver read from a device; quality is one of cluster.commands.QUALITIES."""

    point: str
    value: Scalar
    quality: str = "good"
    ts: float | None = None  # the device's or driver's time stamp; None: the moment it was reported


@dataclass(frozen=True)
class DeviceContext:
    """What a driver factory gets: its device, the device's points, and the way to report and to act."""

    device: str
    settings: BaseModel  # the device entry, validated by DriverSpec.device_model
    points: dict[str, BaseModel]  # point name -> its entry, validated by DriverSpec.point_model
    report: Callable[[list[Reading]], None]
    act: Callable[[str], int]  # the active guard: call before every request to the device; raises NotActive
    log: logging.Logger


@dataclass(frozen=True)
class DriverSpec:
    """A field protocol: `factory` builds one Driver per configured device that names this driver."""

    name: str
    factory: Callable[[DeviceContext], Driver]
    device_model: type[BaseModel]
    point_model: type[BaseModel]
    plugin: str = field(default="", compare=False)  # filled in by the host: the plugin that registered it
