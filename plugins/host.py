"""Run a driver per configured device while this node is active (all stopped within 200 ms when not); batch readings into the log."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from cluster.commands import CommandError, PointUpdate, UpdatePoints, WriteOutcome
from cluster.guard import NotActive
from cluster.node import Change, ClusterNode
from cluster.raft import ProposalFailed

from .manager import PluginSet
from .supervisor import follow, keep_running, stop_all
from .types import DeviceContext, Driver, DriverSpec, Reading

logger = logging.getLogger(__name__)

WRITE_ATTEMPTS = 3  # tries per desired write on one active before it is left with its error


class _Device:
    """One running driver: its task, the configuration it was built from, and its last error."""

    def __init__(self, name: str, config_key: tuple, driver: Driver, plugin: str, source: str) -> None:
        self.name = name
        self.config_key = config_key
        self.driver = driver
        self.plugin = plugin
        self.source = source  # "<driver>:<device>", the source of its values in the image
        self.task: asyncio.Task | None = None
        self.error: str | None = None


@dataclass(frozen=True)
class _Prepared:
    """What a device's driver is built from: validated once per configuration, ready before the node becomes active."""

    spec: DriverSpec
    settings: BaseModel
    points: dict[str, BaseModel]


class PluginHost:
    """Binds the drivers' lifecycle to the active role; everything here runs on the web server's event loop."""

    def __init__(self, node: ClusterNode, plugins: PluginSet) -> None:
        self._node = node
        self._plugins = plugins
        self._batch_interval = node.config.cluster.batch_interval
        self._devices: dict[str, _Device] = {}
        self._pending: dict[str, PointUpdate] = {}
        self._config_errors: dict[str, tuple[tuple, str]] = {}  # device -> (config key, why it cannot start)
        self._prepared: dict[str, tuple[tuple, _Prepared | str]] = {}  # device -> (config key, driver and settings)
        self._writes: dict[str, tuple[int, asyncio.Task]] = {}  # point -> (write seq, the task driving it): one at a time
        self._attempts: dict[tuple[str, int], int] = {}
        self._wake = asyncio.Event()

    # ---- lifecycle ----

    async def run(self) -> None:
        """Follow role and configuration changes until cancelled; stops every driver on the way out."""
        flusher = asyncio.create_task(self._flush_forever())
        try:
            await follow(self._node, self._wake, self._reconcile, self._on_change, "plugin host (devices)")
        finally:
            flusher.cancel()
            await self._stop(list(self._devices))

    @staticmethod
    def _on_change(change: Change, wake: Any) -> None:
        if type(change.command) is not UpdatePoints:  # configuration, desired writes, outcomes, snapshot installs
            wake()

    def _configured(self) -> dict[str, tuple]:
        """Device name -> a key that changes whenever the device's or its points' documents change."""
        documents = self._node.image.documents
        points: dict[str, list] = {}
        for name, doc in documents["points"].items():
            device = doc.body.get("device")
            if device is not None:
                points.setdefault(device, []).append((name, doc.version))
        return {name: (doc.version, tuple(sorted(points.get(name, [])))) for name, doc in documents["devices"].items()}

    async def _reconcile(self) -> None:
        configured = self._configured()
        for name, key in configured.items():  # also on a standby, so that becoming active only builds the drivers
            self._prepare(name, key)
        self._prepared = {name: entry for name, entry in self._prepared.items() if name in configured}
        wanted = configured if self._node.is_active() else {}
        if not wanted:
            self._pending.clear()  # readings taken while active are not reported by a standby
        ended = {name for name, device in self._devices.items() if device.task is not None and device.task.done()}
        await self._stop([name for name, device in self._devices.items() if wanted.get(name) != device.config_key or name in ended])
        for name, key in wanted.items():
            if name not in self._devices and self._config_errors.get(name, (None, ""))[0] != key:
                self._start(name, key)
        self._drive_writes()

    def _prepare(self, name: str, key: tuple) -> _Prepared | str:
        """The device's driver and validated settings (cached per configuration key), or why it cannot start."""
        cached = self._prepared.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        documents = self._node.image.documents
        body = documents["devices"][name].body
        spec = self._plugins.drivers.get(body["driver"])
        result: _Prepared | str
        if spec is None:
            result = f"driver {body['driver']!r} is not loaded on {self._node.name}"
        else:
            common = ("device", "writable", "deadband")
            try:
                result = _Prepared(
                    spec,
                    spec.device_model.model_validate({k: v for k, v in body.items() if k != "driver"}),
                    {
                        point: spec.point_model.model_validate({k: v for k, v in doc.body.items() if k not in common})
                        for point, doc in documents["points"].items()
                        if doc.body.get("device") == name
                    },
                )
            except Exception as exc:  # a plugin's model may raise anything
                result = f"{type(exc).__name__}: {exc}"
        self._prepared[name] = (key, result)
        return result

    def _start(self, name: str, key: tuple) -> None:
        prepared = self._prepare(name, key)
        if isinstance(prepared, str):
            self._config_error(name, key, prepared)
            return
        spec = prepared.spec
        source = f"{spec.name}:{name}"
        try:
            context = DeviceContext(
                device=name,
                settings=prepared.settings,
                points=prepared.points,
                report=lambda readings: self._report(readings, source),
                act=self._node.guard.act,
                fence=self._node.fence,
                log=logging.getLogger(f"tandem.device.{name}"),
            )
            driver = spec.factory(context)
        except Exception as exc:  # a plugin's factory raising anything: isolate it
            self._config_error(name, key, f"{type(exc).__name__}: {exc}")
            return
        self._config_errors.pop(name, None)
        device = _Device(name, key, driver, spec.plugin, source)
        failed = lambda error: setattr(device, "error", error)  # noqa: E731
        device.task = asyncio.create_task(keep_running(f"device {name} (plugin {spec.plugin})", driver.run, failed), name=f"device {name}")
        device.task.add_done_callback(lambda _: self._wake.set())  # ended by NotActive: reconcile now
        self._devices[name] = device
        logger.info("device %s: driver %s started", name, spec.name)

    # ---- desired-state writes ----

    def _drive_writes(self) -> None:
        """Drive every committed, unconfirmed write whose device runs here (after a failover: what is outstanding)."""
        desired_writes = self._node.image.desired
        outstanding = {(name, desired.seq) for name, desired in desired_writes.items()}
        self._attempts = {key: count for key, count in self._attempts.items() if key in outstanding}
        for name, desired in desired_writes.items():
            key = (name, desired.seq)
            device = self._devices.get(self._device_of(name))
            # A point's writes go one after the other, the newest desired next: an older value never follows a newer one.
            if device is None or name in self._writes or self._attempts.get(key, 0) >= WRITE_ATTEMPTS:
                continue
            self._attempts[key] = self._attempts.get(key, 0) + 1
            task = asyncio.create_task(self._drive(device, name, desired.seq, desired.value), name=f"write {name}")
            self._writes[name] = (desired.seq, task)
            task.add_done_callback(lambda _, name=name: (self._writes.pop(name, None), self._wake.set()))

    async def _drive(self, device: _Device, point: str, seq: int, value: Any) -> None:
        try:
            readback, error = await device.driver.write(point, value), None
        except NotActive:
            return  # the next active drives it
        except Exception as exc:  # the device refused or is gone: recorded, retried
            readback, error = None, f"{type(exc).__name__}: {exc}"
            logger.warning("write %s = %r (write %d) on %s failed: %s", point, value, seq, device.name, error)
        try:
            await self._node.submit(WriteOutcome(point, seq, readback, error, device.source, time.time()))
        except (NotActive, ProposalFailed, CommandError) as exc:
            logger.warning("outcome of write %d to %s not committed (%s); the active drives it again", seq, point, exc)

    def _config_error(self, name: str, key: tuple, error: str) -> None:
        logger.error("device %s cannot start: %s", name, error)
        self._config_errors[name] = (key, error)

    async def _stop(self, names: list[str]) -> None:
        devices = [self._devices.pop(name) for name in names if name in self._devices]
        tasks = [device.task for device in devices if device.task is not None]
        await stop_all(tasks + [task for point, (_, task) in self._writes.items() if self._device_of(point) in names])
        for device in devices:
            logger.info("device %s: driver stopped", device.name)

    def _device_of(self, point: str) -> str | None:
        doc = self._node.image.documents["points"].get(point)
        return doc.body.get("device") if doc else None

    # ---- readings into the log ----

    def _report(self, readings: list[Reading], source: str) -> None:
        """Queue the readings that change the replicated image (beyond the point's deadband) for the next batch."""
        now = time.time()
        documents = self._node.image.documents["points"]
        points = self._node.image.points
        for reading in readings:
            doc = documents.get(reading.point)
            deadband = doc.body.get("deadband", 0.0) if doc else 0.0
            last = points.get(reading.point)
            if last is not None and last.quality == reading.quality and _within(last.value, reading.value, deadband):
                self._pending.pop(reading.point, None)
                continue
            stamp = float(reading.ts) if reading.ts is not None else now
            self._pending[reading.point] = PointUpdate(reading.point, reading.value, reading.quality, stamp, source)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._batch_interval)
            if self._pending:
                await self._flush()

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        try:
            command = UpdatePoints(tuple(pending.values()))
        except CommandError as exc:
            logger.error("dropped a batch of %d readings: %s", len(pending), exc)
            return
        try:
            await self._node.submit(command)
        except (NotActive, ProposalFailed) as exc:
            logger.warning("readings not committed (%s); the next active polls again", exc)

    # ---- status ----

    def status(self) -> dict[str, Any]:
        return {
            "loaded": self._plugins.loaded,
            "writes_in_flight": sorted(f"{point}#{seq}" for point, (seq, _) in self._writes.items()),
            "problems": [vars(problem) for problem in self._plugins.problems],
            "devices": {
                **{name: {"running": True, "plugin": d.plugin, "error": d.error} for name, d in self._devices.items()},
                **{name: {"running": False, "error": error} for name, (_, error) in self._config_errors.items()},
            },
        }


def _within(old: Any, new: Any, deadband: float) -> bool:
    """Whether `new` is no real change from `old`: equal, or numbers closer than the deadband."""
    if type(old) in (int, float) and type(new) in (int, float):
        return math.isclose(old, new) if deadband == 0 else abs(new - old) < deadband
    return old == new
