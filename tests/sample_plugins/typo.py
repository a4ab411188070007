"""Implements a hook that does not exist (a typo): refused at load."""

from plugins.hookspecs import hookimpl


@hookimpl
def tandem_driverz(register) -> None:
    pass
