"""The building configuration (devices, points, notifiers and the functions' entries) as replicated documents: validate
an import against the loaded plugins, plan it, export it."""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo

from cluster.commands import ApplyDocuments, DeleteDocument, PutDocument
from cluster.state import ProcessImage

from .types import DriverSpec

if TYPE_CHECKING:
    from .manager import PluginSet

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}$")]
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


_FUNCTION_ENTRIES = TypeAdapter(list[FunctionEntry])


class Building(BaseModel):
    """The sections every building may have; a function's section is checked against the function's model."""

    model_config = ConfigDict(extra="forbid")
    devices: list[DeviceEntry] = []
    points: list[PointEntry] = []
    notifiers: list[NotifierEntry] = []


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


def validate_building(raw: Any, plugins: PluginSet) -> dict[str, dict[str, dict[str, Any]]]:
    """Check a building configuration; returns the documents {kind: {name: body}} or raises BuildingError."""
    unknown = sorted(set(raw) - set(building_kinds(plugins))) if isinstance(raw, dict) else []
    if unknown:
        known = ", ".join(building_kinds(plugins))
        raise BuildingError([f"{kind}: no such section; a building has {known}" for kind in unknown])
    try:
        building = Building.model_validate({kind: raw[kind] for kind in BASE_KINDS if kind in raw} if isinstance(raw, dict) else raw)
    except ValidationError as exc:
        raise BuildingError(_problems("", exc)) from None
    problems: list[str] = []
    functions: dict[str, list[FunctionEntry]] = {}
    for kind in plugins.functions:
        try:
            functions[kind] = _FUNCTION_ENTRIES.validate_python(raw.get(kind, []))
        except ValidationError as exc:
            problems += _problems(kind, exc)
    for kind, entries in (("devices", building.devices), ("points", building.points), ("notifiers", building.notifiers), *functions.items()):
        _duplicates(kind, entries, problems)
    documents: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in building_kinds(plugins)}
    drivers = plugins.drivers
    device_drivers: dict[str, DriverSpec] = {}
    for index, device in enumerate(building.devices):
        spec = drivers.get(device.driver)
        if spec is None:
            known = ", ".join(sorted(drivers)) or "none"
            problems.append(f"devices[{index}].driver: no driver {device.driver!r} (loaded drivers: {known})")
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
        spec = device_drivers.get(point.device)
        if spec is None:
            if not any(device.name == point.device for device in building.devices):
                problems.append(f"points[{index}].device: no device named {point.device!r} in [[devices]]")
            continue
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
    context = entry_context({point.name: point.writable for point in building.points})
    for kind, entries in functions.items():
        model = plugins.functions[kind].model
        for index, entry in enumerate(entries):
            specific = _specific(entry, model, f"{kind}[{index}]", problems, context)
            if specific is not None:
                documents[kind][entry.name] = specific
    if problems:
        raise BuildingError(problems)
    return documents


def plan(image: ProcessImage, documents: dict[str, dict[str, dict[str, Any]]], user: str) -> ApplyDocuments | None:
    """The one command that turns the image's building into `documents` (kinds it does not name are left alone); None
    when nothing changes. Each change expects the version it was planned from, so a document changed before the command
    commits makes the whole command rejected rather than undone."""
    ts = time.time()
    changes: list[PutDocument | DeleteDocument] = []
    for kind in documents:
        current = image.documents.get(kind, {})
        for name, body in documents[kind].items():
            if name not in current or current[name].body != body:
                changes.append(PutDocument(kind, name, body, user, ts, current[name].version if name in current else 0))
        changes += [DeleteDocument(kind, name, user, ts, current[name].version) for name in current if name not in documents[kind]]
    return ApplyDocuments(tuple(changes)) if changes else None


def revision(image: ProcessImage, plugins: PluginSet) -> str:
    """A short fingerprint of the building's document versions: it changes with every configuration change (the ETag of
    GET /api/v1/config, checked against If-Match on POST so that an editor does not undo what it did not see)."""
    versions = sorted((kind, name, document.version) for kind in building_kinds(plugins) for name, document in image.documents.get(kind, {}).items())
    return hashlib.sha256(repr(versions).encode()).hexdigest()[:20]


def export(image: ProcessImage, plugins: PluginSet) -> dict[str, list[dict[str, Any]]]:
    """The building as it would be written in a TOML file (what `tandem config export` prints)."""
    building: dict[str, list[dict[str, Any]]] = {}
    for kind in building_kinds(plugins):
        entries = []
        for name, document in sorted(image.documents.get(kind, {}).items()):
            entries.append({"name": name, **{key: value for key, value in document.body.items() if value is not None}})
        building[kind] = entries
    return building
