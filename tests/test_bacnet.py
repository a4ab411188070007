"""The BACnet/IP driver against real bacpypes3 devices in their own processes: polling, prioritized writes, COV with
renewal and re-subscription, lost and paused devices, per-point errors, configuration errors, cancellation, the guard."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from driver_kit import Collector, running, until
from pydantic import ValidationError

from cluster.fence import Fence
from cluster.guard import ActGuard, NotActive, read_acts
from plugins.bacnet import BacnetDevice, BacnetDriver, BacnetError, BacnetPoint
from plugins.manager import load_plugins
from plugins.simulator.bacnet import DeviceProcess, free_udp_port
from plugins.types import DeviceContext

FAST = {"poll_interval": 0.1, "apdu_timeout": 0.5}


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.bacnet")


@pytest.fixture
def device(tandem_bacnet_device: Callable[..., DeviceProcess]) -> DeviceProcess:
    """One simulated BACnet device on a free port, killed after the test."""
    return tandem_bacnet_device()


def make_driver(act: Callable[[str], int], points: dict[str, dict], name: str = "dev", **settings: Any) -> tuple[BacnetDriver, Collector]:
    collector = Collector()
    context = DeviceContext(
        device=name,
        settings=BacnetDevice(**{**FAST, **settings}),
        points={point: BacnetPoint(**keys) for point, keys in points.items()},
        report=collector,
        act=act,
        fence=Fence(lambda: True),
        log=logging.getLogger(f"test.bacnet.{name}"),
    )
    return BacnetDriver(context), collector


def log_lines(caplog: pytest.LogCaptureFixture, name: str, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == f"test.bacnet.{name}" and text in r.getMessage()]


# ---- reading ----


async def test_polls_analog_and_binary_values_with_read_property_multiple(guard: ActGuard, device: DeviceProcess, tmp_path: Path) -> None:
    points = {"sp": {"object": "analog-value,1"}, "temp": {"object": "analogValue, 2"}, "fan": {"object": "binary-value,1"}}
    driver, seen = make_driver(guard.act, points, address=device.address)
    async with running(driver):
        await until(lambda: [seen.value(p) for p in points] == [(20.0, "good"), (21.5, "good"), (True, "good")], "the first poll")
        device.set("analog-value,2", 23.3)
        device.set("binary-value,1", "inactive")
        await until(lambda: seen.value("temp") == (23.3, "good") and seen.value("fan") == (False, "good"), "the changed values")
    stats = device.stats()
    reads = [act["what"] for act in read_acts(tmp_path / "acts.log") if act["what"].startswith("bacnet read dev")]
    assert stats["ReadPropertyMultipleRequest"] >= 2 and stats["ReadPropertyRequest"] == 0  # one RPM per cycle, no single reads
    assert stats["ReadPropertyMultipleRequest"] <= len(reads) <= stats["ReadPropertyMultipleRequest"] + 1  # each passed the guard
    assert stats["WhoIsRequest"] == 1  # the device was found once, by a Who-Is directed at its address


async def test_device_instance_is_confirmed_by_a_directed_who_is(
    guard: ActGuard, device: DeviceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    right, _ = make_driver(guard.act, {"temp": {"object": "analog-value,2"}}, name="right", address=device.address, device_instance=1001)
    wrong, wrong_seen = make_driver(
        guard.act, {"temp": {"object": "analog-value,2"}}, name="wrong", address=device.address, device_instance=1002
    )
    async with running(right), running(wrong):
        await until(lambda: right.context.report.value("temp") == (21.5, "good"), "the right device's value")  # type: ignore[attr-defined]
        await until(lambda: wrong_seen.value("temp") == (None, "comm-failure"), "no I-Am from device 1002")
    assert any("no I-Am from device 1002" in line for line in log_lines(caplog, "wrong", "unreachable"))


async def test_unknown_object_is_a_config_error_of_that_point_only(
    guard: ActGuard, device: DeviceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    points = {
        "temp": {"object": "analog-value,2"},
        "ghost": {"object": "analog-value,99"},
        "no_such_property": {"object": "binary-value,1", "property": "cov-increment"},
        "ghost_cov": {"object": "analog-value,98", "cov": True},
        "sp": {"object": "analog-value,1", "cov": True},
    }
    driver, seen = make_driver(guard.act, points, address=device.address)
    async with running(driver):
        await until(lambda: seen.reports >= 5 and seen.value("sp") == (20.0, "good"), "several polls and the COV value")
        assert seen.value("temp") == (21.5, "good")
        for name in ("ghost", "no_such_property", "ghost_cov"):
            assert seen.value(name) == (None, "config-error"), name
    assert len(log_lines(caplog, "dev", "point ghost ")) == 1  # logged once, not once per poll
    assert "unknown-object" in log_lines(caplog, "dev", "point ghost ")[0]


# ---- writing ----


async def test_prioritized_write_and_relinquish_read_back(guard: ActGuard, device: DeviceProcess) -> None:
    points = {
        "sp8": {"object": "analog-value,1", "priority": 8},
        "sp12": {"object": "analog-value,1", "priority": 12},
        "fan": {"object": "binary-value,1"},
        "ghost": {"object": "analog-value,99"},
    }
    driver, seen = make_driver(guard.act, points, address=device.address)
    async with running(driver):
        assert await driver.write("sp12", 25.0) == 25.0
        assert await driver.write("sp8", 30.5) == 30.5
        assert await driver.write("sp12", 26.0) == 30.5  # priority 8 still wins over 12
        assert await driver.write("sp8", None) == 26.0  # relinquished: priority 12 shows through
        assert await driver.write("sp12", None) == 20.0  # both relinquished: the relinquish default
        assert await driver.write("fan", False) is False
        await until(lambda: seen.value("fan") == (False, "good"), "the poll to see the write")
        with pytest.raises(BacnetError, match="unknown-object"):  # an Exception, not bacpypes3's BaseException
            await driver.write("ghost", 1.0)
    assert device.stats()["WritePropertyRequest"] == 7


async def test_a_write_our_priority_slot_already_holds_is_not_repeated(guard: ActGuard, device: DeviceProcess) -> None:
    """The check reads our slot of the priority array, not the present value another priority may be setting."""
    points = {"sp8": {"object": "analog-value,1", "priority": 8}, "sp12": {"object": "analog-value,1", "priority": 12},
              "temp": {"object": "analog-value,2"}}
    driver, _ = make_driver(guard.act, points, address=device.address)
    async with running(driver):
        assert await driver.write("sp8", 24.0) == 24.0
        assert await driver.write("sp8", 24.0) == 24.0  # slot 8 holds it: not written again
        assert await driver.write("sp12", 24.0) == 24.0  # present value 24.0, but slot 12 is empty: written
        assert await driver.write("sp8", None) == 24.0  # relinquished: slot 12 shows through
        assert await driver.write("sp8", None) == 24.0  # slot 8 already empty
        assert await driver.write("temp", 21.5) == 21.5  # not commandable: the property itself already holds it
    assert device.stats()["WritePropertyRequest"] == 3


# ---- change of value ----


async def test_cov_delivers_a_change_long_before_the_next_poll(guard: ActGuard, device: DeviceProcess) -> None:
    points = {"sp": {"object": "analog-value,1", "cov": True}, "temp": {"object": "analog-value,2"}}
    driver, seen = make_driver(guard.act, points, address=device.address, poll_interval=30)
    async with running(driver):
        await until(
            lambda: seen.value("sp") == (20.0, "good") and seen.value("temp") == (21.5, "good"), "the subscription and the first poll"
        )
        device.set("analog-value,2", 22.5)  # polled: not seen for 30 s
        start = time.monotonic()
        device.set("analog-value,1", 23.5)
        await until(lambda: seen.value("sp") == (23.5, "good"), "the COV notification", timeout=2)
        assert time.monotonic() - start < 1.0
        assert seen.value("temp") == (21.5, "good")
    stats = device.stats()
    assert stats["SubscribeCOVRequest"] == 1 and stats["ReadPropertyMultipleRequest"] == 1


async def test_cov_subscription_is_renewed_before_its_lifetime_ends(guard: ActGuard, device: DeviceProcess) -> None:
    driver, seen = make_driver(
        guard.act, {"sp": {"object": "analog-value,1", "cov": True}}, address=device.address, poll_interval=30, cov_lifetime=2
    )
    async with running(driver):
        await until(lambda: seen.value("sp") == (20.0, "good"), "the first notification")
        await until(lambda: device.stats()["SubscribeCOVRequest"] >= 4, "three renewals, 1 s apart", timeout=6)  # the first one has lapsed
        device.set("analog-value,1", 24.0)
        await until(lambda: seen.value("sp") == (24.0, "good"), "a notification on the renewed subscription", timeout=2)


async def test_resubscribes_after_the_device_restarts(guard: ActGuard, device: DeviceProcess, caplog: pytest.LogCaptureFixture) -> None:
    points = {"sp": {"object": "analog-value,1", "cov": True}, "temp": {"object": "analog-value,2"}}
    driver, seen = make_driver(guard.act, points, address=device.address, apdu_timeout=0.3)
    async with running(driver):
        device.set("analog-value,1", 24.0)
        await until(lambda: seen.value("sp") == (24.0, "good"), "the first notification")
        device.kill()
        await until(lambda: seen.value("sp") == (None, "comm-failure") and seen.value("temp") == (None, "comm-failure"), "comm-failure")
        device.start()  # same port, fresh state, no subscriptions
        await until(lambda: seen.value("sp") == (20.0, "good") and seen.value("temp") == (21.5, "good"), "the new subscription")
        device.set("analog-value,1", 27.0)
        await until(lambda: seen.value("sp") == (27.0, "good"), "COV notifications from the restarted device", timeout=2)
    assert len(log_lines(caplog, "dev", "unreachable")) == 1
    assert len(log_lines(caplog, "dev", "reachable again")) == 1


# ---- lost devices ----


async def test_absent_device_is_comm_failure_in_time_and_does_not_stall_another(
    guard: ActGuard, device: DeviceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    absent, absent_seen = make_driver(
        guard.act,
        {"a": {"object": "analog-value,1"}, "b": {"object": "analog-value,2", "cov": True}},
        name="absent",
        address=f"127.0.0.1:{free_udp_port()}",
    )
    present, present_seen = make_driver(guard.act, {"temp": {"object": "analog-value,2"}}, name="present", address=device.address)
    async with running(present):
        await until(lambda: present_seen.value("temp") == (21.5, "good"), "the present device")
        start = time.monotonic()
        async with running(absent):
            await until(lambda: absent_seen.value("a") == (None, "comm-failure"), "comm-failure of the absent device")
            assert time.monotonic() - start < FAST["apdu_timeout"] + 0.4
            assert absent_seen.value("b") == (None, "comm-failure")
            before = present_seen.reports
            await until(lambda: absent_seen.reports >= 4, "more attempts at the absent device")
            assert present_seen.reports - before >= 10  # polled every 0.1 s meanwhile
    assert len(log_lines(caplog, "absent", "unreachable")) == 1


async def test_paused_device_is_comm_failure_then_good_again(
    guard: ActGuard, device: DeviceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    driver, seen = make_driver(
        guard.act, {"temp": {"object": "analog-value,2"}, "sp": {"object": "analog-value,1", "cov": True}}, address=device.address
    )
    async with running(driver):
        await until(lambda: seen.value("temp") == (21.5, "good") and seen.value("sp") == (20.0, "good"), "the first values")
        device.pause()
        start = time.monotonic()
        await until(lambda: seen.value("temp") == (None, "comm-failure") and seen.value("sp") == (None, "comm-failure"), "comm-failure")
        assert time.monotonic() - start < FAST["poll_interval"] + FAST["apdu_timeout"] + 0.4
        device.resume()
        await until(lambda: seen.value("temp") == (21.5, "good") and seen.value("sp") == (20.0, "good"), "good values again")
    assert len(log_lines(caplog, "dev", "unreachable")) == 1
    assert len(log_lines(caplog, "dev", "reachable again")) == 1


# ---- lifecycle ----


@pytest.mark.parametrize("waiting", [True, False], ids=["waiting-for-an-answer", "idle"])
async def test_cancellation_ends_run_quickly_and_closes_the_socket(
    guard: ActGuard, device: DeviceProcess, tmp_path: Path, waiting: bool
) -> None:
    address = f"127.0.0.1:{free_udp_port()}" if waiting else device.address  # nothing answers there: a 5 s Who-Is in flight
    local = free_udp_port()
    driver, seen = make_driver(
        guard.act,
        {"temp": {"object": "analog-value,2"}},
        address=address,
        apdu_timeout=5,
        local_address=f"127.0.0.1:{local}",
        poll_interval=5,
    )
    task = asyncio.create_task(driver.run())
    if waiting:
        await until(lambda: any(act["what"].startswith("bacnet who-is") for act in read_acts(tmp_path / "acts.log")), "the Who-Is")
    else:
        await until(lambda: seen.value("temp") == (21.5, "good"), "the first poll")
    start = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - start < 0.15
    await asyncio.sleep(0)  # the transport closes its socket on the next loop turn
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", local))  # free again


async def test_not_active_propagates_from_run_and_write(device: DeviceProcess, tmp_path: Path) -> None:
    active = True
    guard = ActGuard("test", lambda margin: 1 if active else None, 0.0, tmp_path / "acts.log")
    driver, seen = make_driver(guard.act, {"sp": {"object": "analog-value,1"}}, address=device.address)
    task = asyncio.create_task(driver.run())
    await until(lambda: seen.value("sp") == (20.0, "good"), "the first poll")
    active = False
    with pytest.raises(NotActive):
        await driver.write("sp", 21.0)  # while run() still holds the connection
    with pytest.raises(NotActive):
        await asyncio.wait_for(task, 1.0)  # at its next poll
    assert device.stats()["WritePropertyRequest"] == 0
    guard.close()


async def test_no_datagram_leaves_once_the_role_is_lost_bacpypes3_retries_included(device: DeviceProcess, tmp_path: Path) -> None:
    active = True
    guard = ActGuard("test", lambda margin: 1 if active else None, 0.0, tmp_path / "acts.log")
    driver, seen = make_driver(guard.act, {"sp": {"object": "analog-value,1"}}, address=device.address, apdu_timeout=0.3, apdu_retries=3, poll_interval=30)
    async with running(driver):
        await until(lambda: seen.value("sp") == (20.0, "good"), "the first poll")
        device.pause()
        write = asyncio.create_task(driver.write("sp", 21.0))  # first it reads the priority slot: no answer, bacpypes3 retries
        sent = lambda: [act["what"] for act in read_acts(tmp_path / "acts.log")][-2:] == ["bacnet read dev sp priority-array", "bacnet frame dev"]  # noqa: E731
        await until(sent, "the read's first datagram")
        active = False  # the role is lost: the retries 0.3, 0.6 and 0.9 s later must not leave
        with pytest.raises(Exception):
            await write
        device.resume()
        await until(lambda: device.stats()["ReadPropertyRequest"] >= 1, "the device to serve what reached it")
        assert device.stats()["ReadPropertyRequest"] == 1
    guard.close()


async def test_taken_local_port_fails_fast(guard: ActGuard, device: DeviceProcess) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        driver, _ = make_driver(
            guard.act, {"sp": {"object": "analog-value,1"}}, address=device.address, local_address=f"127.0.0.1:{taken.getsockname()[1]}"
        )
        with pytest.raises(OSError):
            await asyncio.wait_for(driver.run(), 1.0)


# ---- configuration ----


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"object": "analog-valu,1"}, "unknown BACnet object type 'analog-valu'"),
        ({"object": "analog-value"}, "expected 'type,instance'"),
        ({"object": "analog-value,x"}, "expected 'type,instance'"),
        ({"object": "analog-value,4194304"}, "expected 'type,instance'"),
        ({"object": "analog-value,1", "priority": 6}, "priority 6 is reserved"),
        ({"object": "analog-value,1", "priority": 17}, "less than or equal to 16"),
        ({"object": "analog-value,1", "priority": 0}, "greater than or equal to 1"),
        ({"object": "analog-value,1", "property": "present-valu"}, "unknown BACnet property"),
        ({"object": "analog-value,1", "cov": True, "property": "status-flags"}, "cov = true reports present-value"),
        ({"object": "analog-value,1", "register": 3}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_point_configuration_is_refused(keys: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BacnetPoint(**keys)


def test_point_configuration_is_normalized() -> None:
    point = BacnetPoint(object="analogValue, 7", property="presentValue")
    assert (point.object, point.property, point.cov, point.priority) == ("analog-value,7", "present-value", False, 8)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "give the device's address, its device_instance, or both"),
        ({"device_instance": 5}, "needs local_address with a subnet"),
        ({"address": "nonsense:x"}, "unrecognized format"),
        ({"address": "127.0.0.1:47820", "apdu_timeout": 0}, "greater than 0"),
        ({"address": "127.0.0.1:47820", "host": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_device_configuration_is_refused(keys: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BacnetDevice(**keys)


def test_device_defaults() -> None:
    device = BacnetDevice(device_instance=5, local_address="192.168.1.20/24:47808")
    assert (device.address, device.poll_interval, device.apdu_timeout, device.apdu_retries, device.cov_lifetime) == (None, 1.0, 1.0, 0, 300)
    assert BacnetDevice(address="10.0.0.5").local_address == "127.0.0.1:0"


def test_registered_as_a_builtin_driver() -> None:
    plugins = load_plugins(["bacnet"])
    assert plugins.problems == [] and plugins.drivers["bacnet"].factory is BacnetDriver
