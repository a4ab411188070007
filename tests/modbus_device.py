"""A Modbus TCP test device in its own process (a pymodbus simulator), driven by JSON lines on stdin.

Layout (unit 1): coils and discrete inputs 0..63; holding registers 0..199 and 210..259 (200..209 is a hole: illegal
address); input registers 0..199 (or 0..N-1 with --registers N). Every register starts at 0, every bit at False.

Commands (one JSON object per line, one JSON answer per line):
  {"op": "set", "register": "input", "address": 3, "values": [1, 2]}   -> {"ok": true}
  {"op": "get", "register": "holding", "address": 3, "count": 2}       -> {"values": [1, 2]}
  {"op": "stats"}  -> {"requests": [[function code, address, count, monotonic time], ...], "connections": n}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}  # the read function code names the block


def layout(registers: int = 200):  # imported here so that the test process does not need the simulator
    from pymodbus.simulator import DataType, SimData, SimDevice

    bits = [SimData(0, count=64, values=False, datatype=DataType.BITS)]
    holding = [SimData(0, count=200, datatype=DataType.REGISTERS), SimData(210, count=50, datatype=DataType.REGISTERS)]
    inputs = [SimData(0, count=registers, datatype=DataType.REGISTERS)]
    return SimDevice(id=1, simdata=(bits, list(bits), holding, inputs))


async def serve(port: int, registers: int) -> None:
    from pymodbus.server import ModbusTcpServer

    requests: list[list[Any]] = []
    connections = 0

    def trace_pdu(sending: bool, pdu: Any) -> Any:
        if not sending:
            requests.append([pdu.function_code, pdu.address, getattr(pdu, "count", 1), time.monotonic()])
            del requests[:-1000]
        return pdu

    def trace_connect(connected: bool) -> None:
        nonlocal connections
        connections += 1 if connected else -1

    server = ModbusTcpServer(layout(registers), address=("127.0.0.1", port), trace_pdu=trace_pdu, trace_connect=trace_connect)
    await server.serve_forever(background=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    print(json.dumps({"ready": port}), flush=True)
    while line := await stdin.readline():  # the test closing stdin ends the device
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
    await server.shutdown()


class DeviceProcess:
    """The test side: start, kill, pause and resume the device process, and set or get its values."""

    def __init__(self, port: int, registers: int = 200) -> None:
        self.port = port
        self.registers = registers
        self.process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 10.0) -> DeviceProcess:
        command = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port), "--registers", str(self.registers)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._answer(timeout) == {"ready": self.port}
        return self

    def _answer(self, timeout: float) -> dict:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"modbus test device on port {self.port} did not answer within {timeout} s")
        return json.loads(line)

    def command(self, op: str, **args: Any) -> dict:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()
        return self._answer(5.0)

    def set(self, register: str, address: int, values: list) -> None:
        self.command("set", register=register, address=address, values=values)

    def get(self, register: str, address: int, count: int = 1) -> list:
        return self.command("get", register=register, address=address, count=count)["values"]

    def stats(self) -> dict:
        return self.command("stats")

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()
            self.process = None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--registers", type=int, default=200, help="input registers 0..N-1 (default 200)")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.registers))
