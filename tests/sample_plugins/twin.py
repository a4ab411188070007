"""Registers a driver named like the echo plugin's: refused as a duplicate."""

from plugins.hookspecs import hookimpl
from plugins.types import DriverSpec

from .echo import EchoDevice, EchoDriver, EchoPoint


@hookimpl
def tandem_drivers(register) -> None:
    register(DriverSpec("echo", EchoDriver, EchoDevice, EchoPoint))
