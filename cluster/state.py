"""The process image: the deterministic state machine every server applies the replicated log to."""

import collections
import gc
import io
import pickle
import sys
from collections.abc import Callable
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple

from cluster.commands import (
    DOCUMENT_KINDS,
    QUALITIES,
    Activate,
    ApplyDocuments,
    Command,
    DeleteDocument,
    DiscardStaged,
    PutDocument,
    Scalar,
    StageDocuments,
    Step,
    UpdatePoints,
    WriteOutcome,
    WritePoint,
)

# A snapshot is _MAGIC, one format-version byte, then a pickle (protocol 5) of plain data only:
# no class references, so decoding cannot run code and does not depend on Python class names.
_MAGIC = b"TNDM-IMAGE"
_FORMAT_VERSION = 5
_READABLE_VERSIONS = (2, 3, 4, 5)  # 2 had no function state or journals; 2 and 3 kept the last activation only; 5 added staging
STAGE_IDLE = 60.0  # seconds after its last part that a staged change may be replaced by another one
_QUALITY_CODES = {quality: code for code, quality in enumerate(QUALITIES)}


class PointValue(NamedTuple):
    value: Scalar
    quality: str
    ts: float
    source: str


def moved(old: Scalar, new: Scalar, deadband: float) -> bool:
    """Whether `new` is a change from `old` that counts (a driver reports it, a change trend records it): numbers by
    more than the deadband, or by anything when it is 0; any other value when it differs."""
    if type(old) in (int, float) and type(new) in (int, float):
        return abs(new - old) > deadband if deadband > 0 else new != old  # type: ignore[operator]
    return new != old


# A PointUpdate is (name, *PointValue): building from its tail with tuple.__new__ skips the
# Python-level NamedTuple __new__, a third of the cost of applying an update.
_new_point_value = partial(tuple.__new__, PointValue)


class Document(NamedTuple):
    version: int
    body: dict
    updated_by: str
    updated_ts: float


class AuditEntry(NamedTuple):
    seq: int
    ts: float
    user: str
    action: str
    target: str
    detail: str


class DesiredWrite(NamedTuple):
    """An operator write to a device point, committed but not yet confirmed by a read-back."""

    value: Scalar
    user: str
    ts: float
    seq: int
    error: str | None  # why the last attempt failed; None while untried


class JournalEntry(NamedTuple):
    """One entry of a BMS function's journal (e.g. an alarm transition), numbered per function."""

    seq: int
    ts: float
    entry: dict


class Activation(NamedTuple):
    """`node` became active in `term` at `since`, after `previous` (None at a cold start); `gap` as in `Activate`."""

    node: str
    term: int
    since: float
    previous: str | None = None
    gap: float | None = None


class Rejected(NamedTuple):
    """A deterministic refusal, returned (not raised) by `ProcessImage.apply`."""

    reason: str


class Staging:
    """A configuration change being staged in parts: the changes so far, applied to copies of the kinds they touch (made
    visible by a swap, in one step of bounded cost), and the kinds' generations when part 1 applied."""

    def __init__(self, change: str, user: str, since: float, generations: dict[str, int]) -> None:
        self.change = change
        self.user = user
        self.since = since
        self.last = since
        self.parts = 0
        self.generations = generations
        self.shadow: dict[str, dict[str, Document]] = {}
        self.changes: list[PutDocument | DeleteDocument] = []  # in order: what a snapshot holds of it


class UnknownCommand(TypeError):
    """`ProcessImage.apply` was given an object that is not a known command."""


class Frozen(NamedTuple):
    """A consistent copy of a `ProcessImage`, safe to encode in another thread."""

    points: dict[str, PointValue]
    documents: dict[str, dict[str, Document]]
    audit: tuple[AuditEntry, ...]
    activations: tuple[Activation, ...]
    last_ts: float
    applied: int
    desired: dict[str, DesiredWrite]
    write_seq: int
    functions: dict[str, dict[str, object]]
    journals: dict[str, tuple[JournalEntry, ...]]
    journal_seq: dict[str, int]
    generations: dict[str, int]
    staging: tuple | None  # (change, user, since, last, parts, generations, changes) as plain data


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refers to {module}.{name}; a snapshot holds plain data only")


class ProcessImage:
    """Point values, configuration documents, desired writes, BMS function state and journals, the audit trail and the
    activation record.

    `apply` is deterministic: no clock, no I/O, no randomness; time comes from the command stamps.
    Stored values are immutable tuples; document bodies are never mutated in place (each
    PutDocument carries a private deep copy made when it was built, which the image takes over).
    Readers must not mutate what they get from the image.
    """

    AUDIT_RETENTION = 10_000
    ACTIVATION_RETENTION = 100  # the failover history: the last activations
    JOURNAL_RETENTION = 100_000  # entries per function journal, whatever a function's own retention

    def __init__(self) -> None:
        self.points: dict[str, PointValue] = {}
        self.documents: dict[str, dict[str, Document]] = {kind: {} for kind in DOCUMENT_KINDS}
        self.audit: collections.deque[AuditEntry] = collections.deque(maxlen=self.AUDIT_RETENTION)
        self.activations: collections.deque[Activation] = collections.deque(maxlen=self.ACTIVATION_RETENTION)
        self.desired: dict[str, DesiredWrite] = {}
        self.write_seq = 0
        self.functions: dict[str, dict[str, object]] = {}  # function -> key -> JSON value
        self.journals: dict[str, collections.deque[JournalEntry]] = {}
        self.journal_seq: dict[str, int] = {}  # function -> seq of its last journal entry (kept when entries expire)
        self.generations: dict[str, int] = {}  # document kind -> how many commands changed its documents
        self.staging: Staging | None = None
        self.kinds_changed: set[str] = set()  # the document kinds the last applied command changed
        self.last_ts = 0.0
        self.applied = 0

    def point(self, name: str) -> PointValue | None:
        return self.points.get(name)

    def apply(self, cmd: Command) -> object:
        """Apply one committed command; return None, a new document version, or `Rejected`."""
        handler = _HANDLERS.get(type(cmd))
        if handler is None:
            raise UnknownCommand(f"not a replicated command: {type(cmd).__module__}.{type(cmd).__qualname__}")
        self.kinds_changed = set()
        result = handler(self, cmd)
        self.last_ts = max(self.last_ts, cmd.ts)
        self.applied += 1
        return result

    def _update_points(self, cmd: UpdatePoints) -> None:
        points = self.points
        for update in cmd.updates:
            points[update[0]] = _new_point_value(update[1:])

    def _write_point(self, cmd: WritePoint) -> int | Rejected | None:
        """A virtual point takes the value (None); a device point records it as desired (its write sequence)."""
        refusal = self._write_refusal(cmd.name)
        if refusal is not None:
            return refusal
        self._audit(cmd.ts, cmd.user, "write", cmd.name, repr(cmd.value))
        return self._write(cmd.name, cmd.value, cmd.user, cmd.ts)

    def _write_refusal(self, name: str) -> Rejected | None:
        doc = self.documents["points"].get(name)
        if doc is not None and not doc.body.get("writable", False):
            return Rejected(f"point {name} is not writable")
        return None

    def _write(self, name: str, value: Scalar, user: str, ts: float) -> int | None:
        doc = self.documents["points"].get(name)
        if doc is None or doc.body.get("device") is None:
            self.points[name] = PointValue(value, "good", ts, f"user:{user}")
            return None
        self.write_seq += 1
        self.desired[name] = DesiredWrite(value, user, ts, self.write_seq, None)
        return self.write_seq

    def _write_outcome(self, cmd: WriteOutcome) -> None:
        current = self.desired.get(cmd.name)
        pending = current is not None and current.seq == cmd.seq  # a newer write stays desired
        if cmd.error is None:
            self.points[cmd.name] = PointValue(cmd.value, "good", cmd.ts, cmd.source)
            if pending:
                del self.desired[cmd.name]
            self._audit(cmd.ts, cmd.source, "written", cmd.name, f"write {cmd.seq} read back {cmd.value!r}")
        else:
            if pending:
                self.desired[cmd.name] = current._replace(error=cmd.error)
            self._audit(cmd.ts, cmd.source, "write-failed", cmd.name, f"write {cmd.seq}: {cmd.error}")

    def _refusal(self, cmd: PutDocument | DeleteDocument, docs: dict[str, Document] | None = None) -> Rejected | None:
        """Why a document change cannot apply now to `docs` (default: the kind's visible documents), or None."""
        current = (self.documents.get(cmd.kind, {}) if docs is None else docs).get(cmd.name)
        if current is None and type(cmd) is DeleteDocument:
            return Rejected(f"not found: {cmd.kind}/{cmd.name}")
        version = current.version if current else 0
        if cmd.expected_version is not None and cmd.expected_version != version:
            return _conflict(cmd.kind, cmd.name, version, cmd.expected_version)
        return None

    def _changed(self, kind: str) -> None:
        self.generations[kind] = self.generations.get(kind, 0) + 1
        self.kinds_changed.add(kind)

    def _put_document(self, cmd: PutDocument) -> int | Rejected:
        refusal = self._refusal(cmd)
        if refusal is not None:
            return refusal
        version = _put(self.documents.setdefault(cmd.kind, {}), cmd)  # a plugin function's kind appears with its first document
        self._changed(cmd.kind)
        self._audit(cmd.ts, cmd.user, "put", f"{cmd.kind}/{cmd.name}", f"version {version}")
        return version

    def _delete_document(self, cmd: DeleteDocument) -> Rejected | None:
        refusal = self._refusal(cmd)
        if refusal is not None:
            return refusal
        current = self.documents[cmd.kind].pop(cmd.name)
        self._changed(cmd.kind)
        self._audit(cmd.ts, cmd.user, "delete", f"{cmd.kind}/{cmd.name}", f"version {current.version}")
        return None

    def _apply_documents(self, cmd: ApplyDocuments) -> tuple[int | None, ...] | int | Rejected:
        """Apply the changes now (their versions), or as the last part of a staged change: then every part becomes visible
        at once (the number of documents changed), audited per kind."""
        if cmd.staged is None:
            for change in cmd.changes:  # each (kind, name) appears once, so checking up front is exact
                refusal = self._refusal(change)
                if refusal is not None:
                    return refusal
            return tuple(_HANDLERS[type(change)](self, change) for change in cmd.changes)
        change, parts = cmd.staged
        staging = self.staging
        if staging is None or staging.change != change or staging.parts != parts:
            return Rejected(f"configuration change {change} is not staged with {parts} part(s) (replaced or discarded)")
        refusal = self._stage(staging, cmd.changes)
        self.staging = None
        if refusal is not None:
            return refusal
        moved = sorted(kind for kind in staging.shadow if self.generations.get(kind, 0) != staging.generations.get(kind, 0))
        if moved:
            return Rejected(f"{', '.join(moved)} changed while configuration change {change} was staged")
        counts: dict[str, list[int]] = {}
        for staged in staging.changes:
            counts.setdefault(staged.kind, [0, 0])[type(staged) is DeleteDocument] += 1
        for kind, documents in staging.shadow.items():
            self.documents[kind] = documents
            self._changed(kind)
            puts, deletes = counts[kind]
            self._audit(cmd.ts, staging.user, "apply", kind, f"{puts} put, {deletes} deleted (change {change}, {parts + 1} parts)")
        return len(staging.changes)

    def _stage_documents(self, cmd: StageDocuments) -> int | Rejected:
        """Keep a part of a configuration change aside (invisible); part 1 starts the change. Returns the parts so far."""
        staging = self.staging
        if cmd.part == 1:
            if staging is not None and staging.change != cmd.change and cmd.ts - staging.last < STAGE_IDLE:
                return Rejected(f"configuration change {staging.change} by {staging.user} is being applied; try again when it is done")
            user = cmd.changes[0].user
            self.staging = staging = Staging(cmd.change, user, cmd.ts, dict(self.generations))
        elif staging is None or staging.change != cmd.change or staging.parts != cmd.part - 1:
            return Rejected(f"part {cmd.part} of configuration change {cmd.change} does not follow a staged part {cmd.part - 1}")
        refusal = self._stage(staging, cmd.changes)
        if refusal is not None:
            self.staging = None
            return refusal
        staging.parts = cmd.part
        staging.last = cmd.ts
        return staging.parts

    def _discard_staged(self, cmd: DiscardStaged) -> None:
        if self.staging is not None and self.staging.change == cmd.change:
            self.staging = None

    def _stage(self, staging: Staging, changes: tuple[PutDocument | DeleteDocument, ...]) -> Rejected | None:
        """Apply `changes` to the staging's copies of their kinds (all, or none if one is refused)."""
        for change in changes:
            if change.kind not in staging.shadow:
                staging.shadow[change.kind] = dict(self.documents.get(change.kind, {}))
            refusal = self._refusal(change, staging.shadow[change.kind])
            if refusal is not None:
                return refusal
        for change in changes:
            docs = staging.shadow[change.kind]
            if type(change) is PutDocument:
                _put(docs, change)
            else:
                del docs[change.name]
        staging.changes.extend(changes)
        return None

    def _step(self, cmd: Step) -> tuple[int | None, ...] | Rejected:
        """Apply a BMS function's step whole, or reject it whole; the result holds the write sequences of its writes."""
        state = self.functions.get(cmd.function, {})
        for key, expected, _ in cmd.changes:
            if state.get(key) != expected:
                return Rejected(f"stale step: {cmd.function}/{key} changed since the step was decided")
        for point, _ in cmd.writes:
            refusal = self._write_refusal(point)
            if refusal is not None:
                return refusal
        state = self.functions.setdefault(cmd.function, {})
        for key, _, new in cmd.changes:
            if new is None:
                state.pop(key, None)
            else:
                state[key] = new
        if not state:
            del self.functions[cmd.function]
        journal = self.journals.get(cmd.function)
        if cmd.journal:
            journal = self.journals.setdefault(cmd.function, collections.deque(maxlen=self.JOURNAL_RETENTION))
            seq = self.journal_seq.get(cmd.function, 0)
            journal.extend(JournalEntry(seq + i, cmd.ts, entry) for i, entry in enumerate(cmd.journal, start=1))
            self.journal_seq[cmd.function] = seq + len(cmd.journal)
        if journal is not None and cmd.keep_since is not None:
            while journal and journal[0].ts < cmd.keep_since:
                journal.popleft()
        user = cmd.user or cmd.function
        if cmd.user is not None:
            events = ", ".join(str(entry.get("event", "")) for entry in cmd.journal)
            self._audit(cmd.ts, cmd.user, cmd.function, ", ".join(key for key, _, _ in cmd.changes), events)
        return tuple(self._write(point, value, user, cmd.ts) for point, value in cmd.writes)

    def _activate(self, cmd: Activate) -> Rejected | None:
        if self.activation is not None and self.activation.term > cmd.term:
            return Rejected(
                f"stale activation: {cmd.node} in term {cmd.term}, "
                f"but {self.activation.node} is active in term {self.activation.term}"
            )
        previous = self.activation.node if self.activation is not None else None
        self.activations.append(Activation(cmd.node, cmd.term, cmd.ts, previous, cmd.gap))
        self.staging = None  # a change being staged belonged to a request to the previous active
        return None

    @property
    def activation(self) -> Activation | None:
        """The activation record: the newest activation, or None before the first."""
        return self.activations[-1] if self.activations else None

    def _audit(self, ts: float, user: str, action: str, target: str, detail: str) -> None:
        seq = self.audit[-1].seq + 1 if self.audit else 1
        self.audit.append(AuditEntry(seq, ts, user, action, target, detail))

    def freeze(self) -> Frozen:
        """Return a consistent copy in O(number of entries) shallow copying; call it in the apply thread."""
        return Frozen(
            dict(self.points),
            {kind: dict(docs) for kind, docs in self.documents.items()},
            tuple(self.audit),
            tuple(self.activations),
            self.last_ts,
            self.applied,
            dict(self.desired),
            self.write_seq,
            {function: dict(state) for function, state in self.functions.items()},
            {function: tuple(journal) for function, journal in self.journals.items()},
            dict(self.journal_seq),
            dict(self.generations),
            None if (staging := self.staging) is None else (
                staging.change, staging.user, staging.since, staging.last, staging.parts, dict(staging.generations), tuple(staging.changes)
            ),
        )

    @staticmethod
    def encode(frozen: Frozen) -> bytes:
        """Serialize a frozen copy; replicas that applied the same log encode to the same bytes."""
        # Points go column by column; qualities as one byte each, sources as indexes into a table.
        entries = frozen.points.values()
        values, qualities, stamps, sources = (list(map(itemgetter(field), entries)) for field in range(4))
        source_table = list(dict.fromkeys(sources))
        source_codes = {source: code for code, source in enumerate(source_table)}
        payload = {
            "point_names": list(frozen.points),
            "point_values": values,
            "point_qualities": bytes(map(_QUALITY_CODES.__getitem__, qualities)),
            "point_ts": stamps,
            "point_source_table": source_table,
            "point_sources": list(map(source_codes.__getitem__, sources)),
            "documents": _document_columns(frozen.documents),
            "audit": list(map(tuple, frozen.audit)),
            "activations": list(map(tuple, frozen.activations)),
            "last_ts": frozen.last_ts,
            "applied": frozen.applied,
            "desired": {name: tuple(write) for name, write in frozen.desired.items()},
            "write_seq": frozen.write_seq,
            "functions": frozen.functions,
            "journals": {function: list(map(tuple, journal)) for function, journal in frozen.journals.items()},
            "journal_seq": frozen.journal_seq,
            "generations": frozen.generations,
            "staging": None if frozen.staging is None else [*frozen.staging[:6], [_plain_change(change) for change in frozen.staging[6]]],
        }
        # One pickle per entry (and per document column), each a short call that holds the GIL for milliseconds: the
        # Raft thread keeps its heartbeats while a big image is encoded in a background thread.
        return _MAGIC + bytes([_FORMAT_VERSION]) + _dump({key: _dump(value) for key, value in payload.items()})

    @classmethod
    def decode(cls, data: bytes) -> "ProcessImage":
        """Rebuild an image from `encode` output; raise ValueError if `data` is not such a snapshot."""
        if data[: len(_MAGIC)] != _MAGIC:
            raise ValueError("not a Tandem process image snapshot (bad magic)")
        version = data[len(_MAGIC)] if len(data) > len(_MAGIC) else None
        if version not in _READABLE_VERSIONS:
            raise ValueError(
                f"unsupported process image format version {version} "
                f"(this build reads versions {', '.join(map(str, _READABLE_VERSIONS))})"
            )
        collecting = gc.isenabled()
        gc.disable()  # millions of new objects, none of them garbage: the collector would only walk them again and again
        try:
            payload = _load(memoryview(data)[len(_MAGIC) + 1 :])
            if version >= 5:
                payload = {key: _load(piece) for key, piece in payload.items()}
                payload["documents"] = _documents_from_columns(payload["documents"])
            image = cls()
            qualities = map(QUALITIES.__getitem__, payload["point_qualities"])
            sources = map(payload["point_source_table"].__getitem__, payload["point_sources"])
            rows = zip(payload["point_values"], qualities, payload["point_ts"], sources, strict=True)
            image.points = dict(zip(payload["point_names"], map(_new_point_value, rows), strict=True))
            image.documents.update(
                (kind, {name: Document._make(doc) for name, doc in docs.items()})
                for kind, docs in payload["documents"].items()
            )
            image.audit.extend(map(AuditEntry._make, payload["audit"]))
            older = [payload["activation"]] if payload.get("activation") else []  # versions 2 and 3: the last one only
            image.activations.extend(Activation(*record) for record in payload.get("activations", older))
            image.last_ts = payload["last_ts"]
            image.applied = payload["applied"]
            image.desired = {name: DesiredWrite._make(write) for name, write in payload["desired"].items()}
            image.write_seq = payload["write_seq"]
            image.functions = payload.get("functions", {})
            image.journals = {
                function: collections.deque(map(JournalEntry._make, journal), maxlen=cls.JOURNAL_RETENTION)
                for function, journal in payload.get("journals", {}).items()
            }
            image.journal_seq = payload.get("journal_seq", {})
            image.generations = payload.get("generations", {})
            if payload.get("staging") is not None:  # rebuilt by staging its changes again onto the documents just read
                change, user, since, last, parts, generations, changes = payload["staging"]
                image.staging = Staging(change, user, since, generations)
                image.staging.parts, image.staging.last = parts, last
                if image._stage(image.staging, tuple(map(_change_from_plain, changes))) is not None:
                    image.staging = None  # they no longer fit: the change's last part will be refused, as on its writer
        except Exception as exc:
            raise ValueError(f"corrupt process image snapshot: {exc}") from exc
        finally:
            if collecting:
                gc.enable()
        return image


def _dump(value: object) -> bytes:
    """Pickle without a memo: the bytes then depend on the values only, not on which equal objects happen to be shared
    (which differs between a replica that applied the log and one restored from a snapshot)."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=5)
    pickler.fast = True
    pickler.dump(value)
    return out.getvalue()


def _load(data: bytes | memoryview) -> Any:
    """Unpickle plain data only; the whole of `data` must be one pickle."""
    stream = io.BytesIO(data)
    value = _PlainUnpickler(stream).load()
    if stream.tell() != len(data):
        raise ValueError(f"{len(data) - stream.tell()} trailing bytes")
    return value


def _column(values: list) -> tuple:
    """("s", table, codes) for a column of strings (each distinct one stored once), else ("v", values)."""
    if all(type(value) is str for value in values):
        table = list(dict.fromkeys(values))
        codes = {value: code for code, value in enumerate(table)}
        return "s", table, list(map(codes.__getitem__, values))
    return "v", values


def _column_values(column: tuple) -> list:
    return list(map(column[1].__getitem__, column[2])) if column[0] == "s" else column[1]


def _document_columns(documents: dict[str, dict[str, Document]]) -> list[bytes]:
    """The documents as pickled columns: per kind and set of body keys (in order of first appearance), a header with
    the names, versions, authors and stamps, then one column per key. The order of documents within a group is kept, so
    a replica restored from this encodes the same bytes as one that applied the log."""
    pieces: list[bytes] = []
    for kind, docs in documents.items():
        groups: dict[tuple[str, ...], list[tuple[str, Document]]] = {}
        for name, doc in docs.items():
            groups.setdefault(tuple(doc.body), []).append((name, doc))
        for keys, members in groups.items():
            names, rows = [name for name, _ in members], [doc for _, doc in members]
            versions, bodies, users, stamps = zip(*rows)
            pieces.append(_dump((kind, keys, _column(names), list(versions), _column(list(users)), list(stamps))))
            pieces += [_dump(_column([body[key] for body in bodies])) for key in keys]
        if not docs:
            pieces.append(_dump((kind, (), ("v", []), [], ("v", []), [])))  # an empty kind stays known
    return pieces


def _documents_from_columns(pieces: list[bytes]) -> dict[str, dict[str, tuple]]:
    documents: dict[str, dict[str, tuple]] = {}
    at = 0
    while at < len(pieces):
        kind, keys, names, versions, users, stamps = _load(pieces[at])
        columns = [_column_values(_load(piece)) for piece in pieces[at + 1 : at + 1 + len(keys)]]
        at += 1 + len(keys)
        bodies = [dict(zip(keys, row)) for row in zip(*columns)] if keys else [{} for _ in versions]
        documents.setdefault(kind, {}).update(zip(_column_values(names), zip(versions, bodies, _column_values(users), stamps, strict=True)))
    return documents


def _put(docs: dict[str, Document], cmd: PutDocument) -> int:
    """Store a document put in `docs` with the next version; returns that version. The body's text values are interned:
    250,000 point documents repeat "input", "uint16" and their device's name, and would hold a copy each."""
    current = docs.get(cmd.name)
    version = current.version + 1 if current else 1
    body = cmd.body  # the command's private copy: the image takes it over
    for key, value in body.items():
        if type(value) is str:
            body[key] = sys.intern(value)
    docs[cmd.name] = Document(version, body, cmd.user, cmd.ts)
    return version


def _plain_change(change: PutDocument | DeleteDocument) -> tuple:
    if type(change) is PutDocument:
        return ("put", change.kind, change.name, change.body, change.user, change.ts, change.expected_version)
    return ("delete", change.kind, change.name, None, change.user, change.ts, change.expected_version)


def _change_from_plain(plain: list | tuple) -> PutDocument | DeleteDocument:
    op, kind, name, body, user, ts, expected = plain
    if op == "put":
        return PutDocument(kind, name, body, user, ts, expected)
    return DeleteDocument(kind, name, user, ts, expected)


def _conflict(kind: str, name: str, version: int, expected: int) -> Rejected:
    return Rejected(f"version conflict: {kind}/{name} is at version {version}, expected {expected}")


_HANDLERS: dict[type, Callable[[ProcessImage, Any], object]] = {
    UpdatePoints: ProcessImage._update_points,
    WritePoint: ProcessImage._write_point,
    WriteOutcome: ProcessImage._write_outcome,
    PutDocument: ProcessImage._put_document,
    DeleteDocument: ProcessImage._delete_document,
    StageDocuments: ProcessImage._stage_documents,
    ApplyDocuments: ProcessImage._apply_documents,
    DiscardStaged: ProcessImage._discard_staged,
    Step: ProcessImage._step,
    Activate: ProcessImage._activate,
}
