"""Every hook a Tandem plugin can implement, with its exact signature; docs/plugins.md documents each one."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from .types import DriverSpec, FunctionSpec, NotifierSpec

PROJECT = "tandem"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def tandem_drivers(register: Callable[[DriverSpec], None]) -> None:
    """Register field drivers: call `register(DriverSpec(...))` once per protocol.

    Called once at node start, on every node. Driver names are unique across all plugins;
    a duplicate is refused and reported as a problem of the plugin that registered it second.
    """


@hookspec
def tandem_functions(register: Callable[[FunctionSpec], None]) -> None:
    """Register BMS functions: call `register(FunctionSpec(...))` once per function.

    Called once at node start, on every server. Function names and the document kinds they are
    configured by are unique across all plugins; a duplicate is refused like a duplicate driver.
    """


@hookspec
def tandem_notifiers(register: Callable[[NotifierSpec], None]) -> None:
    """Register notifier kinds for alarm events: call `register(NotifierSpec(...))` once per kind.

    Called once at node start, on every server. A [[notifiers]] entry names its kind with
    `notifier = "<name>"`; names are unique across all plugins.
    """
