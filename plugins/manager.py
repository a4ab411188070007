"""Load plugins (built-ins and `tandem` entry points) into a pluggy manager, each isolated; collect what they register."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .types import DriverSpec, FunctionSpec, NotifierSpec

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tandem"
# plugin name -> module: our own drivers and functions, loaded through the same hooks as third-party plugins
BUILTIN_PLUGINS: dict[str, str] = {
    "modbus": "plugins.modbus",
    "bacnet": "plugins.bacnet",
    "alarms": "plugins.alarms",
    "logic": "plugins.logic",
    "schedules": "plugins.schedules",
    "trends": "plugins.trends",
    "webhook": "plugins.webhook",
    "mail": "plugins.mail",
}


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that failed: `stage` is load, register, start or run."""

    plugin: str
    stage: str
    error: str


@dataclass
class PluginSet:
    """The loaded plugins and what they registered; problems are kept, never raised."""

    manager: pluggy.PluginManager
    required: list[str] = field(default_factory=list)  # the plugins asked for: all must load for the node to become active
    loaded: list[str] = field(default_factory=list)
    drivers: dict[str, DriverSpec] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    notifiers: dict[str, NotifierSpec] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)

    def problem(self, plugin: str, stage: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        logger.error("plugin %s failed at %s: %s", plugin, stage, text)
        self.problems.append(PluginProblem(plugin, stage, text))

    def missing(self) -> list[str]:
        """Required plugins that are not loaded (absent or failed): a node with any may not become active."""
        return sorted(set(self.required) - set(self.loaded))

    def drop(self, plugin: str, stage: str, error: BaseException | str) -> None:
        """Isolate a plugin that failed: record the problem and unregister all of it."""
        self.problem(plugin, stage, error)
        self.manager.unregister(name=plugin)
        self.loaded.remove(plugin)


def _candidates(builtins: dict[str, str]) -> list[tuple[str, Callable[[], Any]]]:
    found: list[tuple[str, Callable[[], Any]]] = [(name, lambda m=module: importlib.import_module(m)) for name, module in builtins.items()]
    found += [(ep.name, ep.load) for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    return found


def load_plugins(enabled: Iterable[str] | None, builtins: dict[str, str] = BUILTIN_PLUGINS) -> PluginSet:
    """Load the `enabled` plugins (None: every built-in one); a plugin that fails is recorded and left out."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    wanted = set(builtins) if enabled is None else set(enabled)
    plugins = PluginSet(manager, required=sorted(wanted))
    seen: set[str] = set()
    for name, load in _candidates(builtins):
        if name not in wanted:
            if name not in builtins:
                logger.info("plugin %s is installed but not enabled in [cluster] plugins; not loaded", name)
            continue
        if name in seen:
            plugins.problem(name, "load", "two plugins have this name (a built-in and an entry point, or two entry points)")
            continue
        seen.add(name)
        try:
            _register(manager, name, load())
        except Exception as exc:
            plugins.problem(name, "load", exc)
            continue
        plugins.loaded.append(name)
    for name in sorted(wanted - seen):
        plugins.problem(name, "load", f"enabled in [cluster] plugins but not installed (no built-in or '{ENTRY_POINT_GROUP}' entry point)")
    _collect(plugins, "tandem_drivers", DriverSpec, plugins.drivers)
    _collect(plugins, "tandem_functions", FunctionSpec, plugins.functions)
    _collect(plugins, "tandem_notifiers", NotifierSpec, plugins.notifiers)
    return plugins


def _register(manager: pluggy.PluginManager, name: str, plugin: ModuleType | object) -> None:
    manager.register(plugin, name)
    try:
        manager.check_pending()  # a hook implementation with no matching hook spec (a typo) is an error
    except pluggy.PluginValidationError:
        manager.unregister(plugin)
        raise


def _collect(plugins: PluginSet, hook: str, record: type, into: dict[str, Any]) -> None:
    """Call a registration hook of every plugin; keep what each registers unless a name repeats (then drop the plugin)."""
    what = record.__name__.removesuffix("Spec").lower()
    for impl in getattr(plugins.manager.hook, hook).get_hookimpls():
        name = impl.plugin_name
        registered: list[Any] = []

        def register(spec: Any, registered: list[Any] = registered) -> None:
            if not isinstance(spec, record):
                raise TypeError(f"register() takes a {record.__name__}, got {type(spec).__name__}")
            registered.append(spec)

        try:
            impl.function(register=register)
            names = [spec.name for spec in registered]
            for spec in registered:
                if spec.name in into or names.count(spec.name) > 1:
                    owner = into[spec.name].plugin if spec.name in into else name
                    raise ValueError(f"{what} {spec.name!r} is already registered by plugin {owner}")
        except Exception as exc:
            plugins.drop(name, "register", exc)
            continue
        for spec in registered:
            into[spec.name] = replace(spec, plugin=name)
