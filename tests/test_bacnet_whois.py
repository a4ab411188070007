"""The BACnet/IP driver finds a device by a Who-Is broadcast alone (no address configured) and polls it. Broadcasts between
two bacpypes3 applications need two hosts: the device and the driver each run in a network namespace on one bridge.

Run as a script (inside the driver's namespace), this file is the driver side: it polls one point until it reads good,
prints the reading as JSON and exits 0, or exits 1 after the deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from netns import NetnsHosts

from cluster.fence import Fence
from cluster.guard import ActGuard, read_acts
from plugins.bacnet import BacnetDevice, BacnetDriver, BacnetPoint
from plugins.simulator.bacnet import DeviceProcess
from plugins.types import DeviceContext, Reading

pytestmark = pytest.mark.netns

PORT = 47808  # a broadcast goes to the sender's own port: device and driver share it, each on its own host
INSTANCE = 2042
POINT = "analog-value,2"


class WhoIsHosts(NetnsHosts):
    """NetnsHosts on 10.203.9.0/24 under names of its own, so that it cannot clash with the partition test's network."""

    SUBNET = "10.203.9"

    def __init__(self, hosts: list[str]) -> None:
        super().__init__(hosts)
        tag = self.bridge.removeprefix("tbr")
        self.bridge = f"tbw{tag}"
        self.namespace = {host: f"tbw{tag}-{host}" for host in self.hosts}
        self.cable = {host: f"tw{tag}{i}" for i, host in enumerate(self.hosts)}


def test_driver_finds_a_device_by_who_is_broadcast_alone_and_polls_it(tmp_path: Path) -> None:
    with WhoIsHosts(["driver", "device"]) as net:
        device = DeviceProcess(PORT, INSTANCE, host=f"{net.address['device']}/24", prefix=net.prefix("device"))
        try:
            device.start()
            device.set(POINT, 23.7)  # not the simulator's default: the reading must come from this device
            local = f"{net.address['driver']}/24:{PORT}"
            driver = subprocess.run(
                [*net.prefix("driver"), sys.executable, __file__, local, str(INSTANCE), POINT, str(tmp_path / "acts.log")],
                capture_output=True,
                text=True,
                timeout=30,
                cwd=Path(__file__).resolve().parents[1],
            )
            assert driver.returncode == 0, f"driver side failed:\n{driver.stdout}\n{driver.stderr}"
            result = json.loads(driver.stdout.strip().splitlines()[-1])
            assert (result["value"], result["quality"]) == (23.7, "good")
            assert result["address"] == device.address  # the I-Am to the broadcast told the driver where the device is
            acts = [act["what"] for act in read_acts(tmp_path / "acts.log")]
            assert "bacnet who-is dev" in acts and any(what.startswith("bacnet read dev") for what in acts)
            assert device.stats()["WhoIsRequest"] >= 1
        finally:
            device.kill()


# ---- the driver side, run inside the driver's namespace ----


async def poll_until_good(local_address: str, instance: int, point: str, acts: Path, timeout: float = 10.0) -> dict | None:
    latest: dict[str, Reading] = {}
    guard = ActGuard("test", lambda margin: 1, 0.0, acts)
    settings = BacnetDevice(device_instance=instance, local_address=local_address, poll_interval=0.1, apdu_timeout=1.0)
    assert settings.address is None
    context = DeviceContext(
        device="dev",
        settings=settings,
        points={"value": BacnetPoint(object=point)},
        report=lambda readings: latest.update((r.point, r) for r in readings),
        act=guard.act,
        fence=Fence(lambda: True),
        log=logging.getLogger("test.bacnet.whois"),
    )
    driver = BacnetDriver(context)
    task = asyncio.create_task(driver.run())
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not task.done():
            reading = latest.get("value")
            if reading is not None and reading.quality == "good":
                return {"value": reading.value, "quality": reading.quality, "address": "%s:%d" % driver._address.addrTuple}
            await asyncio.sleep(0.02)
        if task.done():
            task.result()  # raise the driver's error
        return None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        guard.close()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    local_address, instance, point = argv[0], int(argv[1]), argv[2]
    acts = Path(argv[3]) if len(argv) > 3 else Path(tempfile.mkdtemp()) / "acts.log"
    result = asyncio.run(poll_until_good(local_address, instance, point, acts))
    if result is None:
        print("timed out waiting for a good reading", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
