"""Every hook a Tandem plugin can implement, with its exact signature; docs/plugins.md documents each one."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from .types import DriverSpec

PROJECT = "tandem"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def tandem_drivers(register: Callable[[DriverSpec], None]) -> None:
    """Register field drivers: call `register(DriverSpec(...))` once per protocol.

    Called once at node start, on every node. Driver names are unique across all plugins;
    a duplicate is refused and reported as a problem of the plugin that registered it second.
    """
