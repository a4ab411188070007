"""The process image: the deterministic state machine every server applies the replicated log to."""

import collections
import io
import pickle
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
    PutDocument,
    Scalar,
    Step,
    UpdatePoints,
    WriteOutcome,
    WritePoint,
)

# A snapshot is _MAGIC, one format-version byte, then a pickle (protocol 5) of plain data only:
# no class references, so decoding cannot run code and does not depend on Python class names.
_MAGIC = b"TNDM-IMAGE"
_FORMAT_VERSION = 4
_READABLE_VERSIONS = (2, 3, 4)  # version 2 had no function state or journals; 2 and 3 kept the last activation only
_QUALITY_CODES = {quality: code for code, quality in enumerate(QUALITIES)}


class PointValue(NamedTuple):
    value: Scalar
    quality: str
    ts: float
    source: str


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
        self.last_ts = 0.0
        self.applied = 0

    def point(self, name: str) -> PointValue | None:
        return self.points.get(name)

    def apply(self, cmd: Command) -> object:
        """Apply one committed command; return None, a new document version, or `Rejected`."""
        handler = _HANDLERS.get(type(cmd))
        if handler is None:
            raise UnknownCommand(f"not a replicated command: {type(cmd).__module__}.{type(cmd).__qualname__}")
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

    def _refusal(self, cmd: PutDocument | DeleteDocument) -> Rejected | None:
        """Why a document change cannot apply now, or None."""
        current = self.documents.get(cmd.kind, {}).get(cmd.name)
        if current is None and type(cmd) is DeleteDocument:
            return Rejected(f"not found: {cmd.kind}/{cmd.name}")
        version = current.version if current else 0
        if cmd.expected_version is not None and cmd.expected_version != version:
            return _conflict(cmd.kind, cmd.name, version, cmd.expected_version)
        return None

    def _put_document(self, cmd: PutDocument) -> int | Rejected:
        refusal = self._refusal(cmd)
        if refusal is not None:
            return refusal
        docs = self.documents.setdefault(cmd.kind, {})  # a plugin function's kind appears with its first document
        current = docs.get(cmd.name)
        version = current.version + 1 if current else 1
        docs[cmd.name] = Document(version, cmd.body, cmd.user, cmd.ts)
        self._audit(cmd.ts, cmd.user, "put", f"{cmd.kind}/{cmd.name}", f"version {version}")
        return version

    def _delete_document(self, cmd: DeleteDocument) -> Rejected | None:
        refusal = self._refusal(cmd)
        if refusal is not None:
            return refusal
        current = self.documents[cmd.kind].pop(cmd.name)
        self._audit(cmd.ts, cmd.user, "delete", f"{cmd.kind}/{cmd.name}", f"version {current.version}")
        return None

    def _apply_documents(self, cmd: ApplyDocuments) -> tuple[int | None, ...] | Rejected:
        for change in cmd.changes:  # each (kind, name) appears once, so checking up front is exact
            refusal = self._refusal(change)
            if refusal is not None:
                return refusal
        return tuple(_HANDLERS[type(change)](self, change) for change in cmd.changes)

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
            "documents": {
                kind: {name: tuple(doc) for name, doc in docs.items()}
                for kind, docs in frozen.documents.items()
            },
            "audit": list(map(tuple, frozen.audit)),
            "activations": list(map(tuple, frozen.activations)),
            "last_ts": frozen.last_ts,
            "applied": frozen.applied,
            "desired": {name: tuple(write) for name, write in frozen.desired.items()},
            "write_seq": frozen.write_seq,
            "functions": frozen.functions,
            "journals": {function: list(map(tuple, journal)) for function, journal in frozen.journals.items()},
            "journal_seq": frozen.journal_seq,
        }
        out = io.BytesIO()
        out.write(_MAGIC + bytes([_FORMAT_VERSION]))
        pickler = pickle.Pickler(out, protocol=5)
        # No memo: the bytes then depend on the values only, not on which equal objects happen to be
        # shared (which differs between a replica that applied the log and one restored from a snapshot).
        pickler.fast = True
        pickler.dump(payload)
        return out.getvalue()

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
        stream = io.BytesIO(data)
        stream.seek(len(_MAGIC) + 1)
        try:
            payload = _PlainUnpickler(stream).load()
            if stream.tell() != len(data):
                raise ValueError(f"{len(data) - stream.tell()} trailing bytes")
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
        except Exception as exc:
            raise ValueError(f"corrupt process image snapshot: {exc}") from exc
        return image


def _conflict(kind: str, name: str, version: int, expected: int) -> Rejected:
    return Rejected(f"version conflict: {kind}/{name} is at version {version}, expected {expected}")


_HANDLERS: dict[type, Callable[[ProcessImage, Any], object]] = {
    UpdatePoints: ProcessImage._update_points,
    WritePoint: ProcessImage._write_point,
    WriteOutcome: ProcessImage._write_outcome,
    PutDocument: ProcessImage._put_document,
    DeleteDocument: ProcessImage._delete_document,
    ApplyDocuments: ProcessImage._apply_documents,
    Step: ProcessImage._step,
    Activate: ProcessImage._activate,
}
