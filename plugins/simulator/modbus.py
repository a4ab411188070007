"""A simulated Modbus TCP device (a pymodbus simulator) in its own process, driven by JSON lines on stdin."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from typing import Any

from plugins.simulator.process import free_ports

from .process import SimulatorProcess

FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}  # the read function code names the block
TEMPERATURES = 10  # --wander: input registers 0..9 drift like temperatures x10 (int16, 20.0..26.0 °C)
ENERGY = 20  # --wander: input registers 20..21 count energy in Wh (uint32, high word first)


def layout(registers: int = 200) -> Any:  # imported here so that the controlling process does not need the simulator
    from pymodbus.simulator import DataType, SimData, SimDevice

    bits = [SimData(0, count=64, values=False, datatype=DataType.BITS)]
    holding = [SimData(0, count=200, datatype=DataType.REGISTERS), SimData(210, count=50, datatype=DataType.REGISTERS)]
    inputs = [SimData(0, count=registers, datatype=DataType.REGISTERS)]
    return SimDevice(id=1, simdata=(bits, list(bits), holding, inputs))


async def wander(server: Any, registers: int, period: float = 1.0) -> None:
    """The demo profile: every `period`, temperatures take a small step back toward 23.0 °C and the energy counter rises."""
    temperatures = [random.uniform(210, 250) for _ in range(min(TEMPERATURES, registers))]
    energy = random.randint(100_000, 200_000)
    while True:
        temperatures = [min(260.0, max(200.0, t + 0.05 * (230 - t) + random.gauss(0, 1.5))) for t in temperatures]
        await server.async_setValues(1, FUNCTION["input"], 0, [round(t) for t in temperatures])
        if registers > ENERGY + 1:
            energy = (energy + random.randint(5, 15)) % 2**32
            await server.async_setValues(1, FUNCTION["input"], ENERGY, [energy >> 16, energy & 0xFFFF])
        await asyncio.sleep(period)


async def serve(port: int, registers: int, wandering: bool = False) -> None:
    """Serve unit 1 on 127.0.0.1:`port` and answer the commands on stdin (see DeviceProcess) until stdin closes."""
    from pymodbus.server import ModbusTcpServer
    from pymodbus.server.requesthandler import ServerRequestHandler

    requests: list[list[Any]] = []
    connections = 0

    def record(connection: int, sending: bool, pdu: Any) -> Any:
        if not sending:
            requests.append([pdu.function_code, pdu.address, getattr(pdu, "count", 1), time.monotonic(), connection])
            del requests[:-1000]
        return pdu

    def trace_connect(connected: bool) -> None:
        nonlocal connections
        connections += 1 if connected else -1

    class TracingServer(ModbusTcpServer):
        """Numbers its connections, so that every recorded request names the connection (the client) that sent it."""

        accepted = 0

        def callback_new_connection(self) -> Any:  # pymodbus 3.16.1's hook for a new client (the version is pinned)
            TracingServer.accepted += 1
            serial = TracingServer.accepted
            return ServerRequestHandler(self, self.trace_packet, lambda sending, pdu: record(serial, sending, pdu), self.trace_connect)

    server = TracingServer(layout(registers), address=("127.0.0.1", port), trace_connect=trace_connect)
    await server.serve_forever(background=True)
    drift = asyncio.create_task(wander(server, registers)) if wandering else None
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    print(json.dumps({"ready": port}), flush=True)
    while line := await stdin.readline():  # closing stdin ends the device
        command = json.loads(line)
        fc, answer = FUNCTION.get(command.get("register", ""), 0), {}
        if command["op"] == "set":
            await server.async_setValues(1, fc, command["address"], command["values"])
            answer = {"ok": True}
        elif command["op"] == "get":
            answer = {"values": await server.async_getValues(1, fc, command["address"], command["count"])}
        elif command["op"] == "stats":
            answer = {"requests": requests, "connections": connections}
        print(json.dumps(answer), flush=True)
    if drift is not None:
        drift.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drift
    await server.shutdown()


class DeviceProcess(SimulatorProcess):
    """The controlling side: start, kill, pause and resume the device process, and set or get its values.

    Layout (unit 1): coils and discrete inputs 0..63; holding registers 0..199 and 210..259 (200..209 is a hole: illegal
    address); input registers 0..199 (or 0..N-1 with `registers=N`). Every register starts at 0, every bit at False, unless
    `wander=True`: then input registers 0..9 drift like temperatures x10 and 20..21 count energy (see `wander`).

    Commands (one JSON object per line on the device's stdin, one JSON answer per line on its stdout):
      {"op": "set", "register": "input", "address": 3, "values": [1, 2]}   -> {"ok": true}
      {"op": "get", "register": "holding", "address": 3, "count": 2}       -> {"values": [1, 2]}
      {"op": "stats"}  -> {"requests": [[function code, address, count, monotonic time, connection], ...], "connections": n}
    """

    kind = "modbus device"

    def __init__(self, port: int | None = None, registers: int = 200, wander: bool = False) -> None:
        super().__init__(port or free_ports(1)[0])
        self.registers = registers
        self.wander = wander

    def start(self, timeout: float = 10.0) -> DeviceProcess:
        self._spawn("plugins.simulator.modbus", "--registers", str(self.registers), *(["--wander"] if self.wander else []))
        assert self._answer(timeout) == {"ready": self.port}
        return self

    def _answer(self, timeout: float) -> dict:
        return json.loads(self._line(timeout))

    def command(self, op: str, **args: Any) -> dict:
        self._send(json.dumps({"op": op, **args}))
        return self._answer(5.0)

    def set(self, register: str, address: int, values: list) -> None:
        self.command("set", register=register, address=address, values=values)

    def get(self, register: str, address: int, count: int = 1) -> list:
        return self.command("get", register=register, address=address, count=count)["values"]

    def stats(self) -> dict:
        return self.command("stats")



if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--registers", type=int, default=200, help="input registers 0..N-1 (default 200)")
    parser.add_argument("--wander", action="store_true", help="drift input registers 0..9 like temperatures, count energy in 20..21")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.registers, arguments.wander))
