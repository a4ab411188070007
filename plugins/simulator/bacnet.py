"""A simulated BACnet/IP device (a real bacpypes3 application) in its own process, driven by text lines on stdin."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import sys
import threading
from collections import Counter
from typing import Any

from bacpypes3.ipv4.app import NormalApplication
from bacpypes3.local.analog import AnalogValueObject, AnalogValueObjectCmd
from bacpypes3.local.binary import BinaryValueObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import ObjectIdentifier

from .process import SimulatorProcess

STATUS = {"statusFlags": [0, 0, 0, 0], "eventState": "normal", "outOfService": False}
ROOMS = 3  # --wander adds analog-value,3..5 ("room-1".."room-3")


def objects(wandering: bool = False) -> list:
    """The device's objects (bacpypes3 objects need a running loop): analog-value,1 is commandable (priority array,
    relinquish default 20.0) and reports COV beyond 0.5; analog-value,2 and binary-value,1 are plain values. With
    `wandering`, room temperatures analog-value,3.. (COV beyond 0.2) join them."""
    rooms = [
        AnalogValueObject(
            objectIdentifier=f"analog-value,{3 + i}",
            objectName=f"room-{1 + i}",
            presentValue=round(random.uniform(20.0, 23.0), 1),
            covIncrement=0.2,
            units="degreesCelsius",
            **STATUS,
        )
        for i in range(ROOMS if wandering else 0)
    ]
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
        *rooms,
    ]


class SimApplication(NormalApplication):
    """A normal BACnet/IP application that counts the requests it serves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counts: Counter[str] = Counter()

    async def indication(self, apdu: Any) -> None:
        self.counts[type(apdu).__name__] += 1
        await super().indication(apdu)


async def wander(app: SimApplication, period: float = 1.0) -> None:
    """The demo profile: every `period`, the plain temperatures (analog-value,2 and the rooms) take a small random step
    back toward 21.5 °C, staying within 19..24 °C; now and then the change since the last notification exceeds covIncrement."""
    drifting = [app.get_object_id(ObjectIdentifier(f"analog-value,{i}")) for i in range(2, 3 + ROOMS)]
    while True:
        await asyncio.sleep(period)
        for obj in drifting:
            value = obj.presentValue + 0.05 * (21.5 - obj.presentValue) + random.gauss(0, 0.1)
            obj.presentValue = round(min(24.0, max(19.0, value)), 2)


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


async def main(port: int, instance: int, wandering: bool = False, host: str = "127.0.0.1") -> None:
    """Serve device `instance` on `host`:`port` (a "host/prefix" also hears broadcasts) and answer the commands on stdin
    (see DeviceProcess) until EOF."""
    device = DeviceObject(objectIdentifier=("device", instance), objectName=f"sim-{instance}", vendorIdentifier=999)
    app = SimApplication(device, Address(f"{host}:{port}"))
    for obj in objects(wandering):
        app.add_object(obj)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def read_commands() -> None:  # a thread: the commands come on stdin; EOF ends the device
        for line in sys.stdin:
            if line.strip():
                loop.call_soon_threadsafe(command, app, line.strip())
        loop.call_soon_threadsafe(done.set)

    await app.normal.server._local_transport_ready.wait()  # bound: requests from now on are served
    threading.Thread(target=read_commands, daemon=True).start()
    drift = asyncio.create_task(wander(app)) if wandering else None
    print("ready", flush=True)
    try:
        await done.wait()
    finally:
        if drift is not None:
            drift.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drift
        app.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DeviceProcess(SimulatorProcess):
    """The controlling side: start, kill, pause and resume the device process, change its values, count its requests.

    The device prints `ready` once bound, then takes commands on stdin, one per line, each answered on stdout:
    `set <type,instance> <value>` changes a present value as the device's own logic would (`ok ...`), and
    `stats` prints `stats {"<request type>": count, ...}`, the requests the device has served. EOF ends it.
    With `wander=True` it runs the demo profile (see `wander`). `host` ("a.b.c.d[/prefix]") is the address it binds, and
    `prefix` a command prefix to run it with (e.g. `ip netns exec NS`).
    """

    kind = "BACnet device"

    def __init__(
        self, port: int | None = None, instance: int = 1001, wander: bool = False, host: str = "127.0.0.1", prefix: list[str] | None = None
    ) -> None:
        super().__init__(port or free_udp_port(), prefix)
        self.instance = instance
        self.wander = wander
        self.host = host
        self.address = f"{host.partition('/')[0]}:{self.port}"

    def start(self) -> DeviceProcess:
        host = ["--host", self.host] if self.host != "127.0.0.1" else []
        self._spawn("plugins.simulator.bacnet", "--instance", str(self.instance), *(["--wander"] if self.wander else []), *host)
        assert self._answer(15.0) == "ready"
        return self

    def _answer(self, timeout: float) -> str:
        return self._line(timeout).strip()

    def command(self, line: str) -> str:
        self._send(line)
        answer = self._answer(5.0)
        assert not answer.startswith("error"), answer
        return answer

    def set(self, object_id: str, value: object) -> None:
        self.command(f"set {object_id} {value}")

    def stats(self) -> Counter[str]:
        return Counter(json.loads(self.command("stats").removeprefix("stats ")))



if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instance", type=int, default=1001)
    parser.add_argument("--wander", action="store_true", help="drift analog-value,2 and add rooms analog-value,3..5 (19..24 °C)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to bind, 'a.b.c.d[/prefix]' (a prefix: hear broadcasts too)")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.instance, args.wander, args.host))
