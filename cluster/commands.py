"""Replicated commands: immutable, validated on construction, stamped with wall time by the active."""

import math
import pickle
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple, TypeAlias

from .names import MAX_NAME_LENGTH, name_problem

Scalar: TypeAlias = bool | int | float | str | None

QUALITIES = ("good", "uncertain", "bad", "comm-failure", "config-error")
UNAVAILABLE = frozenset({"bad", "comm-failure", "config-error"})  # qualities whose value must not be used
DOCUMENT_KINDS = ("devices", "points", "alarms", "notifiers", "schedules", "trends", "logic", "users", "plugins")
MAX_BODY_DEPTH = 32

_QUALITY_SET = frozenset(QUALITIES)
_KIND_SET = frozenset(DOCUMENT_KINDS)
_SCALAR_TYPES = frozenset({bool, int, float, str, type(None)})


class CommandError(ValueError):
    """A command field holds an invalid value; `field` names it (e.g. "updates[3].quality")."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


class PointUpdate(NamedTuple):
    """One field value reported by a driver."""

    name: str
    value: Scalar
    quality: str
    ts: float
    source: str


def _check_name(field: str, value: object) -> None:
    problem = name_problem(value)
    if problem is not None:
        raise CommandError(field, problem)


def _check_ts(field: str, value: object) -> None:
    if type(value) is not float or not math.isfinite(value):
        raise CommandError(field, f"must be a finite float (seconds since the epoch), got {value!r}")


def scalar_problem(value: object) -> str | None:
    """Why `value` cannot be a point's value, or None: bool, int, a finite float, str or None."""
    if type(value) not in _SCALAR_TYPES:
        return f"must be bool, int, float, str or None, got {type(value).__name__}"
    if type(value) is float and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    return None


def _check_scalar(field: str, value: object) -> None:
    problem = scalar_problem(value)
    if problem is not None:
        raise CommandError(field, problem)


def _check_quality(field: str, value: object) -> None:
    if type(value) is not str or value not in _QUALITY_SET:
        raise CommandError(field, f"must be one of {', '.join(QUALITIES)}; got {value!r}")


def _check_source(field: str, value: object) -> None:
    if type(value) is not str or not value:
        raise CommandError(field, f"must be a non-empty str, got {value!r}")


def _check_kind(field: str, value: object) -> None:
    """Document kinds: the built-in ones or a plugin function's name (1..MAX_NAME_LENGTH letters, digits, - and _)."""
    if type(value) is not str or not (value in _KIND_SET or (0 < len(value) <= MAX_NAME_LENGTH and value.replace("-", "_").isidentifier())):
        raise CommandError(field, f"must be one of {', '.join(DOCUMENT_KINDS)} or a function's name; got {value!r}")


def _check_version(field: str, value: object) -> None:
    if value is not None and (type(value) is not int or value < 0):
        raise CommandError(field, f"must be None or a non-negative int, got {value!r}")


def check_update(update: object) -> None:
    """Raise CommandError (its field relative to the update, e.g. ".quality") unless `update` is a valid PointUpdate."""
    if type(update) is not PointUpdate:
        raise CommandError("", f"must be a PointUpdate, got {type(update).__name__}")
    _check_name(".name", update.name)
    _check_scalar(".value", update.value)
    _check_quality(".quality", update.quality)
    _check_ts(".ts", update.ts)
    _check_source(".source", update.source)


def _json_copy(field: str, value: object, depth: int = 0) -> object:
    """Return a deep copy of `value`, which must be JSON data (str keys, finite floats, no tuples)."""
    kind = type(value)
    if kind is dict or kind is list:
        if depth >= MAX_BODY_DEPTH:
            raise CommandError(field, f"is nested deeper than {MAX_BODY_DEPTH} levels")
        if kind is list:
            return [_json_copy(f"{field}[{i}]", item, depth + 1) for i, item in enumerate(value)]
        copy = {}
        for key, item in value.items():
            if type(key) is not str:
                raise CommandError(field, f"must have str keys, got {type(key).__name__} key {key!r}")
            copy[key] = _json_copy(f"{field}[{key!r}]", item, depth + 1)
        return copy
    if kind is float and not math.isfinite(value):
        raise CommandError(field, f"must be a finite number (JSON has no {value!r})")
    if kind not in _SCALAR_TYPES:
        expected = "dict, list, str, int, float, bool or None"
        raise CommandError(field, f"must be JSON data ({expected}), got {kind.__name__}")
    return value


@dataclass(frozen=True, slots=True)
class UpdatePoints:
    """A batch of driver values; the last update of a name wins. `ts` is derived: the newest update stamp."""

    updates: tuple[PointUpdate, ...]
    ts: float = field(init=False)

    def __post_init__(self) -> None:
        if type(self.updates) is not tuple or not self.updates:
            raise CommandError("updates", "must be a non-empty tuple of PointUpdate")
        for index, update in enumerate(self.updates):
            try:
                check_update(update)
            except CommandError as exc:
                raise CommandError(f"updates[{index}]{exc.field}", exc.problem) from None
        object.__setattr__(self, "ts", max(update.ts for update in self.updates))

    def __reduce__(self) -> tuple:
        # On the wire the updates are five columns of plain values: pickling NamedTuples costs
        # ~1 us per update (Python-level __getnewargs__ and __new__), more than applying them, and
        # rows would allocate a tuple per update on both ends, feeding the garbage collector.
        return _unpickle_update_points, (tuple(zip(*self.updates)), self.ts)


_new_point_update = partial(tuple.__new__, PointUpdate)


def _unpickle_update_points(columns: tuple[tuple, ...], ts: float) -> UpdatePoints:
    """Rebuild a pickled UpdatePoints without validating again: it was validated where it was built."""
    cmd = object.__new__(UpdatePoints)
    object.__setattr__(cmd, "updates", tuple(map(_new_point_update, zip(*columns))))
    object.__setattr__(cmd, "ts", ts)
    return cmd


@dataclass(frozen=True, slots=True)
class WritePoint:
    """An operator write, audited. A virtual point takes the value at once (quality "good", source "user:<user>");
    a device point gets it as desired state, which the active drives to the device (see WriteOutcome)."""

    name: str
    value: Scalar
    user: str
    ts: float

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        _check_scalar("value", self.value)
        _check_name("user", self.user)
        _check_ts("ts", self.ts)


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """The active drove desired write `seq` to the device: the value read back, or the error that stopped it."""

    name: str
    seq: int
    value: Scalar
    error: str | None
    source: str
    ts: float

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        if type(self.seq) is not int or self.seq < 1:
            raise CommandError("seq", f"must be a positive int, got {self.seq!r}")
        _check_scalar("value", self.value)
        if self.error is not None and (type(self.error) is not str or not self.error):
            raise CommandError("error", f"must be None or a non-empty str, got {self.error!r}")
        _check_source("source", self.source)
        _check_ts("ts", self.ts)


@dataclass(frozen=True, slots=True)
class PutDocument:
    """Create or replace a configuration document; `body` is replaced by a validated private deep copy."""

    kind: str
    name: str
    body: dict
    user: str
    ts: float
    expected_version: int | None = None

    def __post_init__(self) -> None:
        _check_kind("kind", self.kind)
        _check_name("name", self.name)
        if type(self.body) is not dict:
            raise CommandError("body", f"must be a dict, got {type(self.body).__name__}")
        object.__setattr__(self, "body", _json_copy("body", self.body))
        _check_name("user", self.user)
        _check_ts("ts", self.ts)
        _check_version("expected_version", self.expected_version)


@dataclass(frozen=True, slots=True)
class DeleteDocument:
    """Delete a configuration document."""

    kind: str
    name: str
    user: str
    ts: float
    expected_version: int | None = None

    def __post_init__(self) -> None:
        _check_kind("kind", self.kind)
        _check_name("name", self.name)
        _check_name("user", self.user)
        _check_ts("ts", self.ts)
        _check_version("expected_version", self.expected_version)


MAX_PART_DOCUMENTS = 500  # document changes per log entry: a bigger configuration change is staged in parts
MAX_PART_BYTES = 256 * 2**10  # pickled document bodies per log entry (a part ends at whichever bound comes first)


def _check_changes(changes: object) -> None:
    """A non-empty tuple of at most MAX_PART_DOCUMENTS PutDocument or DeleteDocument, each (kind, name) once."""
    if type(changes) is not tuple or not changes:
        raise CommandError("changes", "must be a non-empty tuple of PutDocument or DeleteDocument")
    if len(changes) > MAX_PART_DOCUMENTS:
        raise CommandError("changes", f"holds {len(changes)} documents; a log entry takes at most {MAX_PART_DOCUMENTS} (stage the rest)")
    seen: set[tuple[str, str]] = set()
    for index, change in enumerate(changes):
        if type(change) not in (PutDocument, DeleteDocument):
            raise CommandError(f"changes[{index}]", f"must be a PutDocument or DeleteDocument, got {type(change).__name__}")
        if (change.kind, change.name) in seen:
            raise CommandError(f"changes[{index}]", f"changes {change.kind}/{change.name} a second time")
        seen.add((change.kind, change.name))


@dataclass(frozen=True, slots=True)
class StageDocuments:
    """Part `part` (1, 2, ...) of the configuration change `change`: kept aside, invisible, until the ApplyDocuments that
    names the change makes all its parts visible at once. Part 1 starts the change."""

    change: str
    part: int
    changes: tuple[PutDocument | DeleteDocument, ...]
    ts: float = field(init=False)

    def __post_init__(self) -> None:
        _check_name("change", self.change)
        if type(self.part) is not int or self.part < 1:
            raise CommandError("part", f"must be a positive int, got {self.part!r}")
        _check_changes(self.changes)
        object.__setattr__(self, "ts", max(change.ts for change in self.changes))


@dataclass(frozen=True, slots=True)
class ApplyDocuments:
    """Document puts and deletes committed as one: all apply, or none does (the first conflict is the result). With
    `staged = (change, parts)` they are the last part of a staged change, and the whole change becomes visible at once,
    unless a document of a kind it changes was changed by anything else since its part 1."""

    changes: tuple[PutDocument | DeleteDocument, ...]
    ts: float = field(init=False)
    staged: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        _check_changes(self.changes)
        if self.staged is not None:
            if type(self.staged) is not tuple or len(self.staged) != 2 or type(self.staged[1]) is not int or self.staged[1] < 1:
                raise CommandError("staged", f"must be None or (change, parts staged), got {self.staged!r}")
            _check_name("staged[0]", self.staged[0])
        object.__setattr__(self, "ts", max(change.ts for change in self.changes))


@dataclass(frozen=True, slots=True)
class Step:
    """One atomic step of a BMS function (alarms, schedules, logic, ...) decided on the active: compare-and-set changes
    to the function's replicated state, entries for its journal and point writes, applied all or none.

    `changes` are (key, the value the active read or None if absent, the new value or None to delete); a step whose
    expectations no longer hold (a newer step came first) is rejected whole, so it never takes effect twice. `user`
    names the operator behind the step (audited) or is None for the function's own decisions. Journal entries stamped
    before `keep_since` are dropped (retention)."""

    function: str
    user: str | None
    ts: float
    changes: tuple[tuple[str, object, object], ...] = ()
    journal: tuple[dict, ...] = ()
    writes: tuple[tuple[str, Scalar], ...] = ()
    keep_since: float | None = None

    def __post_init__(self) -> None:
        _check_name("function", self.function)
        if self.user is not None:
            _check_name("user", self.user)
        _check_ts("ts", self.ts)
        if type(self.changes) is not tuple or type(self.journal) is not tuple or type(self.writes) is not tuple:
            raise CommandError("changes", "changes, journal and writes must be tuples")
        changes = []
        for index, change in enumerate(self.changes):
            if type(change) is not tuple or len(change) != 3:
                raise CommandError(f"changes[{index}]", f"must be a (key, expected, new) tuple, got {change!r}")
            _check_name(f"changes[{index}].key", change[0])
            changes.append((change[0], _json_copy(f"changes[{index}].expected", change[1]), _json_copy(f"changes[{index}].new", change[2])))
        if len({key for key, _, _ in changes}) != len(changes):
            raise CommandError("changes", "name a key at most once")
        journal = []
        for index, entry in enumerate(self.journal):
            if type(entry) is not dict:
                raise CommandError(f"journal[{index}]", f"must be a dict, got {type(entry).__name__}")
            journal.append(_json_copy(f"journal[{index}]", entry))
        for index, write in enumerate(self.writes):
            if type(write) is not tuple or len(write) != 2:
                raise CommandError(f"writes[{index}]", f"must be a (point, value) tuple, got {write!r}")
            _check_name(f"writes[{index}].point", write[0])
            _check_scalar(f"writes[{index}].value", write[1])
        if self.keep_since is not None:
            _check_ts("keep_since", self.keep_since)
        object.__setattr__(self, "changes", tuple(changes))
        object.__setattr__(self, "journal", tuple(journal))


@dataclass(frozen=True, slots=True)
class Activate:
    """The activation record: `node` became active in Raft term `term`; `gap` is the seconds it measured from its last
    contact with the previous leader to its own election (None at a cold start or when it was that leader)."""

    node: str
    term: int
    ts: float
    gap: float | None = None

    def __post_init__(self) -> None:
        _check_name("node", self.node)
        if type(self.term) is not int or self.term < 0:
            raise CommandError("term", f"must be a non-negative int, got {self.term!r}")
        _check_ts("ts", self.ts)
        if self.gap is not None and (type(self.gap) is not float or not 0 <= self.gap < 1e6):
            raise CommandError("gap", f"must be None or seconds as a float from 0, got {self.gap!r}")


@dataclass(frozen=True, slots=True)
class DiscardStaged:
    """Drop the staged parts of configuration change `change`: its apply failed or was abandoned."""

    change: str
    ts: float

    def __post_init__(self) -> None:
        _check_name("change", self.change)
        _check_ts("ts", self.ts)


def in_parts(changes: list[PutDocument | DeleteDocument], change: str) -> list[StageDocuments | ApplyDocuments]:
    """Bounded log entries for a configuration change: one ApplyDocuments when it fits, else StageDocuments parts under
    the id `change` and an ApplyDocuments of the last part that makes them all visible at once."""
    parts: list[list[PutDocument | DeleteDocument]] = [[]]
    size = 0
    for item in changes:
        weight = len(pickle.dumps(item.body, protocol=5)) if type(item) is PutDocument else 0
        if parts[-1] and (len(parts[-1]) == MAX_PART_DOCUMENTS or size + weight > MAX_PART_BYTES):
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += weight
    if len(parts) == 1:
        return [ApplyDocuments(tuple(parts[0]))]
    staged = [StageDocuments(change, number, tuple(part)) for number, part in enumerate(parts[:-1], start=1)]
    return [*staged, ApplyDocuments(tuple(parts[-1]), staged=(change, len(staged)))]


Command: TypeAlias = UpdatePoints | WritePoint | WriteOutcome | PutDocument | DeleteDocument | StageDocuments | ApplyDocuments | DiscardStaged | Step | Activate
