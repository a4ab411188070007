"""The pytest plugin (entry point `tandem` in pytest11) gives a third party's tests working fixtures."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

THIRD_PARTY_TEST = """
def test_a_simulated_modbus_device(tandem_modbus_device):
    device = tandem_modbus_device(registers=10)
    device.set("holding", 3, [42, 43])
    assert device.get("holding", 3, 2) == [42, 43]
    assert device.command("get", register="input", address=9, count=1) == {"values": [0]}
"""


def test_a_third_party_test_uses_the_modbus_device_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_acme=THIRD_PARTY_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")  # a fresh pytest: the fixture comes from the entry point
    result.assert_outcomes(passed=1)
