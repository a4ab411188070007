"""Run a driver per configured device while this node is active (all stopped within 200 ms when not); batch readings into the log."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from cluster.changes import Change
from cluster.commands import (
    CommandError,
    PointUpdate,
    UpdatePoints,
    WriteOutcome,
    check_update,
)
from cluster.config import Standing
from cluster.guard import NotActive
from cluster.node import ClusterNode, RoleEvent
from cluster.raft import ProposalFailed
from cluster.state import moved

from .manager import PluginSet
from .supervisor import follow, keep_running, stop_all
from .types import DeviceContext, Driver, DriverSpec, Reading

logger = logging.getLogger(__name__)

WRITE_ATTEMPTS = 3  # tries per desired write on one active before it is left with its error
MAX_BATCH = 5_000  # readings per log entry (a bigger one stalls the Raft thread); the rest go in the next batches


class _Device:
    """One running driver: its task, the configuration it was built from, and its last error."""

    def __init__(self, name: str, config_key: tuple, driver: Driver, plugin: str, source: str, epoch: int) -> None:
        self.name = name
        self.config_key = config_key
        self.epoch = epoch  # the active period it was started in
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
    deadbands: dict[str, float]  # point -> its deadband, for the readings of this device


class PluginHost:
    """Binds the drivers' lifecycle to the active role; everything here runs on the web server's event loop."""

    def __init__(self, node: ClusterNode, plugins: PluginSet) -> None:
        self._node = node
        self._plugins = plugins
        self._batch_interval = node.config.cluster.batch_interval
        self._devices: dict[str, _Device] = {}
        self._pending: dict[str, PointUpdate] = {}
        self._refused: set[str] = set()  # points whose last reading the log could not hold (logged once)
        self._unsent: dict[str, PointUpdate] = {}  # the batch being committed, less the points newer readings reported since
        self._configuration: dict[str, tuple] = {}  # device -> config key, as of the last change of the documents
        self._reconfigured = True  # set on the Raft thread when the documents changed
        self._config_errors: dict[str, tuple[tuple, str]] = {}  # device -> (config key, why it cannot start)
        self._prepared: dict[str, tuple[tuple, _Prepared | str]] = {}  # device -> (config key, driver and settings)
        self._writes: dict[str, tuple[int, asyncio.Task]] = {}  # point -> (write seq, the task driving it): one at a time
        self._attempts: dict[tuple[str, int], int] = {}
        self._wake = asyncio.Event()
        self._epoch = 0  # counts the times this node stopped being active (on the Raft thread): a driver reports only in its own

    # ---- lifecycle ----

    async def run(self) -> None:
        """Follow role and configuration changes until cancelled; stops every driver on the way out."""
        flusher = asyncio.create_task(self._flush_forever())
        unsubscribe = self._node.on_role(self._on_role)
        try:
            await follow(self._node, self._wake, self._reconcile, self._on_change, "plugin host (devices)")
        finally:
            unsubscribe()
            flusher.cancel()
            await self._stop(list(self._devices))

    def _on_role(self, event: RoleEvent) -> None:
        """On the Raft thread: when the role is lost (even for a moment: the fence cut every connection), what the drivers
        of that active period report is not a device's state any more, and they start again."""
        if event.role != Standing.ACTIVE:
            self._epoch += 1

    def _current(self, epoch: int) -> bool:
        """Whether a driver started in active period `epoch` may still report: the period goes on and the node is active
        (a connection the fence has just cut would report comm-failure for every point of its device otherwise)."""
        return epoch == self._epoch and self._node.is_active()

    def _on_change(self, change: Change, wake: Any) -> None:
        if change.restored or change.kinds & {"devices", "points"}:
            self._reconfigured = True  # the devices' keys are worked out again (from every point's document) only then
        if change.restored or change.kinds or change.writes or change.activated:  # not a driver's report
            wake()

    def _configured(self) -> dict[str, tuple]:
        """Device name -> a key that changes whenever the device's or its points' documents change."""
        documents = self._node.image.documents
        points: dict[str, list] = {}
        for name, doc in list(documents["points"].items()):  # a copy: the Raft thread may change the documents meanwhile
            device = doc.body.get("device")
            if device is not None:
                points.setdefault(device, []).append((name, doc.version))
        return {name: (doc.version, tuple(sorted(points.get(name, [])))) for name, doc in documents["devices"].items()}

    async def _reconcile(self) -> None:
        if self._reconfigured:
            self._reconfigured = False
            self._configuration = self._configured()
            for name, key in self._configuration.items():  # also on a standby, so that becoming active only builds the drivers
                self._prepare(name, key)
                await asyncio.sleep(0)  # thousands of points per device: let the drivers and the API go on in between
            self._prepared = {name: entry for name, entry in self._prepared.items() if name in self._configuration}
        configured = self._configuration
        wanted = configured if self._node.is_active() else {}
        if not wanted or any(device.epoch != self._epoch for device in self._devices.values()):
            self._pending.clear()  # readings of an active period that ended are not reported
        ended = {name for name, device in self._devices.items() if (device.task is not None and device.task.done()) or device.epoch != self._epoch}
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
                points = {point: documents["points"][point].body for point, _ in key[1]}  # key[1]: its (point, version)s
                result = _Prepared(
                    spec,
                    spec.device_model.model_validate({k: v for k, v in body.items() if k != "driver"}),
                    {
                        point: spec.point_model.model_validate({k: v for k, v in doc.items() if k not in common})
                        for point, doc in points.items()
                    },
                    {point: doc.get("deadband", 0.0) for point, doc in points.items()},
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
        source, epoch = f"{spec.name}:{name}", self._epoch
        try:
            context = DeviceContext(
                device=name,
                settings=prepared.settings,
                points=prepared.points,
                report=lambda readings: self._report(readings, source, prepared.deadbands) if self._current(epoch) else None,
                act=self._node.guard.act,
                fence=self._node.fence,
                log=logging.getLogger(f"tandem.device.{name}"),
            )
            driver = spec.factory(context)
        except Exception as exc:  # a plugin's factory raising anything: isolate it
            self._config_error(name, key, f"{type(exc).__name__}: {exc}")
            return
        self._config_errors.pop(name, None)
        device = _Device(name, key, driver, spec.plugin, source, epoch)
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

    def _report(self, readings: list[Reading], source: str, deadbands: dict[str, float]) -> None:
        """Queue the readings that change the replicated image (beyond the point's deadband) for the next batch."""
        now = time.time()
        points = self._node.image.points
        for reading in readings:
            name = reading.point
            last = points.get(name)
            if last is not None and last.quality == reading.quality and not moved(last.value, reading.value, deadbands.get(name, 0.0)):
                self._pending.pop(name, None)
                self._unsent.pop(name, None)
                continue
            stamp = float(reading.ts) if reading.ts is not None else now
            self._pending[name] = PointUpdate(name, reading.value, reading.quality, stamp, source)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._batch_interval)
            if self._pending:
                await self._flush()

    async def _flush(self) -> None:
        """Commit up to MAX_BATCH pending readings in one log entry. Drivers may report a value only once (when it changed):
        if the entry is not committed while they run on in the same active period, its readings are queued again (but for
        newer ones); once that period ended, the drivers start again and report everything anew."""
        epoch = self._epoch
        batch = {name: self._pending.pop(name) for name in list(itertools.islice(self._pending, MAX_BATCH))}
        try:
            command = UpdatePoints(tuple(batch.values()))
        except CommandError:  # a driver reported something the log cannot hold: that point is bad, the others go in
            batch = {name: self._checked(update) for name, update in batch.items()}
            command = UpdatePoints(tuple(batch.values()))
        else:
            self._refused -= batch.keys()
        self._unsent = batch
        try:
            await self._node.submit(command)
        except (NotActive, ProposalFailed) as exc:
            if epoch == self._epoch:
                self._pending = {**self._unsent, **self._pending}
                logger.warning("readings not committed (%s); queued again", exc)
            else:
                logger.warning("readings not committed (%s); the drivers of the next active period report again", exc)
        finally:
            self._unsent = {}

    def _checked(self, update: PointUpdate) -> PointUpdate:
        """The update, or its point as quality "bad" (now, no value) if the update is invalid (e.g. a NaN); logged once
        until the point reads something valid again."""
        try:
            check_update(update)
        except CommandError as exc:
            if update.name not in self._refused:
                self._refused.add(update.name)
                logger.error("point %s: reading %r from %s refused (%s): recorded as bad", update.name, update.value, update.source, exc)
            return PointUpdate(update.name, None, "bad", time.time(), update.source)
        self._refused.discard(update.name)
        return update

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


