"""Typed records that plugins hand to the host through the registration hooks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from cluster.commands import Scalar
from cluster.fence import Fence
from cluster.raft import ProposalFailed
from cluster.state import ProcessImage


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
    fence: Fence  # register(sock, timeout) every socket you open at once; abort(sock) when a request timed out
    log: logging.Logger


@dataclass(frozen=True)
class DriverSpec:
    """A field protocol: `factory` builds one Driver per configured device that names this driver."""

    name: str
    factory: Callable[[DeviceContext], Driver]
    device_model: type[BaseModel]
    point_model: type[BaseModel]
    plugin: str = field(default="", compare=False)  # filled in by the host: the plugin that registered it


class StepRejected(Exception):
    """A function's step was not applied: what it read changed meanwhile (decide again), or a write was refused."""


class Function(Protocol):
    """A BMS function (alarms, schedules, logic, ...): runs on the active server while it is active."""

    async def run(self) -> None:
        """Watch the image and commit steps until cancelled; state lives in the image, so a new active continues it."""


@dataclass(frozen=True)
class FunctionContext:
    """What a function factory gets: its validated entries, a read-only view of the image, and the way to commit."""

    function: str
    entries: dict[str, BaseModel]  # entry name -> its [[<kind>]] entry, validated by FunctionSpec.model
    image: ProcessImage  # read only: points, documents, functions (replicated state) and journals
    step: Callable[..., Awaitable[Any]]  # step(changes=(), journal=(), writes=(), keep_since=None): commit a cluster.commands.Step
    changed: Callable[[float], Awaitable[set[str]]]  # changed(timeout): names of points changed since the last call ("*": all)
    act: Callable[[str], int]  # the active guard: call before every effect outside the cluster (a notification); raises NotActive
    notifiers: dict[str, NotifierSpec]
    log: logging.Logger

    async def try_step(self, what: str, **parts: Any) -> bool:
        """Commit a step like `step`; False (and logged) if it did not apply, so the caller reads and decides again."""
        try:
            await self.step(**parts)
        except (StepRejected, ProposalFailed) as exc:
            self.log.info("%s: step not applied (%s); deciding again", what, exc)
            return False
        return True


@dataclass(frozen=True)
class FunctionSpec:
    """A BMS function configured by the [[<name>]] entries of the building (each validated by `model`), run by `factory`."""

    name: str
    factory: Callable[[FunctionContext], Function]
    model: type[BaseModel]
    plugin: str = field(default="", compare=False)


class Notifier(Protocol):
    """Sends alarm events somewhere (a webhook, mail); built per [[notifiers]] entry on the active server."""

    async def send(self, event: dict[str, Any]) -> None:
        """Deliver one journal event (its "id" stays the same if it is ever sent again); raise if it was not delivered."""


@dataclass(frozen=True)
class NotifierSpec:
    """A kind of notifier: `model` validates the notifier-specific keys of a [[notifiers]] entry."""

    name: str
    factory: Callable[[BaseModel], Notifier]
    model: type[BaseModel]
    plugin: str = field(default="", compare=False)
