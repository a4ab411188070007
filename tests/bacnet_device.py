"""A simulated BACnet/IP device, a real bacpypes3 application in its own process (`python tests/bacnet_device.py --port P`),
and `DeviceProcess`, the test side that starts, kills, pauses and commands it.

The device prints `ready` once bound, then takes commands on stdin, one per line, each answered on stdout:
`set <type,instance> <value>` changes a present value as the device's own logic would (`ok ...`), and
`stats` prints `stats {"<request type>": count, ...}`, the requests the device has served. EOF ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from bacpypes3.ipv4.app import NormalApplication
from bacpypes3.local.analog import AnalogValueObject, AnalogValueObjectCmd
from bacpypes3.local.binary import BinaryValueObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import ObjectIdentifier

STATUS = {"statusFlags": [0, 0, 0, 0], "eventState": "normal", "outOfService": False}


def objects() -> list:
    """The device's objects (bacpypes3 objects need a running loop): analog-value,1 is commandable (priority array,
    relinquish default 20.0) and reports COV beyond 0.5; analog-value,2 and binary-value,1 are plain values."""
    return [
        AnalogValueObjectCmd(
            objectIdentifier="analog-value,1",
            objectName="setpoint",
            presentValue=20.0,
            relinquishDefault=20.0,
            covIncrement=0.5,
            units="degreesCelsius",
            **STATUS,
        ),
        AnalogValueObject(
            objectIdentifier="analog-value,2",
            objectName="temperature",
            presentValue=21.5,
            covIncrement=0.1,
            units="degreesCelsius",
            **STATUS,
        ),
        BinaryValueObject(objectIdentifier="binary-value,1", objectName="fan", presentValue="active", **STATUS),
    ]


class SimApplication(NormalApplication):
    """A normal BACnet/IP application that counts the requests it serves."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.counts: Counter[str] = Counter()

    async def indication(self, apdu) -> None:
        self.counts[type(apdu).__name__] += 1
        await super().indication(apdu)


def command(app: SimApplication, line: str) -> None:
    words = line.split()
    if words == ["stats"]:
        print("stats", json.dumps(app.counts), flush=True)
        return
    obj = app.get_object_id(ObjectIdentifier(words[1])) if len(words) == 3 and words[0] == "set" else None
    if obj is None:
        print(f"error {line}", flush=True)
        return
    obj.presentValue = words[2] if words[1].startswith("binary") else float(words[2])
    print(f"ok {line}", flush=True)


async def main(port: int, instance: int) -> None:
    device = DeviceObject(objectIdentifier=("device", instance), objectName=f"sim-{instance}", vendorIdentifier=999)
    app = SimApplication(device, Address(f"127.0.0.1:{port}"))
    for obj in objects():
        app.add_object(obj)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def read_commands() -> None:  # a thread: the test's commands come on stdin; EOF ends the device
        for line in sys.stdin:
            if line.strip():
                loop.call_soon_threadsafe(command, app, line.strip())
        loop.call_soon_threadsafe(done.set)

    await app.normal.server._local_transport_ready.wait()  # bound: requests from now on are served
    threading.Thread(target=read_commands, daemon=True).start()
    print("ready", flush=True)
    try:
        await done.wait()
    finally:
        app.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DeviceProcess:
    """The test side: start, kill, pause and resume the device process, change its values, count its requests."""

    def __init__(self, port: int | None = None, instance: int = 1001) -> None:
        self.port = port or free_udp_port()
        self.instance = instance
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> DeviceProcess:
        command = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port), "--instance", str(self.instance)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._answer(15.0) == "ready"
        return self

    def _answer(self, timeout: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"BACnet test device on port {self.port} did not answer within {timeout} s")
        return line.strip()

    def command(self, line: str) -> str:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self._answer(5.0)
        assert not answer.startswith("error"), answer
        return answer

    def set(self, object_id: str, value: object) -> None:
        self.command(f"set {object_id} {value}")

    def stats(self) -> Counter[str]:
        return Counter(json.loads(self.command("stats").removeprefix("stats ")))

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)  # a paused process dies as well, but its pipes are cleaner this way
            self.process.kill()
            self.process.wait(10)
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()
            self.process = None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a simulated BACnet/IP device")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instance", type=int, default=1001)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.instance))
