"""The building configuration (devices, points, notifiers and the functions' entries) as replicated documents: validate
an import against the loaded plugins, plan it, export it."""

from __future__ import annotations

import hashlib
import time
import uuid
from operator import itemgetter
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)

from cluster.bulk import release_later, sorted_in_runs
from cluster.commands import (
    ApplyDocuments,
    DeleteDocument,
    PutDocument,
    StageDocuments,
    in_parts,
)
from cluster.names import Name
from cluster.state import ProcessImage

from .types import DriverSpec

if TYPE_CHECKING:
    from .manager import PluginSet

BASE_KINDS = ("devices", "points", "notifiers")  # then one section per loaded function: [[alarms]], [[schedules]], ...
ALARM_EVENTS = ("raised", "returned", "acked", "shelved", "unshelved", "removed")


class BuildingError(ValueError):
    """The building configuration is invalid; `problems` lists every "location: what is wrong"."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class DeviceEntry(BaseModel):
    """A [[devices]] entry: the common keys; the rest belongs to the driver's device model."""

    model_config = ConfigDict(extra="allow")
    name: Name
    driver: Name


class PointEntry(BaseModel):
    """A [[points]] entry: the common keys; a point with a device has the rest checked by that driver's point model."""

    model_config = ConfigDict(extra="allow")
    name: Name
    device: Name | None = None
    writable: bool = False
    deadband: Annotated[float, Field(ge=0)] = 0.0


class NotifierEntry(BaseModel):
    """A [[notifiers]] entry: which alarm events go where; the rest belongs to the notifier kind's model."""

    model_config = ConfigDict(extra="allow")
    name: Name
    notifier: Name
    events: list[Literal[ALARM_EVENTS]] = ["raised"]  # type: ignore[valid-type]
    classes: list[str] = []  # alarm classes to send; empty: all


def entry_context(points: dict[str, bool]) -> dict[str, set[str]]:
    """The validation context of function entries, from point name -> writable: what entries may refer to."""
    return {"points": set(points), "writable": {name for name, writable in points.items() if writable}}


def known_point(point: str, info: ValidationInfo, writable: bool = False) -> str:
    """A function entry's point must be in [[points]] (and writable, if the entry drives it) when checked with a context."""
    context = info.context or {}
    if "points" in context and point not in context["points"]:
        raise ValueError(f"point {point!r} is not in [[points]]")
    if writable and "writable" in context and point not in context["writable"]:
        raise ValueError(f"point {point!r} is not writable (set writable = true on it)")
    return point


PointName = Annotated[Name, AfterValidator(known_point)]  # a function entry's point, checked against [[points]]
DrivenPoint = Annotated[Name, AfterValidator(lambda point, info: known_point(point, info, writable=True))]  # one it writes


class FunctionEntry(BaseModel):
    """A function's entry: a name; the rest belongs to the function's model."""

    model_config = ConfigDict(extra="allow")
    name: Name


SLICE = 1_000  # entries per validation call: each holds the GIL, and the Raft thread must get it between them


def _section(kind: str, model: type[BaseModel], entries: Any, problems: list[str]) -> list[Any]:
    """A section's entries validated `SLICE` at a time; problems name each entry by its index in the whole section."""
    if not isinstance(entries, list):
        problems.append(f"{kind}: must be a list of tables ([[{kind}]] entries), not {type(entries).__name__}")
        return []
    adapter = _ADAPTERS.setdefault(model, TypeAdapter(list[model]))
    valid: list[Any] = []
    for start in range(0, len(entries), SLICE):
        try:
            valid += adapter.validate_python(entries[start : start + SLICE])
        except ValidationError as exc:
            problems += [f"{_where(kind, (error['loc'][0] + start, *error['loc'][1:]))}: {error['msg']}" for error in exc.errors()]
    return valid


_ADAPTERS: dict[type[BaseModel], TypeAdapter] = {}


class Building(BaseModel):
    """The sections every building may have; a function's section is checked against the function's model."""

    model_config = ConfigDict(extra="forbid")
    devices: list[DeviceEntry] = []
    points: list[PointEntry] = []
    notifiers: list[NotifierEntry] = []


_BASE_ENTRIES: dict[str, type[BaseModel]] = {"devices": DeviceEntry, "points": PointEntry, "notifiers": NotifierEntry}


def _where(prefix: str, loc: tuple) -> str:
    text = prefix
    for item in loc:
        text += f"[{item}]" if isinstance(item, int) else (f".{item}" if text else str(item))
    return text or "(top level)"


def _problems(prefix: str, exc: ValidationError) -> list[str]:
    return [f"{_where(prefix, tuple(error['loc']))}: {error['msg']}" for error in exc.errors()]


def _specific(
    entry: BaseModel, model: type[BaseModel], where: str, problems: list[str], context: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Validate an entry's plugin-specific keys with the plugin's model; the normalised keys, or None."""
    try:
        return model.model_validate(entry.model_extra or {}, context=context).model_dump(mode="json", by_alias=True)
    except ValidationError as exc:
        problems.extend(_problems(where, exc))
        return None


def _duplicates(kind: str, entries: list[Any], problems: list[str]) -> None:
    first: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if entry.name in first:
            problems.append(f"{kind}[{index}].name: {entry.name!r} repeats {kind}[{first[entry.name]}]")
        first.setdefault(entry.name, index)


def building_kinds(plugins: PluginSet) -> tuple[str, ...]:
    """The sections a building file may have with these plugins loaded."""
    return BASE_KINDS + tuple(sorted(plugins.functions))


def validate_building(
    raw: Any, plugins: PluginSet, sections: tuple[str, ...] | None = None, image: ProcessImage | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """Check a building configuration; returns the documents {kind: {name: body}} of every section (a missing one is
    empty) or raises BuildingError. With `sections` (and the `image` to look the others up in), only those are checked
    and returned, and the devices and points they refer to are taken from the image as it is: an editor of the logic
    rules sends only [[logic]], however many points the building has."""
    kinds = sections or building_kinds(plugins)
    if not isinstance(raw, dict):
        raise BuildingError([f"(top level): a building is a table of sections ({', '.join(kinds)}), not {type(raw).__name__}"])
    unknown = sorted(set(raw) - set(kinds))
    if unknown:
        known = ", ".join(kinds)
        raise BuildingError([f"{kind}: no such section; {'this change has' if sections else 'a building has'} {known}" for kind in unknown])
    problems: list[str] = []
    building = Building.model_construct(**{kind: _section(kind, model, raw.get(kind, []), problems) for kind, model in _BASE_ENTRIES.items()})
    functions = {kind: _section(kind, FunctionEntry, raw.get(kind, []), problems) for kind in plugins.functions if kind in kinds}
    if problems:
        raise BuildingError(problems)
    for kind, entries in (("devices", building.devices), ("points", building.points), ("notifiers", building.notifiers), *functions.items()):
        _duplicates(kind, entries, problems)
    documents: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in kinds}
    drivers = plugins.drivers
    device_drivers: dict[str, DriverSpec | None] = {}
    if "devices" not in kinds and image is not None:
        device_drivers = {name: drivers.get(doc.body["driver"]) for name, doc in list(image.documents.get("devices", {}).items())}
    for index, device in enumerate(building.devices):
        spec = drivers.get(device.driver)
        if spec is None:
            known = ", ".join(sorted(drivers)) or "none"
            problems.append(f"devices[{index}].driver: no driver {device.driver!r} (loaded drivers: {known})")
            device_drivers[device.name] = None
            continue
        device_drivers[device.name] = spec
        specific = _specific(device, spec.device_model, f"devices[{index}]", problems)
        if specific is not None:
            documents["devices"][device.name] = {"driver": device.driver, **specific}
    for index, point in enumerate(building.points):
        common = {"device": point.device, "writable": point.writable, "deadband": point.deadband}
        if point.device is None:
            if point.model_extra:
                extra = ", ".join(sorted(point.model_extra))
                problems.append(f"points[{index}]: a virtual point (no device) takes no driver keys, got {extra}")
                continue
            documents["points"][point.name] = common
            continue
        if point.device not in device_drivers:
            problems.append(f"points[{index}].device: no device named {point.device!r} in [[devices]]")
            continue
        spec = device_drivers[point.device]
        if spec is None:
            continue  # the device's driver is not loaded: named at the device
        specific = _specific(point, spec.point_model, f"points[{index}]", problems)
        if specific is not None:
            documents["points"][point.name] = {**common, **specific}
    for index, notifier in enumerate(building.notifiers):
        notifier_spec = plugins.notifiers.get(notifier.notifier)
        if notifier_spec is None:
            known = ", ".join(sorted(plugins.notifiers)) or "none"
            problems.append(f"notifiers[{index}].notifier: no notifier {notifier.notifier!r} (loaded notifiers: {known})")
            continue
        specific = _specific(notifier, notifier_spec.model, f"notifiers[{index}]", problems)
        if specific is not None:
            documents["notifiers"][notifier.name] = {"notifier": notifier.notifier, "events": notifier.events, "classes": notifier.classes, **specific}
    if "points" in kinds or image is None:
        context = entry_context({point.name: point.writable for point in building.points})
    else:
        context = entry_context({name: bool(doc.body.get("writable")) for name, doc in list(image.documents.get("points", {}).items())})
    for kind, entries in functions.items():
        model = plugins.functions[kind].model
        for index, entry in enumerate(entries):
            specific = _specific(entry, model, f"{kind}[{index}]", problems, context)
            if specific is not None:
                documents[kind][entry.name] = specific
    release_later(building.devices, building.points, building.notifiers, *functions.values())  # a model per entry: many
    if problems:
        raise BuildingError(problems)
    return documents


def plan(image: ProcessImage, documents: dict[str, dict[str, dict[str, Any]]], user: str) -> list[StageDocuments | ApplyDocuments]:
    """The log entries that turn the image's building into `documents` (kinds it does not name are left alone); [] when
    nothing changes. A big change is staged in bounded parts (cluster.commands.in_parts) and made visible by the last one.
    Each document change expects the version it was planned from, so a document changed before the change commits makes
    the whole change rejected rather than undone."""
    ts = time.time()
    changes: list[PutDocument | DeleteDocument] = []
    for kind in documents:
        current = dict(image.documents.get(kind, {}))  # a copy: the Raft thread may apply a command meanwhile
        for name, body in documents[kind].items():
            if name not in current or current[name].body != body:
                changes.append(PutDocument(kind, name, body, user, ts, current[name].version if name in current else 0))
        changes += [DeleteDocument(kind, name, user, ts, current[name].version) for name in current if name not in documents[kind]]
    return in_parts(changes, uuid.uuid4().hex[:16]) if changes else []


def revision(image: ProcessImage, plugins: PluginSet) -> str:
    """A short fingerprint of the building: it changes with every configuration change (the ETag of GET /api/v1/config,
    checked against If-Match on POST so that an editor does not undo what it did not see). Built from the image's
    generation of each building kind, so it costs nothing at any size."""
    generations = [(kind, image.generations.get(kind, 0)) for kind in building_kinds(plugins)]
    return hashlib.sha256(repr(generations).encode()).hexdigest()[:20]


def export(image: ProcessImage, plugins: PluginSet, sections: tuple[str, ...] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The building (or only its `sections`) as it would be written in a TOML file (what `tandem config export` prints)."""
    building: dict[str, list[dict[str, Any]]] = {}
    for kind in sections or building_kinds(plugins):
        entries = []
        for name, document in sorted_in_runs(list(image.documents.get(kind, {}).items()), key=itemgetter(0)):
            entries.append({"name": name, **{key: value for key, value in document.body.items() if value is not None}})
        building[kind] = entries
    return building
