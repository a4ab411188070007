"""A Modbus TCP device with its own framing (no pymodbus) that records every request with its sender's address: the
independent witness of fencing tests, and a cheap device for scale runs (many units behind one port, values that wander)."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import struct
import sys
import time
from array import array
from pathlib import Path
from typing import Any, TextIO

from plugins.simulator.process import free_ports

from .process import SimulatorProcess

ADDRESSES = 65536
READ_BITS = {1: "coil", 2: "discrete"}
READ_WORDS = {3: "holding", 4: "input"}
MAX_READ = {1: 2000, 2: 2000, 3: 125, 4: 125}
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, GATEWAY_TARGET_FAILED = 1, 2, 3, 11


class Unit:
    """One unit's data: 65,536 coils, discrete inputs, holding and input registers, all 0 at the start."""

    def __init__(self) -> None:
        self.tables: dict[str, bytearray | array] = {
            "coil": bytearray(ADDRESSES), "discrete": bytearray(ADDRESSES), "holding": array("H", bytes(2 * ADDRESSES)),
            "input": array("H", bytes(2 * ADDRESSES)),
        }

    def store(self, kind: str, address: int, values: list[int]) -> None:
        table = self.tables[kind]
        table[address : address + len(values)] = bytearray(values) if isinstance(table, bytearray) else array("H", values)


class Recorder:
    """Answers Modbus TCP requests for units 1..`units` and appends one JSON line per request to `log` (when given):
    {"t": wall time, "peer": "host:port", "unit", "fc", "address", "count", "values" (writes)}."""

    def __init__(self, units: int, log: TextIO | None) -> None:
        self.units = {number: Unit() for number in range(1, units + 1)}
        self.log = log
        self.requests = 0

    def record(self, peer: str, unit: int, fc: int, address: int, count: int, values: list[int] | None) -> None:
        self.requests += 1
        if self.log is not None:
            entry = {"t": time.time(), "peer": peer, "unit": unit, "fc": fc, "address": address, "count": count}
            if values is not None:
                entry["values"] = values
            self.log.write(json.dumps(entry) + "\n")
            self.log.flush()

    def answer(self, peer: str, unit_id: int, pdu: bytes) -> bytes:
        """The response PDU to one request PDU (an exception response for what this device does not do)."""
        fc = pdu[0] if pdu else 0
        unit = self.units.get(unit_id)
        try:
            address, count, values = _decode(fc, pdu)
        except ValueError:
            self.record(peer, unit_id, fc, -1, 0, None)
            return bytes([fc | 0x80, ILLEGAL_VALUE if fc in (1, 2, 3, 4, 5, 6, 15, 16) else ILLEGAL_FUNCTION])
        self.record(peer, unit_id, fc, address, count, values)
        if unit is None:
            return bytes([fc | 0x80, GATEWAY_TARGET_FAILED])
        if address + count > ADDRESSES:
            return bytes([fc | 0x80, ILLEGAL_ADDRESS])
        if fc in READ_BITS:
            bits = unit.tables[READ_BITS[fc]][address : address + count]
            packed = bytes(sum(bit << i for i, bit in enumerate(bits[start : start + 8])) for start in range(0, count, 8))
            return bytes([fc, len(packed)]) + packed
        if fc in READ_WORDS:
            words = unit.tables[READ_WORDS[fc]][address : address + count]
            return bytes([fc, 2 * count]) + struct.pack(f">{count}H", *words)
        assert values is not None
        unit.store("coil" if fc in (5, 15) else "holding", address, values)
        return pdu[:5]

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = f"{host}:{port}"
        try:
            while True:
                header = await reader.readexactly(7)
                tid, protocol, length, unit = struct.unpack(">HHHB", header)
                if protocol != 0 or not 2 <= length <= 254:
                    break  # not Modbus TCP: drop the connection, as a device would
                pdu = await reader.readexactly(length - 1)
                response = self.answer(peer, unit, pdu)
                writer.write(struct.pack(">HHHB", tid, 0, len(response) + 1, unit) + response)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def wander(self, fraction: float) -> None:
        """Change `fraction` of the first 1,000 input registers of every unit by one step (a building's slow drift)."""
        for unit in self.units.values():
            table = unit.tables["input"]
            for address in random.sample(range(1000), max(1, round(1000 * fraction))):
                table[address] = (table[address] + random.choice((-1, 1))) % 65536


def _decode(fc: int, pdu: bytes) -> tuple[int, int, list[int] | None]:
    """(address, count, values written or None) of a request PDU; ValueError if it is malformed or not supported."""
    if fc in MAX_READ and len(pdu) == 5:
        address, count = struct.unpack(">HH", pdu[1:5])
        if not 1 <= count <= MAX_READ[fc]:
            raise ValueError(f"count {count}")
        return address, count, None
    if fc == 5 and len(pdu) == 5:
        address, value = struct.unpack(">HH", pdu[1:5])
        if value not in (0, 0xFF00):
            raise ValueError(f"coil value {value:#x}")
        return address, 1, [1 if value else 0]
    if fc == 6 and len(pdu) == 5:
        address, value = struct.unpack(">HH", pdu[1:5])
        return address, 1, [value]
    if fc in (15, 16) and len(pdu) >= 6:
        address, count, size = *struct.unpack(">HH", pdu[1:5]), pdu[5]
        data = pdu[6:]
        if len(data) != size or count < 1:
            raise ValueError("byte count")
        if fc == 16:
            if size != 2 * count:
                raise ValueError("byte count")
            return address, count, list(struct.unpack(f">{count}H", data))
        if size != (count + 7) // 8:
            raise ValueError("byte count")
        return address, count, [(data[i // 8] >> (i % 8)) & 1 for i in range(count)]
    raise ValueError(f"function {fc}")


async def serve(host: str, port: int, units: int, log_path: Path | None, wander: float) -> None:
    """Serve until stdin closes; answer the commands on stdin (see RecorderProcess)."""
    log = open(log_path, "a", encoding="utf-8") if log_path else None
    recorder = Recorder(units, log)
    server = await asyncio.start_server(recorder.serve_connection, host, port)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    drift = asyncio.create_task(_drift(recorder, wander)) if wander else None
    print(json.dumps({"ready": port}), flush=True)
    while line := await stdin.readline():  # closing stdin ends the device
        command = json.loads(line)
        unit = recorder.units[command["unit"]]
        answer: dict[str, Any]
        if command["op"] == "set":
            unit.store(command["register"], command["address"], command["values"])
            answer = {"ok": True}
        elif command["op"] == "get":
            answer = {"values": list(unit.tables[command["register"]][command["address"] : command["address"] + command.get("count", 1)])}
        else:
            answer = {"error": f"unknown op {command['op']!r}"}
        print(json.dumps(answer), flush=True)
    if drift is not None:
        drift.cancel()
    server.close()
    if log is not None:
        log.close()


async def _drift(recorder: Recorder, fraction: float) -> None:
    while True:
        await asyncio.sleep(1.0)
        recorder.wander(fraction)


class RecorderProcess(SimulatorProcess):
    """The controlling side of a recording device process on `host`:`port` with units 1..`units`.

    Commands (one JSON object per line on stdin, one answer per line on stdout):
      {"op": "set", "unit": 1, "register": "holding", "address": 3, "values": [1, 2]}  -> {"ok": true}
      {"op": "get", "unit": 1, "register": "holding", "address": 3, "count": 2}        -> {"values": [1, 2]}
    With `log`, every request is appended to that file as a JSON line (see `Recorder`); `frames()` reads them back.
    """

    kind = "recording modbus device"

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, units: int = 1, log: Path | None = None, wander: float = 0.0,
        prefix: list[str] | None = None,
    ) -> None:
        super().__init__(port or free_ports(1, host)[0], prefix)
        self.host, self.units, self.log, self.wander = host, units, log, wander

    def start(self, timeout: float = 10.0) -> RecorderProcess:
        options = ["--host", self.host, "--units", str(self.units), "--wander", str(self.wander)]
        self._spawn("plugins.simulator.modbus_recorder", *options, *(["--log", str(self.log)] if self.log else []))
        assert json.loads(self._line(timeout)) == {"ready": self.port}
        return self

    def command(self, op: str, **args: Any) -> dict:
        self._send(json.dumps({"op": op, **args}))
        return json.loads(self._line(5.0))

    def set(self, register: str, address: int, values: list[int], unit: int = 1) -> None:
        self.command("set", unit=unit, register=register, address=address, values=values)

    def get(self, register: str, address: int, count: int = 1, unit: int = 1) -> list[int]:
        return self.command("get", unit=unit, register=register, address=address, count=count)["values"]

    def frames(self) -> list[dict[str, Any]]:
        """Every request recorded so far, oldest first."""
        assert self.log is not None, "started without a log"
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines() if line.endswith("}")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--units", type=int, default=1, help="units 1..N, each with its own registers")
    parser.add_argument("--log", type=Path, help="append every request to this file as a JSON line")
    parser.add_argument("--wander", type=float, default=0.0, help="each second, change this fraction of input registers 0..999")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.host, arguments.port, arguments.units, arguments.log, arguments.wander))
