"""The built-in Modbus TCP driver: one connection per device, merged block reads reporting what changed, writes with read-back."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from cluster.commands import Scalar

from .hookspecs import hookimpl
from .types import DeviceContext, DriverSpec, Reading

logger = logging.getLogger(__name__)

DATATYPE = ModbusClientMixin.DATATYPE
TYPES = {  # point type -> (pymodbus data type, registers, integer range or None)
    "int16": (DATATYPE.INT16, 1, (-(2**15), 2**15 - 1)),
    "uint16": (DATATYPE.UINT16, 1, (0, 2**16 - 1)),
    "int32": (DATATYPE.INT32, 2, (-(2**31), 2**31 - 1)),
    "uint32": (DATATYPE.UINT32, 2, (0, 2**32 - 1)),
    "float32": (DATATYPE.FLOAT32, 2, None),
    "float64": (DATATYPE.FLOAT64, 4, None),
}
BIT_KINDS = ("coil", "discrete")
MAX_COUNT = {"coil": 2000, "discrete": 2000, "holding": 125, "input": 125}  # per read request (Modbus spec)
READ_CALL = {"coil": "read_coils", "discrete": "read_discrete_inputs", "holding": "read_holding_registers", "input": "read_input_registers"}
FLOAT32_MAX = 3.4028234663852886e38
# an exception response: a wrong address, function or value is a configuration error; a gateway that cannot reach it is comm-failure
EXCEPTION_QUALITY = {1: "config-error", 2: "config-error", 3: "config-error", 10: "comm-failure", 11: "comm-failure"}


class ModbusDevice(BaseModel):
    """The driver-specific keys of a Modbus TCP [[devices]] entry; durations are in seconds."""

    model_config = ConfigDict(extra="forbid")
    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=255)
    poll_interval: float = Field(1.0, gt=0)
    timeout: float = Field(1.0, gt=0)  # per request (and per connect)
    request_gap: float = Field(0.0, ge=0)  # pause between two requests on this connection
    max_gap: int = Field(10, ge=0)  # unused registers/bits that may be read over to merge two points into one request
    reconnect_min: float = Field(0.5, gt=0)
    reconnect_max: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _backoff(self) -> ModbusDevice:
        if self.reconnect_max < self.reconnect_min:
            raise ValueError(f"reconnect_max ({self.reconnect_max}) must not be below reconnect_min ({self.reconnect_min})")
        return self


class ModbusPoint(BaseModel):
    """The driver-specific keys of a Modbus [[points]] entry; value = raw * scale + offset."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # The key is `register`; the attribute is `kind`, as a field named `register` would shadow BaseModel.register.
    kind: Literal["coil", "discrete", "holding", "input"] = Field(alias="register")
    address: int = Field(ge=0, le=65535)
    type: Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64"] | None = Field(None, validate_default=True)
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0

    @field_validator("type")
    @classmethod
    def _type_fits(cls, value: str | None, info: ValidationInfo) -> str | None:
        register, address = info.data.get("kind"), info.data.get("address")
        if register is None:
            return value  # the register key itself is wrong; that error is reported
        if register in BIT_KINDS:
            if value not in (None, "bool"):
                raise ValueError(f"a {register} holds one bit: the type must be bool, not {value}")
            return "bool"
        value = value or "uint16"
        if value == "bool":
            raise ValueError(f"type bool needs register coil or discrete, not {register}")
        if address is not None and address + TYPES[value][1] > 65536:
            raise ValueError(f"{value} at address {address} needs {TYPES[value][1]} registers, past the last address 65535")
        return value

    @field_validator("scale", "offset")
    @classmethod
    def _numbers_only(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("kind") in BIT_KINDS and value != cls.model_fields[info.field_name].default:
            raise ValueError("scale and offset apply to registers, not to a coil or discrete input")
        if info.field_name == "scale" and (value == 0 or not math.isfinite(value)):
            raise ValueError("scale must be a finite number other than 0")
        return value

    @property
    def width(self) -> int:
        """Bits (coil, discrete) or registers this point occupies."""
        return 1 if self.type == "bool" else TYPES[self.type][1]


@dataclass
class Block:
    """One read request: `count` bits or registers of one kind from `address`, covering its points; `last` is what it
    read last on this connection (None: its points are all reported on the next read)."""

    kind: str
    address: int
    count: int
    points: list[tuple[str, ModbusPoint]] = field(default_factory=list)
    last: list[int] | list[bool] | None = None

    @cached_property
    def covering(self) -> list[list[int]]:
        """For each bit or register of the block, the indexes in `points` of the points it is part of."""
        covering: list[list[int]] = [[] for _ in range(self.count)]
        for index, (_, point) in enumerate(self.points):
            for offset in range(point.address - self.address, point.address - self.address + point.width):
                covering[offset].append(index)
        return covering

    def changed(self, values: list[int] | list[bool]) -> list[tuple[str, ModbusPoint]]:
        """The points whose bits or registers in `values` differ from the last read (all of them on the first), which
        `values` then becomes."""
        last, self.last = self.last, values
        if last is None:
            return self.points
        if values == last:
            return []
        covering = self.covering
        moved = dict.fromkeys(index for offset, (new, old) in enumerate(zip(values, last)) if new != old for index in covering[offset])
        return [self.points[index] for index in moved]


def plan_blocks(points: dict[str, ModbusPoint], max_gap: int) -> list[Block]:
    """Merge points of one register kind into blocks when the hole between them is at most `max_gap` and the request stays in limits."""
    blocks: list[Block] = []
    for name, point in sorted(points.items(), key=lambda item: (item[1].kind, item[1].address, item[0])):
        last, end = blocks[-1] if blocks else None, point.address + point.width
        if (
            last is not None
            and last.kind == point.kind
            and point.address - (last.address + last.count) <= max_gap
            and max(end, last.address + last.count) - last.address <= MAX_COUNT[point.kind]
        ):
            last.count = max(last.count, end - last.address)
            last.points.append((name, point))
        else:
            blocks.append(Block(point.kind, point.address, point.width, [(name, point)]))
    return blocks


def _float32(raw: float) -> float:
    """The shortest decimal that encodes to the same float32 (21.3, not 21.299999237060547)."""
    registers = ModbusClientMixin.convert_to_registers(raw, DATATYPE.FLOAT32)
    for digits in range(6, 10):
        short = float(f"{raw:.{digits}g}")
        try:
            if ModbusClientMixin.convert_to_registers(short, DATATYPE.FLOAT32) == registers:
                return short
        except (OverflowError, ValueError):
            break
    return raw


def decode(point: ModbusPoint, values: list[int] | list[bool]) -> Scalar:
    """A point's value from the bits or registers that start at its address."""
    if point.type == "bool":
        return bool(values[0])
    data_type, width, _ = TYPES[point.type]
    words = list(values[:width])
    raw = ModbusClientMixin.convert_from_registers(words, data_type, word_order=point.word_order)
    if point.type == "float32":
        raw = _float32(float(raw))
    if point.scale == 1.0 and point.offset == 0.0:
        return raw
    return float(f"{raw * point.scale + point.offset:.15g}")  # drop binary noise: 123 * 0.1 -> 12.3


def encode(point: ModbusPoint, value: Scalar) -> list[int]:
    """The registers that make `value` (after inverse scaling) at a holding point; ValueError if it does not fit."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"a {point.type} point takes a number, not {value!r}")
    raw: int | float = value if (point.scale, point.offset) == (1.0, 0.0) else (value - point.offset) / point.scale
    data_type, _, limits = TYPES[point.type]
    if limits is not None:
        if not math.isfinite(raw):
            raise ValueError(f"{value!r} is not a number a {point.type} can hold")
        raw = round(raw)
        if not limits[0] <= raw <= limits[1]:
            raise ValueError(f"{value!r} is out of range: raw {raw} does not fit {point.type} ({limits[0]}..{limits[1]})")
    elif point.type == "float32" and math.isfinite(raw) and abs(raw) > FLOAT32_MAX:
        raise ValueError(f"{value!r} is out of range for float32")
    return ModbusClientMixin.convert_to_registers(float(raw) if limits is None else raw, data_type, word_order=point.word_order)


class ModbusDriver:
    """Owns one device's connection: connects with back-off, polls in blocks, writes with read-back."""

    def __init__(self, context: DeviceContext) -> None:
        self.context = context
        self.settings: ModbusDevice = context.settings  # type: ignore[assignment]
        self.points: dict[str, ModbusPoint] = context.points  # type: ignore[assignment]
        self.blocks = plan_blocks(self.points, self.settings.max_gap)
        self._client: AsyncModbusTcpClient | None = None
        self._socket: Any = None  # the connection's socket, as the fence knows it
        self._lock = asyncio.Lock()  # one request at a time on the connection, poller and writes alike
        self._next_request = 0.0  # loop time before which no request may start (request_gap)
        self._online: bool | None = None  # None until the device first answers or fails
        self._delay = self.settings.reconnect_min

    # ---- connection ----

    async def run(self) -> None:
        """Connect, poll at a fixed rate, and on a lost connection report comm-failure and reconnect with back-off."""
        try:
            while True:
                try:
                    await self._connect()
                    await self._poll_forever()
                except (ModbusException, OSError) as exc:  # refused, timed out, closed (NotActive is not caught)
                    self._lost(exc)
                self._close()
                await asyncio.sleep(self._delay)
                self._delay = min(self._delay * 2, self.settings.reconnect_max)
        finally:
            self._close()

    async def _connect(self) -> None:
        s = self.settings
        self.context.act(f"modbus connect {self.context.device}")
        self._client = AsyncModbusTcpClient(
            s.host, port=s.port, name=self.context.device, timeout=s.timeout, retries=0, reconnect_delay=0
        )
        if not await self._client.connect():
            raise ConnectionError(f"cannot connect to {s.host}:{s.port}")
        self._socket = self._client.ctx.transport.get_extra_info("socket")
        self.context.fence.register(self._socket, s.timeout)
        for block in self.blocks:  # a new connection reports every point once (a new active too: it starts connected to none)
            block.last = None

    def _close(self) -> None:
        """Abort the connection (RST, unsent requests dropped): a closed field connection never delivers anything later."""
        if self._socket is not None:
            self.context.fence.abort(self._socket)
            self._socket = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _lost(self, exc: BaseException) -> None:
        if self._online is not False:
            self.context.log.warning(
                "modbus device %s (%s:%d) is unreachable: %s; its points are comm-failure until it returns",
                self.context.device, self.settings.host, self.settings.port, str(exc) or type(exc).__name__,
            )
            self.context.report([Reading(name, None, "comm-failure") for name in self.points])
        else:
            logger.debug("modbus device %s still unreachable: %s", self.context.device, exc)
        self._online = False

    def _answered(self) -> None:
        if self._online is False:
            self.context.log.info("modbus device %s is reachable again", self.context.device)
        elif self._online is None:
            self.context.log.info("modbus device %s connected at %s:%d", self.context.device, self.settings.host, self.settings.port)
        self._online = True
        self._delay = self.settings.reconnect_min

    async def _request(self, what: str, call: Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]) -> ModbusPDU:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if (wait := self._next_request - loop.time()) > 0:
                await asyncio.sleep(wait)
            client = self._client
            if client is None or not client.connected:
                raise ConnectionError(f"modbus device {self.context.device} is not connected")
            self.context.act(f"modbus {what} {self.context.device}")  # the frame is written in this same loop step
            try:
                return await call(client)
            except BaseException:  # timed out, cancelled (the role is lost) or broken: the connection is in doubt
                self._close()
                raise
            finally:
                self._next_request = loop.time() + self.settings.request_gap

    async def _read(self, register: str, address: int, count: int) -> list[int] | list[bool] | int:
        """The bits or registers read, or the exception code the device answered with."""
        unit = self.settings.unit
        response = await self._request("read", lambda c: getattr(c, READ_CALL[register])(address, count=count, device_id=unit))
        if response.isError():
            return response.exception_code
        values = response.bits if register in BIT_KINDS else response.registers
        if len(values) < count:
            raise ModbusIOException(f"asked for {count} {register} values at {address}, got {len(values)}")
        return values[:count]

    # ---- polling ----

    async def _poll_forever(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.poll_interval
        due = loop.time()
        while True:
            readings = await self._read_blocks(list(self.blocks))
            self._answered()
            self.context.report(readings)
            due += interval
            now = loop.time()
            if due < now:  # fell behind: skip the missed ticks, keep the schedule
                due += math.ceil((now - due) / interval) * interval
            await asyncio.sleep(due - now)

    async def _read_blocks(self, blocks: list[Block]) -> list[Reading]:
        readings: list[Reading] = []
        for block in blocks:
            values = await self._read(block.kind, block.address, block.count)
            if isinstance(values, list):  # only the points whose bits or registers changed since the last read
                readings += [self._reading(name, point, values, point.address - block.address) for name, point in block.changed(values)]
            elif len(block.points) > 1:  # find the bad points: read this block point by point from now on
                singles = [Block(point.kind, point.address, point.width, [(name, point)]) for name, point in block.points]
                index = next(i for i, known in enumerate(self.blocks) if known is block)
                self.blocks[index : index + 1] = singles
                readings += await self._read_blocks(singles)
            else:
                block.last = None  # its point is reported again once it answers
                name = block.points[0][0]
                quality = EXCEPTION_QUALITY.get(values, "bad")
                self.context.log.debug("modbus device %s answered exception %s for %s", self.context.device, values, name)
                readings.append(Reading(name, None, quality))
        return readings

    @staticmethod
    def _reading(name: str, point: ModbusPoint, values: list[int] | list[bool], offset: int) -> Reading:
        value = decode(point, values[offset : offset + point.width])
        if isinstance(value, float) and not math.isfinite(value):
            return Reading(name, None, "bad")
        return Reading(name, value)

    # ---- writing ----

    async def write(self, point: str, value: Scalar) -> Scalar:
        """Write one point unless the device already holds the value (single write for 1 register or a coil,
        write_registers for wider types); return the value read back."""
        if point not in self.points:
            raise KeyError(f"modbus device {self.context.device} has no point {point!r}")
        p, unit = self.points[point], self.settings.unit
        if p.kind == "coil":
            if not isinstance(value, int) or value not in (0, 1):
                raise ValueError(f"coil point {point} takes true or false, not {value!r}")
            words: list[int] | list[bool] = [bool(value)]
            send = lambda c: c.write_coil(p.address, bool(value), device_id=unit)  # noqa: E731
        elif p.kind == "holding":
            words = encode(p, value)
            if len(words) == 1:
                send = lambda c: c.write_register(p.address, words[0], device_id=unit)  # noqa: E731
            else:
                send = lambda c: c.write_registers(p.address, words, device_id=unit)  # noqa: E731
        else:
            raise ValueError(f"point {point} is a read-only {p.kind} {'input' if p.kind == 'discrete' else 'register'}")
        # A failover may repeat a write the old active made just before it died: a device that holds the value is not written again.
        if await self._read(p.kind, p.address, p.width) == words:
            self.context.log.info("modbus device %s: %s already holds %r; not written again", self.context.device, point, value)
        else:
            response = await self._request("write", send)
            if response.isError():
                code = response.exception_code
                raise ModbusException(f"modbus device {self.context.device} refused the write to {point} (exception code {code})")
        values = await self._read(p.kind, p.address, p.width)
        if not isinstance(values, list):
            raise ModbusException(f"modbus device {self.context.device} refused to read back {point} (exception code {values})")
        return decode(p, values)


@hookimpl
def tandem_drivers(register: Callable[[DriverSpec], None]) -> None:
    register(DriverSpec("modbus", ModbusDriver, ModbusDevice, ModbusPoint))
