"""Run the BMS functions (alarms, schedules, logic, ...) while this node is active, each configured by its own documents."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from cluster.changes import Change
from cluster.commands import Step
from cluster.node import ClusterNode
from cluster.state import Rejected

from .building import entry_context
from .manager import PluginSet
from .supervisor import follow, keep_running, stop_all
from .types import FunctionContext, FunctionSpec, StepRejected

logger = logging.getLogger(__name__)

DAY = 86_400.0


@dataclass
class _Running:
    """One running function: its task, the configuration it was built from, points changed since it last asked."""

    spec: FunctionSpec
    key: tuple
    task: asyncio.Task | None = None
    error: str | None = None
    changed: set[str] = field(default_factory=lambda: {"*"})
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class FunctionHost:
    """Binds the functions' lifecycle to the active role and feeds them the points that change."""

    def __init__(self, node: ClusterNode, plugins: PluginSet) -> None:
        self._node = node
        self._plugins = plugins
        self._running: dict[str, _Running] = {}
        self._config_errors: dict[str, tuple[tuple, str]] = {}
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Follow role and configuration changes until cancelled; stops every function on the way out."""
        loop = asyncio.get_running_loop()
        on_change = lambda change, wake_up: self._on_change(change, wake_up, loop)  # noqa: E731
        try:
            await follow(self._node, self._wake, self._reconcile, on_change, "function host")
        finally:
            await self._stop(list(self._running))

    def _on_change(self, change: Change, wake_up: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        """On the Raft thread: the points a command changed ("*": all, after a snapshot) go to the running functions;
        configuration and activation changes reconcile."""
        if change.restored:
            loop.call_soon_threadsafe(self._mark, {"*"})
        elif change.points:
            loop.call_soon_threadsafe(self._mark, change.points)
        elif change.kinds or change.activated:
            wake_up()

    def _mark(self, names: set[str] | frozenset[str]) -> None:
        for running in self._running.values():
            running.changed |= names
            running.wake.set()

    def _configured(self) -> dict[str, tuple]:
        """Function name -> a key that changes whenever its entries or the notifiers change."""
        documents = self._node.image.documents
        notifiers = tuple(sorted((name, doc.version) for name, doc in documents.get("notifiers", {}).items()))
        return {
            name: (tuple(sorted((entry, doc.version) for entry, doc in documents.get(name, {}).items())), notifiers)
            for name in self._plugins.functions
        }

    async def _reconcile(self) -> None:
        wanted = self._configured() if self._node.is_active() else {}
        ended = {name for name, running in self._running.items() if running.task is not None and running.task.done()}
        await self._stop([name for name, running in self._running.items() if wanted.get(name) != running.key or name in ended])
        for name, key in wanted.items():
            if name not in self._running and self._config_errors.get(name, (None, ""))[0] != key:
                self._start(self._plugins.functions[name], key)

    def _start(self, spec: FunctionSpec, key: tuple) -> None:
        documents = self._node.image.documents
        points = list(documents["points"].items()) if documents.get(spec.name) else []  # a walk over every point: only if needed
        context_data = entry_context({name: doc.body.get("writable", False) for name, doc in points})
        running = _Running(spec, key)
        try:
            entries: dict[str, BaseModel] = {
                name: spec.model.model_validate(doc.body, context=context_data) for name, doc in documents.get(spec.name, {}).items()
            }
            context = FunctionContext(
                function=spec.name,
                entries=entries,
                image=self._node.image,
                step=lambda **parts: self._step(spec.name, **parts),
                changed=lambda timeout: self._changed(running, timeout),
                act=self._node.guard.act,
                notifiers=self._plugins.notifiers,
                log=logging.getLogger(f"tandem.function.{spec.name}"),
            )
            function = spec.factory(context)
        except Exception as exc:  # a plugin's model or factory raising anything: isolate it
            logger.error("function %s cannot start: %s: %s", spec.name, type(exc).__name__, exc)
            self._config_errors[spec.name] = (key, f"{type(exc).__name__}: {exc}")
            return
        self._config_errors.pop(spec.name, None)
        failed = lambda error: setattr(running, "error", error)  # noqa: E731
        running.task = asyncio.create_task(keep_running(f"function {spec.name} (plugin {spec.plugin})", function.run, failed), name=f"function {spec.name}")
        running.task.add_done_callback(lambda _: self._wake.set())
        self._running[spec.name] = running
        logger.info("function %s started with %d entries", spec.name, len(entries))

    async def _stop(self, names: list[str]) -> None:
        stopped = [self._running.pop(name) for name in names if name in self._running]
        await stop_all(running.task for running in stopped if running.task is not None)
        for running in stopped:
            logger.info("function %s stopped", running.spec.name)

    async def _step(self, function: str, **parts: Any) -> Any:
        """Commit one step of `function` now; raises StepRejected, NotActive or ProposalFailed if it did not apply."""
        now = time.time()
        keep_since = now - self._node.config.cluster.journal_days * DAY  # each step also prunes the function's journal
        result = await self._node.submit(Step(function, None, now, **{"keep_since": keep_since, **parts}))
        if isinstance(result, Rejected):
            raise StepRejected(result.reason)
        return result

    @staticmethod
    async def _changed(running: _Running, timeout: float) -> set[str]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(running.wake.wait(), timeout)
        running.wake.clear()
        names, running.changed = running.changed, set()
        return names

    def status(self) -> dict[str, Any]:
        return {
            **{name: {"running": True, "plugin": r.spec.plugin, "error": r.error} for name, r in self._running.items()},
            **{name: {"running": False, "error": error} for name, (_, error) in self._config_errors.items()},
        }
