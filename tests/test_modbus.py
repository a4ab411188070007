"""The Modbus TCP driver against real pymodbus devices in their own processes: values, writes, block reads, lost and
paused devices, exception responses, configuration errors, cancellation and the active guard."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from driver_kit import Collector, running, until
from pydantic import ValidationError
from pymodbus.exceptions import ModbusException

from cluster.fence import Fence
from cluster.guard import ActGuard, NotActive, read_acts
from plugins.building import BuildingError, validate_building
from plugins.manager import load_plugins
from plugins.modbus import ModbusDevice, ModbusDriver, ModbusPoint, plan_blocks
from plugins.simulator.process import free_ports
from plugins.types import DeviceContext

FAST = {"poll_interval": 0.05, "timeout": 0.5, "reconnect_min": 0.05, "reconnect_max": 0.2}


def make_driver(
    act: Callable[[str], int], port: int, points: dict[str, dict], name: str = "dev", **settings: Any
) -> tuple[ModbusDriver, Collector]:
    collector = Collector()
    context = DeviceContext(
        device=name,
        settings=ModbusDevice(host="127.0.0.1", port=port, **{**FAST, **settings}),
        points={point: ModbusPoint(**keys) for point, keys in points.items()},
        report=collector,
        act=act,
        fence=Fence(lambda: True),
        log=logging.getLogger(f"test.modbus.{name}"),
    )
    return ModbusDriver(context), collector


def words(fmt: str, value: float, order: str = "big") -> list[int]:
    """Registers of a value, encoded independently of the driver: big-endian bytes, words in `order`."""
    data = struct.pack(">" + fmt, value)
    registers = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return registers if order == "big" else registers[::-1]


def log_lines(caplog: pytest.LogCaptureFixture, name: str, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == f"test.modbus.{name}" and r.levelno == level and text in r.getMessage()]


# ---- values ----

POLLED = {  # point -> (keys, struct format, device value, expected reading); word order "little" where given
    "h_i16": ({"register": "holding", "address": 0, "type": "int16"}, "h", -1234, -1234),
    "h_u16": ({"register": "holding", "address": 1}, "H", 54321, 54321),
    "h_i32": ({"register": "holding", "address": 2, "type": "int32"}, "i", -123456789, -123456789),
    "h_u32le": ({"register": "holding", "address": 4, "type": "uint32", "word_order": "little"}, "I", 4000000000, 4000000000),
    "h_f32": ({"register": "holding", "address": 6, "type": "float32"}, "f", 21.3, 21.3),
    "h_f32le": ({"register": "holding", "address": 8, "type": "float32", "word_order": "little"}, "f", -3.25, -3.25),
    "h_f64": ({"register": "holding", "address": 10, "type": "float64"}, "d", 1234.5678, 1234.5678),
    "h_f64le": ({"register": "holding", "address": 14, "type": "float64", "word_order": "little"}, "d", -0.1, -0.1),
    "h_scaled": ({"register": "holding", "address": 18, "type": "int16", "scale": 0.1, "offset": -10}, "h", 235, 13.5),
    "i_i16": ({"register": "input", "address": 0, "type": "int16"}, "h", -1, -1),
    "i_u32": ({"register": "input", "address": 1, "type": "uint32"}, "I", 70000, 70000),
    "i_i32le": ({"register": "input", "address": 3, "type": "int32", "word_order": "little"}, "i", -70000, -70000),
    "i_f32": ({"register": "input", "address": 5, "type": "float32"}, "f", 0.1, 0.1),
    "i_f64le": ({"register": "input", "address": 7, "type": "float64", "word_order": "little"}, "d", 6.02e23, 6.02e23),
    "i_scaled": ({"register": "input", "address": 11, "scale": 0.5, "offset": 1}, "H", 7, 4.5),
}


async def test_polled_values_decode_every_register_kind_type_and_word_order(guard, tandem_modbus_device) -> None:
    device = tandem_modbus_device()
    for keys, fmt, raw, _ in POLLED.values():
        device.set(keys["register"], keys["address"], words(fmt, raw, keys.get("word_order", "big")))
    device.set("coil", 5, [True])
    device.set("discrete", 7, [True])
    points = {name: keys for name, (keys, *_) in POLLED.items()} | {
        "c5": {"register": "coil", "address": 5},
        "c6": {"register": "coil", "address": 6},
        "d7": {"register": "discrete", "address": 7},
    }
    expected = {name: (value, "good") for name, (*_, value) in POLLED.items()}
    expected |= {"c5": (True, "good"), "c6": (False, "good"), "d7": (True, "good")}
    driver, seen = make_driver(guard.act, device.port, points)
    async with running(driver):
        await until(lambda: {name: seen.value(name) for name in points} == expected, "every point decoded")
        device.set("input", 0, words("h", -32768))  # a change on the device reaches the reports
        device.set("discrete", 7, [False])
        await until(lambda: seen.value("i_i16") == (-32768, "good") and seen.value("d7") == (False, "good"), "changed values")
    assert isinstance(seen.latest["h_i32"].value, int) and isinstance(seen.latest["h_scaled"].value, float)


async def test_writes_round_trip_and_read_back(guard, tandem_modbus_device) -> None:
    device = tandem_modbus_device()
    points = {name: keys for name, (keys, *_) in POLLED.items() if keys["register"] == "holding"}
    points |= {"c5": {"register": "coil", "address": 5}}
    driver, seen = make_driver(guard.act, device.port, points)
    async with running(driver):
        await until(lambda: len(seen.latest) == len(points), "first poll")
        cases = {"h_i16": -32768, "h_u16": 65535, "h_i32": 2**31 - 1, "h_u32le": 2**32 - 1, "h_f32": 19.7, "h_f32le": 1e-3,
                 "h_f64": 3.141592653589793, "h_f64le": -2.5e-300, "h_scaled": 12.3}
        for name, value in cases.items():
            assert await driver.write(name, value) == value, name
            keys, fmt = POLLED[name][0], POLLED[name][1]
            raw = round((value + 10) / 0.1) if name == "h_scaled" else value
            width = struct.calcsize(fmt) // 2
            assert device.get("holding", keys["address"], width) == words(fmt, raw, keys.get("word_order", "big")), name
        for value in (True, False, 1):
            assert await driver.write("c5", value) is bool(value)
            assert device.get("coil", 5) == [bool(value)]
        await driver.write("c5", True)
        await until(lambda: all(seen.value(n) == (v, "good") for n, v in cases.items()) and seen.value("c5") == (True, "good"),
                    "the polled values to equal what was written")
        # one register: write_register (6); 32/64 bits: write_registers (16); a coil: write_coil (5)
        writes = {(fc, address) for fc, address, *_ in device.stats()["requests"] if fc in (5, 6, 15, 16)}
        assert writes == {(6, 0), (6, 1), (16, 2), (16, 4), (16, 6), (16, 8), (16, 10), (16, 14), (6, 18), (5, 5)}

        refused = {"h_u16": 70000, "h_i32": -(2**31) - 1, "h_f32": 1e39, "h_scaled": 4000, "c5": 2}  # 4000 -> raw 40100 > int16
        for name, value in refused.items():
            with pytest.raises(ValueError, match="out of range|takes true or false"):
                await driver.write(name, value)
        for name, value in {"h_i16": "abc", "h_u16": True, "h_f64": None}.items():
            with pytest.raises(TypeError, match="takes a number"):
                await driver.write(name, value)
        assert device.get("holding", 1) == [65535]
        with pytest.raises(KeyError, match="no point 'nope'"):
            await driver.write("nope", 1)


async def test_a_value_the_device_already_holds_is_not_written_again(guard, tandem_modbus_device, caplog) -> None:
    """After a failover the new active repeats writes whose outcome was not committed: the device must not get them twice."""
    caplog.set_level(logging.INFO)
    device = tandem_modbus_device()
    driver, seen = make_driver(guard.act, device.port, {"sp": {"register": "holding", "address": 3, "type": "float32"}, "c": {"register": "coil", "address": 1}})
    async with running(driver):
        await until(lambda: len(seen.latest) == 2, "first poll")
        for name, value in (("sp", 21.3), ("sp", 21.3), ("c", True), ("c", True), ("sp", 22.0)):
            assert await driver.write(name, value) == value
    writes = [(fc, address) for fc, address, *_ in device.stats()["requests"] if fc in (5, 6, 15, 16)]
    assert writes == [(16, 3), (5, 1), (16, 3)]
    assert len([r for r in caplog.records if "already holds" in r.getMessage()]) == 2


async def test_read_only_kinds_refuse_writes(guard, tandem_modbus_device) -> None:
    device = tandem_modbus_device()
    points = {"d": {"register": "discrete", "address": 0}, "i": {"register": "input", "address": 0}}
    driver, seen = make_driver(guard.act, device.port, points)
    async with running(driver):
        await until(lambda: len(seen.latest) == 2, "first poll")
        with pytest.raises(ValueError, match="read-only discrete input"):
            await driver.write("d", True)
        with pytest.raises(ValueError, match="read-only input register"):
            await driver.write("i", 1)


async def test_write_without_a_connection_is_a_clear_error(guard) -> None:
    driver, _ = make_driver(guard.act, free_ports(1)[0], {"h": {"register": "holding", "address": 0}}, name="boiler")
    with pytest.raises(ConnectionError, match="modbus device boiler is not connected"):
        await driver.write("h", 1)


# ---- block reads ----


def points_at(register: str, addresses: list[int], **keys: Any) -> dict[str, ModbusPoint]:
    return {f"{register}{a}": ModbusPoint(register=register, address=a, **keys) for a in addresses}


def test_blocks_merge_neighbours_within_max_gap_and_request_limits() -> None:
    def shape(blocks: list) -> list[tuple]:
        return [(b.kind, b.address, b.count, len(b.points)) for b in blocks]

    assert shape(plan_blocks(points_at("holding", [0, 11]), 10)) == [("holding", 0, 12, 2)]  # hole of 10: merged
    assert shape(plan_blocks(points_at("holding", [0, 12]), 10)) == [("holding", 0, 1, 1), ("holding", 12, 1, 1)]
    assert shape(plan_blocks(points_at("holding", [0, 1, 3]), 0)) == [("holding", 0, 2, 2), ("holding", 3, 1, 1)]
    assert shape(plan_blocks(points_at("holding", list(range(130))), 10)) == [("holding", 0, 125, 125), ("holding", 125, 5, 5)]
    assert shape(plan_blocks(points_at("coil", list(range(2100))), 10)) == [("coil", 0, 2000, 2000), ("coil", 2000, 100, 100)]
    wide = points_at("holding", [0], type="float64") | points_at("holding", [2, 4]) | points_at("input", [5])
    assert shape(plan_blocks(wide, 10)) == [("holding", 0, 5, 3), ("input", 5, 1, 1)]  # overlapping and wide points, kinds apart
    assert shape(plan_blocks(points_at("holding", [0]) | points_at("holding", [123], type="float32"), 200)) == [("holding", 0, 125, 2)]
    assert len(plan_blocks(points_at("holding", [0]) | points_at("holding", [124], type="float32"), 200)) == 2  # would be 126


async def test_ten_neighbours_are_read_with_one_request_and_requests_keep_their_gap(guard, tandem_modbus_device) -> None:
    device = tandem_modbus_device()
    points = {f"h{a}": {"register": "holding", "address": a} for a in range(20, 30)}
    points |= {"h35": {"register": "holding", "address": 35}, "h60": {"register": "holding", "address": 60}}
    points |= {"i0": {"register": "input", "address": 0}}
    device.set("holding", 20, list(range(100, 110)))
    driver, seen = make_driver(guard.act, device.port, points, request_gap=0.02)
    async with running(driver):
        await until(lambda: seen.value("h29") == (109, "good") and seen.reports >= 5, "five polls")
    requests = device.stats()["requests"]
    reads = {(fc, address, count) for fc, address, count, *_ in requests}
    assert reads == {(3, 20, 16), (3, 60, 1), (4, 0, 1)}  # 20..29 and 35 in one request, 60 on its own
    gaps = [later[3] - earlier[3] for earlier, later in pairwise(requests)]
    assert min(gaps) >= 0.02 * 0.99


async def test_only_changed_points_are_reported_and_every_point_again_after_a_reconnect(guard, tandem_modbus_device) -> None:
    """A poll reports the points whose registers or bits changed since the last read on this connection; a new connection
    (a device that came back, a new active) reports every point once, though the device holds the values it held."""
    device = tandem_modbus_device()
    device.set("holding", 0, [1, *words("f", 21.5), 4])
    device.set("coil", 0, [True])
    points = {"a": {"register": "holding", "address": 0}, "f": {"register": "holding", "address": 1, "type": "float32"},
              "b": {"register": "holding", "address": 3}, "c": {"register": "coil", "address": 0}}
    expected = {"a": (1, "good"), "f": (21.5, "good"), "b": (4, "good"), "c": (True, "good")}
    driver, seen = make_driver(guard.act, device.port, points, timeout=0.3)
    async with running(driver):
        await until(lambda: {name: seen.value(name) for name in points} == expected, "the first poll")
        assert sorted(seen.since(0)) == ["a", "b", "c", "f"]
        polls = seen.reports
        await until(lambda: seen.reports >= polls + 3, "three more polls")
        assert seen.since(polls) == []  # nothing changed: nothing reported
        device.set("holding", 1, words("f", -21.5)[:1])  # f's first register only (the second is 0 for both values)
        device.set("holding", 3, [5])
        device.set("coil", 0, [False])
        expected |= {"f": (-21.5, "good"), "b": (5, "good"), "c": (False, "good")}
        await until(lambda: {name: seen.value(name) for name in points} == expected, "the new values")
        assert sorted(seen.since(polls)) == ["b", "c", "f"]  # each once, and a not at all

        device.pause()  # a request times out: the connection is aborted and its points are comm-failure
        await until(lambda: seen.all("comm-failure"), "comm-failure", timeout=2)
        lost = seen.reports
        device.resume()
        await until(lambda: {name: seen.value(name) for name in points} == expected, "the device back with the same values")
    assert sorted(seen.since(lost)) == ["a", "b", "c", "f"]


async def test_polls_keep_a_fixed_rate_without_drift(guard, tandem_modbus_device) -> None:
    device = tandem_modbus_device()
    points = {"h0": {"register": "holding", "address": 0}, "i0": {"register": "input", "address": 0}}
    driver, seen = make_driver(guard.act, device.port, points, poll_interval=0.1, request_gap=0.02)  # each poll takes > 20 ms
    async with running(driver):
        await until(lambda: seen.reports >= 12, "twelve polls")
    starts = [t for fc, _, _, t, _ in device.stats()["requests"] if fc == 3]
    assert abs(starts[11] - starts[1] - 1.0) < 0.1, starts  # sleeping 0.1 s after each poll would drift by 0.2 s


# ---- exception responses ----


async def test_illegal_address_is_a_config_error_of_that_point_only(guard, tandem_modbus_device) -> None:
    device = tandem_modbus_device()  # holding 200..209 is a hole, holding ends at 259, input at 199, coils at 63
    device.set("holding", 198, [1, 2])
    device.set("holding", 212, [3])
    points = {
        "h198": {"register": "holding", "address": 198}, "h199": {"register": "holding", "address": 199},
        "hole": {"register": "holding", "address": 205}, "h212": {"register": "holding", "address": 212},
        "far": {"register": "holding", "address": 5000}, "i199": {"register": "input", "address": 199, "type": "float32"},
        "c1": {"register": "coil", "address": 1}, "c100": {"register": "coil", "address": 100},
    }
    driver, seen = make_driver(guard.act, device.port, points)
    expected = {"h198": (1, "good"), "h199": (2, "good"), "h212": (3, "good"), "c1": (False, "good"),
                "hole": (None, "config-error"), "far": (None, "config-error"), "i199": (None, "config-error"),
                "c100": (None, "config-error")}
    async with running(driver):
        await until(lambda: {name: seen.value(name) for name in points} == expected, "config-error on the bad points only")
        polls = seen.reports
        await until(lambda: seen.reports >= polls + 3, "three more polls")
        assert {name: seen.value(name) for name in points} == expected
        with pytest.raises(ModbusException, match="refused the write to hole"):
            await driver.write("hole", 1)
    merged = [(fc, address, count) for fc, address, count, *_ in device.stats()["requests"] if (fc, address) == (3, 198)]
    assert merged[0] == (3, 198, 15) and set(merged[1:]) == {(3, 198, 1)}  # the failed block was split once, for good


# ---- lost, missing and paused devices ----


async def test_killed_device_goes_comm_failure_and_returns_with_one_log_line_each(guard, tandem_modbus_device, caplog, tmp_path) -> None:
    caplog.set_level(logging.INFO, logger="test.modbus.dev")
    device = tandem_modbus_device()
    device.set("holding", 0, [42])
    points = {"h": {"register": "holding", "address": 0}, "c": {"register": "coil", "address": 0}}
    driver, seen = make_driver(guard.act, device.port, points)
    async with running(driver):
        await until(lambda: seen.value("h") == (42, "good"), "the first value")
        device.kill()
        await until(lambda: seen.all("comm-failure") and all(r.value is None for r in seen.latest.values()), "comm-failure")
        before = connects(tmp_path)
        await until(lambda: connects(tmp_path) >= before + 3, "reconnect attempts")
        device.start()  # the same port again
        device.set("holding", 0, [43])
        await until(lambda: seen.value("h") == (43, "good") and seen.value("c") == (False, "good"), "the device to return")
    assert len(log_lines(caplog, "dev", logging.WARNING, "is unreachable")) == 1
    assert len(log_lines(caplog, "dev", logging.INFO, "is reachable again")) == 1
    assert len(log_lines(caplog, "dev", logging.WARNING, "")) == 1


def connects(tmp_path: Path, device: str = "dev") -> int:
    return sum(act["what"] == f"modbus connect {device}" for act in read_acts(tmp_path / "acts.log"))


async def test_first_connect_is_retried_until_the_device_appears(guard, tandem_modbus_device, caplog, tmp_path) -> None:
    caplog.set_level(logging.INFO, logger="test.modbus.dev")
    port = free_ports(1)[0]
    driver, seen = make_driver(guard.act, port, {"h": {"register": "holding", "address": 3}})
    async with running(driver):
        await until(lambda: seen.value("h") == (None, "comm-failure"), "comm-failure before the device exists")
        await until(lambda: connects(tmp_path) >= 3, "connect attempts")
        device = tandem_modbus_device(port=port)
        device.set("holding", 3, [7])
        await until(lambda: seen.value("h") == (7, "good"), "the device to be found")
    assert len(log_lines(caplog, "dev", logging.WARNING, "is unreachable")) == 1
    assert len(log_lines(caplog, "dev", logging.INFO, "is reachable again")) == 1


async def test_paused_device_goes_comm_failure_within_its_timeout_and_does_not_stall_another(guard, tandem_modbus_device) -> None:
    paused, other = tandem_modbus_device(), tandem_modbus_device()
    points = {"h": {"register": "holding", "address": 0}}
    driver_a, seen_a = make_driver(guard.act, paused.port, points, name="a", timeout=0.3)
    driver_b, seen_b = make_driver(guard.act, other.port, points, name="b", timeout=0.3)
    async with running(driver_a), running(driver_b):
        await until(lambda: seen_a.value("h") == seen_b.value("h") == (0, "good"), "both devices polled")
        paused.pause()
        start = time.monotonic()
        other.set("holding", 0, [5])
        await until(lambda: seen_b.value("h") == (5, "good"), "the other device's new value", timeout=0.25)
        reports_b = seen_b.reports
        await until(lambda: seen_a.value("h") == (None, "comm-failure"), "comm-failure of the paused device", timeout=2)
        assert time.monotonic() - start < 0.3 + 0.05 + 0.4  # timeout + poll interval + slack
        assert seen_b.reports >= reports_b + 3 and seen_b.value("h") == (5, "good")
        paused.resume()
        paused.set("holding", 0, [6])
        await until(lambda: seen_a.value("h") == (6, "good"), "the paused device to return")


# ---- lifecycle ----


async def stop_within(task: asyncio.Task, budget: float = 0.15) -> None:
    start = time.monotonic()
    task.cancel()
    await asyncio.wait({task}, timeout=1.0)
    assert time.monotonic() - start < budget
    assert task.cancelled()  # CancelledError was not swallowed


async def test_cancellation_ends_run_quickly_and_closes_the_connection(guard, tandem_modbus_device) -> None:
    device = tandem_modbus_device()
    points = {"h": {"register": "holding", "address": 0}}
    driver, seen = make_driver(guard.act, device.port, points)
    task = asyncio.create_task(driver.run())
    await until(lambda: seen.value("h") == (0, "good") and device.stats()["connections"] == 1, "polling")
    await stop_within(task)
    await until(lambda: device.stats()["connections"] == 0, "the device to see the connection closed")

    slow, seen = make_driver(guard.act, device.port, points, timeout=5.0)  # cancelled while a request waits for a paused device
    task = asyncio.create_task(slow.run())
    await until(lambda: seen.value("h") == (0, "good"), "polling")
    device.pause()
    paused_at = time.time()
    await until(lambda: guard.last_act > paused_at, "a request to the paused device")
    await stop_within(task)
    device.resume()
    await until(lambda: device.stats()["connections"] == 0, "the device to see the connection closed")

    waiting, seen = make_driver(guard.act, free_ports(1)[0], points, reconnect_min=5.0, reconnect_max=5.0)  # in back-off
    task = asyncio.create_task(waiting.run())
    await until(lambda: seen.value("h") == (None, "comm-failure"), "comm-failure")
    await stop_within(task)


async def test_losing_the_active_role_stops_requests(tandem_modbus_device, tmp_path) -> None:
    device = tandem_modbus_device()
    active = {"now": True}
    guard = ActGuard("flip", lambda margin: 1 if active["now"] else None, 0.0, tmp_path / "acts.log")
    try:
        driver, seen = make_driver(guard.act, device.port, {"h": {"register": "holding", "address": 0}}, poll_interval=30)
        async with running(driver) as task:
            await until(lambda: seen.value("h") == (0, "good"), "the first poll")  # then the poller sleeps for 30 s
            active["now"] = False
            with pytest.raises(NotActive):
                await driver.write("h", 1)
            assert not task.done()

        driver, seen = make_driver(guard.act, device.port, {"h": {"register": "holding", "address": 0}})
        active["now"] = True
        task = asyncio.create_task(driver.run())
        await until(lambda: seen.value("h") == (0, "good"), "the first poll")
        active["now"] = False
        with pytest.raises(NotActive):
            await asyncio.wait_for(task, 2.0)  # NotActive propagates out of run()
        await until(lambda: device.stats()["connections"] == 0, "the connection to close")
        assert device.get("holding", 0) == [0] and guard.refused == 2
        requests = [act for act in read_acts(tmp_path / "acts.log") if act["what"] in ("modbus read dev", "modbus write dev")]
        assert len(device.stats()["requests"]) == len(requests)  # every request the device saw passed the guard first
    finally:
        guard.close()


# ---- configuration ----


@pytest.mark.parametrize(
    ("keys", "loc", "message"),
    [
        ({"register": "coil", "address": 1, "type": "int16"}, ("type",), "a coil holds one bit: the type must be bool, not int16"),
        ({"register": "holding", "address": 1, "type": "bool"}, ("type",), "type bool needs register coil or discrete"),
        ({"register": "holding", "address": 1, "colour": "red"}, ("colour",), "Extra inputs are not permitted"),
        ({"register": "holding", "address": 70000}, ("address",), "less than or equal to 65535"),
        ({"register": "input", "address": 65534, "type": "float64"}, ("type",), "float64 at address 65534 needs 4 registers"),
        ({"register": "holdings", "address": 0}, ("register",), "'coil', 'discrete', 'holding' or 'input'"),
        ({"register": "holding", "address": 0, "word_order": "middle"}, ("word_order",), "'big' or 'little'"),
        ({"register": "holding", "address": 0, "type": "int64"}, ("type",), "'uint32', 'float32' or 'float64'"),
        ({"register": "coil", "address": 0, "scale": 2}, ("scale",), "apply to registers"),
        ({"register": "holding", "address": 0, "scale": 0}, ("scale",), "other than 0"),
        ({"address": 0}, ("register",), "Field required"),
    ],
)
def test_invalid_points_give_clear_errors(keys: dict, loc: tuple, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ModbusPoint.model_validate(keys)
    errors = caught.value.errors()
    assert len(errors) == 1 and tuple(errors[0]["loc"]) == loc and message in errors[0]["msg"], errors


@pytest.mark.parametrize(
    ("keys", "loc", "message"),
    [
        ({"port": 502}, ("host",), "Field required"),
        ({"host": "plc", "unit": 256}, ("unit",), "less than or equal to 255"),
        ({"host": "plc", "poll_interval": 0}, ("poll_interval",), "greater than 0"),
        ({"host": "plc", "request_gap": -1}, ("request_gap",), "greater than or equal to 0"),
        ({"host": "plc", "reconnect_min": 5, "reconnect_max": 1}, (), "reconnect_max (1.0) must not be below reconnect_min (5.0)"),
        ({"host": "plc", "polling": 1}, ("polling",), "Extra inputs are not permitted"),
    ],
)
def test_invalid_devices_give_clear_errors(keys: dict, loc: tuple, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ModbusDevice.model_validate(keys)
    errors = caught.value.errors()
    assert len(errors) == 1 and tuple(errors[0]["loc"]) == loc and message in errors[0]["msg"], errors


def test_building_documents_name_the_key_and_validate_again_on_the_host() -> None:
    plugins = load_plugins(["modbus"])
    assert plugins.problems == [] and plugins.drivers["modbus"].factory is ModbusDriver
    building = {
        "devices": [{"name": "plc", "driver": "modbus", "host": "10.0.0.5"}],
        "points": [{"name": "fan", "device": "plc", "register": "coil", "address": 3, "writable": True},
                   {"name": "temp", "device": "plc", "register": "input", "address": 0, "type": "int16", "scale": 0.1}],
    }
    documents = validate_building(building, plugins)
    assert documents["points"]["fan"]["type"] == "bool" and documents["points"]["temp"]["register"] == "input"
    for body in documents["points"].values():  # what the host validates when it starts the driver
        ModbusPoint.model_validate({k: v for k, v in body.items() if k not in ("device", "writable", "deadband")})
    ModbusDevice.model_validate({k: v for k, v in documents["devices"]["plc"].items() if k != "driver"})
    building["points"].append({"name": "bad", "device": "plc", "register": "coil", "address": 4, "type": "float32"})
    with pytest.raises(BuildingError) as caught:
        validate_building(building, plugins)
    assert caught.value.problems == ["points[2].type: Value error, a coil holds one bit: the type must be bool, not float32"]
