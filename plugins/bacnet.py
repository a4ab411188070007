"""The built-in BACnet/IP driver: one bacpypes3 application per device, ReadPropertyMultiple polling, COV, prioritized writes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bacpypes3.apdu import (
    AbortPDU,
    AbortReason,
    ErrorRejectAbortNack,
    SubscribeCOVRequest,
    UnconfirmedCOVNotificationRequest,
)
from bacpypes3.basetypes import BinaryPV, ErrorType, PriorityValue, PropertyIdentifier
from bacpypes3.ipv4.app import NormalApplication
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import Address, IPv4Address
from bacpypes3.primitivedata import (
    Boolean,
    Enumerated,
    Null,
    ObjectIdentifier,
    ObjectType,
    Real,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cluster.commands import Scalar
from cluster.guard import NotActive

from .hookspecs import hookimpl
from .types import DeviceContext, DriverSpec, Reading

logger = logging.getLogger(__name__)

MAX_INSTANCE = 4194303  # also the wildcard instance
CLIENT_INSTANCE = MAX_INSTANCE - 1  # the device object of our own (client) application
PRESENT_VALUE, PRIORITY_ARRAY = PropertyIdentifier("present-value"), PropertyIdentifier("priority-array")
RPM_CHUNK = 40  # read-access specifications per ReadPropertyMultiple request
T = TypeVar("T")


def _ipv4(text: str | None) -> str | None:
    if text is not None and not isinstance(Address(text), IPv4Address):  # Address raises ValueError on nonsense
        raise ValueError(f"{text!r} is not an IPv4 'host:port' address")
    return text


class BacnetDevice(BaseModel):
    """The driver-specific keys of a BACnet/IP [[devices]] entry; durations are in seconds."""

    model_config = ConfigDict(extra="forbid")
    address: str | None = None  # "host:port" (47808 if omitted); None: find device_instance with a Who-Is broadcast
    device_instance: int | None = Field(None, ge=0, lt=MAX_INSTANCE)  # with an address: confirmed by a directed Who-Is
    local_address: str = "127.0.0.1:0"  # what our application binds ("host[/prefix]:port"); port 0: a free port at start
    poll_interval: float = Field(1.0, gt=0)
    apdu_timeout: float = Field(1.0, gt=0, le=60)
    apdu_retries: int = Field(0, ge=0, le=3)  # an absent device is noticed after apdu_timeout * (1 + apdu_retries)
    cov_lifetime: int = Field(300, ge=2)  # seconds a COV subscription lasts; renewed at half of it

    _addresses = field_validator("address", "local_address")(_ipv4)

    @model_validator(mode="after")
    def _findable(self) -> BacnetDevice:
        if self.address is None and self.device_instance is None:
            raise ValueError("give the device's address, its device_instance, or both")
        local = Address(self.local_address)
        if self.address is None and local.addrBroadcastTuple == local.addrTuple:
            raise ValueError("a Who-Is broadcast for device_instance needs local_address with a subnet, e.g. '192.168.1.20/24:47808'")
        return self


class BacnetPoint(BaseModel):
    """The driver-specific keys of a BACnet [[points]] entry."""

    model_config = ConfigDict(extra="forbid")
    object: str  # "type,instance", e.g. "analog-value,1"
    property: str = "present-value"
    cov: bool = False  # subscribe to change-of-value notifications instead of polling
    priority: int = Field(8, ge=1, le=16)  # write priority; 6 is reserved for minimum on/off time

    @field_validator("object")
    @classmethod
    def _object(cls, text: str) -> str:
        kind, _, instance = (part.strip() for part in text.partition(","))
        if not instance.isdigit() or int(instance) > MAX_INSTANCE:
            raise ValueError(f"{text!r}: expected 'type,instance' with instance 0..{MAX_INSTANCE}, e.g. 'analog-value,1'")
        try:
            return f"{ObjectType(kind)},{int(instance)}"
        except ValueError:
            raise ValueError(f"unknown BACnet object type {kind!r}") from None

    @field_validator("property")
    @classmethod
    def _property(cls, text: str) -> str:
        try:
            return str(PropertyIdentifier(text.strip()))
        except ValueError:
            raise ValueError(f"unknown BACnet property {text!r}") from None

    @field_validator("priority")
    @classmethod
    def _priority(cls, priority: int) -> int:
        if priority == 6:
            raise ValueError("priority 6 is reserved for minimum on/off time")
        return priority

    @model_validator(mode="after")
    def _cov_property(self) -> BacnetPoint:
        if self.cov and self.property != "present-value":
            raise ValueError("cov = true reports present-value; poll other properties (cov = false)")
        return self


class BacnetError(Exception):
    """The device answered with an error, a reject or an abort; `no_response`: it did not answer in time."""

    def __init__(self, message: str, no_response: bool = False) -> None:
        super().__init__(message)
        self.no_response = no_response


@dataclass(frozen=True)
class _Ref:
    object: ObjectIdentifier
    property: PropertyIdentifier


class _Client(NormalApplication):
    """Our own BACnet application; hands unconfirmed COV notifications to the driver."""

    def __init__(self, device: DeviceObject, address: Address, on_cov: Callable[[_Client, Any], Awaitable[None]]) -> None:
        super().__init__(device, address)
        self.on_cov = on_cov

    async def do_UnconfirmedCOVNotificationRequest(self, apdu: UnconfirmedCOVNotificationRequest) -> None:
        await self.on_cov(self, apdu)


class BacnetDriver:
    """One BACnet device: finds it, polls its points, keeps COV subscriptions alive, writes with read-back."""

    def __init__(self, context: DeviceContext) -> None:
        self.context = context
        self.settings: BacnetDevice = context.settings  # type: ignore[assignment]
        self.points: dict[str, BacnetPoint] = context.points  # type: ignore[assignment]
        self._refs = {name: _Ref(ObjectIdentifier(p.object), PropertyIdentifier(p.property)) for name, p in self.points.items()}
        self._polled = [name for name, point in self.points.items() if not point.cov]
        self._cov = dict(enumerate((name for name, point in self.points.items() if point.cov), start=1))  # process id -> point
        self._address = Address(self.settings.address) if self.settings.address else None
        self._instance = self.settings.device_instance
        self._found = False  # an I-Am confirmed the device (its instance at its address)
        self._app: _Client | None = None
        self._socket: Any = None  # the application's UDP socket, as the fence knows it
        self._ready = asyncio.Event()  # the application is open and the device's address known
        self._online: bool | None = None  # None: not heard from yet
        self._renew_at = 0.0  # loop time of the next (re)subscription
        self._quality: dict[str, str] = {}  # last quality per point, to log a config error once

    # ---- lifecycle ----

    async def run(self) -> None:
        """Poll at a fixed rate and renew subscriptions until cancelled; the socket is closed on the way out."""
        self._app = app = self._open()
        self._renew_at = 0.0  # subscriptions name our address: a new application subscribes again
        loop = asyncio.get_running_loop()
        try:
            await self._fence(app)
            if self._address is not None:
                self._ready.set()
            next_poll = loop.time()
            while True:
                if loop.time() >= next_poll:
                    await self._cycle(app)
                    next_poll = max(next_poll + self.settings.poll_interval, loop.time())
                if self._online and self._cov and loop.time() >= self._renew_at:
                    await self._subscribe(app)
                wake = min(next_poll, self._renew_at) if self._online and self._cov else next_poll
                await asyncio.sleep(max(0.0, wake - loop.time()))
        finally:
            self._ready.clear()
            self._app = None
            if self._socket is not None:
                self.context.fence.abort(self._socket)
                self._socket = None
            app.close()

    def _open(self) -> _Client:
        local = Address(self.settings.local_address)
        if local.addrTuple[1]:  # a fixed port: refuse it now if taken (bacpypes3 would retry binding it forever)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(local.addrTuple)
        device = DeviceObject(
            objectIdentifier=("device", CLIENT_INSTANCE),
            objectName=f"tandem {self.context.device}",
            vendorIdentifier=999,
            apduTimeout=round(self.settings.apdu_timeout * 1000),  # the default (3 s x 4 tries) makes a lost device take 12 s
            numberOfApduRetries=self.settings.apdu_retries,
        )
        return _Client(device, local, self._on_cov)

    async def _fence(self, app: _Client) -> None:
        """Hand our UDP socket to the fence (shut for sending the moment the role is lost) and pass every datagram through
        the act guard: bacpypes3 sends retries and segments by itself, and none may leave once this server is not active."""
        server = app.normal.server
        while server.local_transport is None:  # bacpypes3 binds in a task of its own
            await asyncio.sleep(0.005)
        transport = server.local_transport
        self._socket = transport.get_extra_info("socket")
        self.context.fence.register(self._socket, self.settings.apdu_timeout)
        send = transport.sendto

        def guarded(data: bytes, address: Any = None) -> None:
            try:
                self.context.act(f"bacnet frame {self.context.device}")
            except NotActive:
                logger.debug("bacnet %s: a datagram was not sent: this server is not active", self.context.device)
                return
            send(data, address)

        transport.sendto = guarded  # type: ignore[method-assign]

    # ---- polling and device presence ----

    async def _cycle(self, app: _Client) -> None:
        """Find the device if need be, then read the polled points and the device's status (so a COV-only device is watched too)."""
        try:
            if not self._found:
                await self._find(app)
            names = self._polled
            readings = await self._read(app, names[:RPM_CHUNK], liveness=True)
            for start in range(RPM_CHUNK, len(names), RPM_CHUNK):
                readings += await self._read(app, names[start : start + RPM_CHUNK])
        except BacnetError as err:
            if not err.no_response:
                raise
            self._lost(str(err))
            return
        self._reached()
        self.context.report(readings)

    async def _find(self, app: _Client) -> None:
        """Who-Is, directed at the address (to confirm or learn the instance) or broadcast (to learn the address)."""
        self.context.act(f"bacnet who-is {self.context.device}")
        i_ams = await app.who_is(self._instance, self._instance, self._address, timeout=self.settings.apdu_timeout)
        if not i_ams:
            who = "the device" if self._instance is None else f"device {self._instance}"
            raise BacnetError(f"no I-Am from {who} at {self._address or 'a broadcast'}", no_response=True)
        self._address, self._instance, self._found = i_ams[0].pduSource, i_ams[0].iAmDeviceIdentifier[1], True
        self.context.log.info("bacnet %s: device %d is at %s", self.context.device, self._instance, self._address)
        self._ready.set()

    async def _read(self, app: _Client, names: list[str], liveness: bool = False) -> list[Reading]:
        refs = [self._refs[name] for name in names]
        if liveness:
            refs.append(_Ref(ObjectIdentifier(("device", self._instance)), PropertyIdentifier("system-status")))
        request: list[Any] = []
        for ref in refs:
            request += [ref.object, [ref.property]]
        self.context.act(f"bacnet read {self.context.device} ({len(names)} points)")
        try:
            results = await self._call("read", app.read_property_multiple(self._address, request))
        except BacnetError as err:
            if err.no_response:
                raise
            return [self._config_error(name, str(err)) for name in names]  # the device refused the whole request
        values = {(object_id, property_id): value for object_id, property_id, _, value in results}
        return [self._reading(name, values.get((self._refs[name].object, self._refs[name].property))) for name in names]

    def _reading(self, name: str, value: Any) -> Reading:
        if isinstance(value, ErrorType):
            return self._config_error(name, f"{value.errorClass}: {value.errorCode}")
        if value is None:
            return self._config_error(name, "no value in the answer (unknown property type?)")
        self._quality[name] = "good"
        return Reading(name, _scalar(value))

    def _config_error(self, name: str, why: str) -> Reading:
        if self._quality.get(name) != "config-error":
            ref = self._refs[name]
            self.context.log.error("bacnet %s: point %s (%s %s): %s", self.context.device, name, ref.object, ref.property, why)
        self._quality[name] = "config-error"
        return Reading(name, None, "config-error")

    def _reached(self) -> None:
        if self._online is False:
            self.context.log.info("bacnet %s: device at %s is reachable again", self.context.device, self._address)
        if not self._online:  # first contact or back: (re)subscribe now, a device that was away may have lost its subscriptions
            self._online, self._renew_at = True, 0.0

    def _lost(self, why: str) -> None:
        if self._online is not False:
            self.context.log.warning("bacnet %s: device is unreachable: %s", self.context.device, why)
            self._online = False
        self.context.report([Reading(name, None, "comm-failure") for name in self.points])

    # ---- change of value ----

    async def _subscribe(self, app: _Client) -> None:
        """SubscribeCOV for every COV point (a renewal is the same request); unconfirmed notifications."""
        for process_id, name in self._cov.items():
            request = SubscribeCOVRequest(
                subscriberProcessIdentifier=process_id,
                monitoredObjectIdentifier=self._refs[name].object,
                issueConfirmedNotifications=False,
                lifetime=self.settings.cov_lifetime,
                destination=self._address,
            )
            self.context.act(f"bacnet subscribe {self.context.device} {name}")
            try:
                await self._call(f"subscribe {name}", app.request(request))
            except BacnetError as err:
                if err.no_response:
                    self._lost(str(err))
                    return
                self.context.report([self._config_error(name, str(err))])
        self._renew_at = asyncio.get_running_loop().time() + self.settings.cov_lifetime / 2

    async def _on_cov(self, app: _Client, apdu: UnconfirmedCOVNotificationRequest) -> None:
        name = self._cov.get(apdu.subscriberProcessIdentifier)
        if name is None or apdu.pduSource != self._address or apdu.monitoredObjectIdentifier != self._refs[name].object:
            logger.debug("ignored a COV notification from %s for %s", apdu.pduSource, apdu.monitoredObjectIdentifier)
            return
        ref = self._refs[name]
        kind = (await app.get_vendor_info(device_address=self._address)).get_object_class(ref.object[0])
        datatype = kind.get_property_type(ref.property) if kind else None
        for element in apdu.listOfValues:
            if element.propertyIdentifier == ref.property and datatype is not None:
                self._quality[name] = "good"
                self.context.report([Reading(name, _scalar(element.value.cast_out(datatype)))])

    # ---- writes ----

    async def write(self, point: str, value: Scalar) -> Scalar:
        """WriteProperty at the point's priority (None: relinquish it, i.e. write Null) unless the device already holds
        it, then read the property back."""
        ref = self._refs[point]
        with contextlib.suppress(TimeoutError):  # run() may be (re)starting or still looking for the device
            await asyncio.wait_for(self._ready.wait(), 2 * self.settings.apdu_timeout)
        app, address = self._app, self._address
        if app is None or address is None or not self._ready.is_set():
            raise BacnetError(f"write {point}: device {self.context.device} is not connected")
        if await self._holds(app, address, point, value):
            self.context.log.info("bacnet %s: %s already holds %r; not written again", self.context.device, point, value)
        else:
            await self._write(app, address, point, value)
        self.context.act(f"bacnet read {self.context.device} {point}")
        return _scalar(await self._call(f"read {point}", app.read_property(address, ref.object, ref.property)))

    async def _write(self, app: _Client, address: Address, point: str, value: Scalar) -> None:
        ref, priority = self._refs[point], self.points[point].priority
        self.context.act(f"bacnet write {self.context.device} {point} = {value!r} @{priority}")
        await self._call(
            f"write {point}", app.write_property(address, ref.object, ref.property, Null(()) if value is None else value, priority=priority)
        )

    async def _holds(self, app: _Client, address: Address, point: str, value: Scalar) -> bool:
        """Whether the device already holds `value` from us (a failover may repeat a write the old active made): the
        point's slot in a commandable object's priority array, else the property itself; False if it cannot tell."""
        ref, priority = self._refs[point], self.points[point].priority
        reads = [(PRIORITY_ARRAY, priority)] if ref.property == PRESENT_VALUE else []
        for prop, index in [*reads, (ref.property, None)]:
            self.context.act(f"bacnet read {self.context.device} {point} {prop}")
            try:
                held = await self._call(f"read {point}", app.read_property(address, ref.object, prop, array_index=index))
            except BacnetError as err:
                if err.no_response:
                    raise
                continue  # not commandable (no priority array), or not readable
            if isinstance(held, PriorityValue):  # a choice: its one set element is named by _choice
                held = None if held._choice == "null" else getattr(held, held._choice)
            return _scalar(held) == value
        return False

    @staticmethod
    async def _call(what: str, request: Awaitable[T]) -> T:
        """Await a request; bacpypes3 raises ErrorRejectAbortNack, a BaseException: caught by name, raised as a BacnetError."""
        try:
            return await request
        except ErrorRejectAbortNack as err:
            raise BacnetError(f"{what}: {err}", isinstance(err, AbortPDU) and err.reason == AbortReason.noResponse) from None


def _scalar(value: Any) -> Scalar:
    """A decoded BACnet value as a process-image scalar: Null -> None, binary -> bool, other enumerations -> their name."""
    if value is None or isinstance(value, Null):
        return None
    if isinstance(value, BinaryPV):
        return int(value) == 1
    if isinstance(value, Enumerated):
        return value.attr if isinstance(value.attr, str) else int(value)
    if isinstance(value, Boolean):
        return bool(value)
    if isinstance(value, Real):  # 32 bits: 20.3, not 20.299999237060547
        return float(f"{value:.7g}")
    for kind in (float, int, str):
        if isinstance(value, kind):
            return kind(value)
    return str(value)


@hookimpl
def tandem_drivers(register: Callable[[DriverSpec], None]) -> None:
    register(DriverSpec("bacnet", BacnetDriver, BacnetDevice, BacnetPoint))
