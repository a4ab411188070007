"""Raises inside its registration hook."""

from plugins.hookspecs import hookimpl


@hookimpl
def tandem_drivers(register) -> None:
    raise RuntimeError("licence check failed")
