"""Durable, checksummed Raft journal with group-commit fsync (replaces pysyncobj's mmap journal)."""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any

from .durable import atomic_write, write_all

logger = logging.getLogger(__name__)

# File layout: HEADER (magic, format version), then one record per entry:
#   [u32 command length][u32 crc32 of idx+term+command][u64 idx][u64 term][command]
MAGIC = b"TANDEMJ1"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sI")
RECORD_PREFIX = struct.Struct("<II")  # length, crc
IDX_TERM = struct.Struct("<QQ")
RECORD_HEADER_SIZE = RECORD_PREFIX.size + IDX_TERM.size

Entry = tuple[bytes, int, int]  # (command, idx, term), as pysyncobj stores them


class JournalCorrupt(Exception):
    """A journal or meta file is damaged beyond a torn tail; the node must be resynced."""

    def __init__(self, path: Path, offset: int, problem: str) -> None:
        super().__init__(
            f"Raft journal file {path} is corrupt at byte offset {offset}: {problem}. "
            f"Do not edit the file: stop this node and move its data directory "
            f"({path.parent}) away to resync it from its peers."
        )


def _encode(command: bytes, idx: int, term: int) -> bytes:
    body = IDX_TERM.pack(idx, term) + command
    return RECORD_PREFIX.pack(len(command), zlib.crc32(body)) + body


def _decode(data: bytes, offset: int) -> tuple[Entry, int]:
    """The entry whose record starts at offset and the offset after it; ValueError says why not."""
    if offset + RECORD_HEADER_SIZE > len(data):
        raise ValueError(f"record header cut short ({len(data) - offset} of {RECORD_HEADER_SIZE} bytes)")
    length, crc = RECORD_PREFIX.unpack_from(data, offset)
    end = offset + RECORD_HEADER_SIZE + length
    if end > len(data):
        raise ValueError(f"record of {length} command bytes runs past the end of the file")
    if zlib.crc32(memoryview(data)[offset + RECORD_PREFIX.size : end]) != crc:
        raise ValueError("record checksum mismatch")
    idx, term = IDX_TERM.unpack_from(data, offset + RECORD_PREFIX.size)
    return (data[offset + RECORD_HEADER_SIZE : end], idx, term), end


def _valid_record_after(data: bytes, offset: int) -> bool:
    """Whether a checksum-valid record starts anywhere after offset (so the damage is not a torn tail)."""
    for start in range(offset + 1, len(data) - RECORD_HEADER_SIZE + 1):
        try:
            _decode(data, start)
        except ValueError:
            continue
        return True
    return False


class DurableJournal:
    """pysyncobj Journal duck type: entries in memory, appended to a checksummed file, fsynced by sync()."""

    def __init__(self, path: Path, fsync: bool = True) -> None:
        self._path = Path(path)
        self._meta_path = self._path.with_name(self._path.name + ".meta")
        self._fsync = fsync
        self._entries: list[Entry] = []
        self._offsets: list[int] = []  # byte offset of each entry's record
        self._end = HEADER.size  # byte offset after the last record
        self._pending = False
        self._fd = -1
        self._current_term = 0
        self._voted_for: str | None = None
        self._commit_index = 1
        self._meta_dirty = False
        self._load_meta()
        if self._path.exists():
            self._load()
        else:
            self._rewrite([])

    # -- pysyncobj Journal interface -------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        if self._entries and idx != self._entries[-1][1] + 1:
            raise ValueError(f"journal entry idx {idx} does not follow idx {self._entries[-1][1]}")
        self._append(_encode(command, idx, term))
        self._offsets.append(self._end)
        self._entries.append((command, idx, term))
        self._end += RECORD_HEADER_SIZE + len(command)
        self._pending = True

    def clear(self) -> None:
        self._rewrite([])

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Drop entries[entryFrom:] (entryFrom is a position, not a Raft index), durably."""
        if entryFrom >= len(self._entries):
            return
        self._end = self._offsets[entryFrom]
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        os.ftruncate(self._fd, self._end)
        if self._fsync:
            os.fsync(self._fd)
        self._pending = False

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop entries[:entryTo] (entryTo is a position, not a Raft index), durably."""
        self._rewrite(self._entries[entryTo:])

    def __getitem__(self, item: int | slice) -> Entry | list[Entry]:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        self.onOneSecondTimer()
        os.close(self._fd)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if raftCommitIndex != self._commit_index:
            self._commit_index = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        if self._entries:
            return min(self._commit_index, self._entries[-1][1])
        return self._commit_index

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:
        self._current_term = term
        self._voted_for = votedForNodeId
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return self._current_term

    def getVotedForNodeId(self) -> str | None:
        return self._voted_for

    def onOneSecondTimer(self) -> None:
        """Make pending appends durable, then persist a changed commit index."""
        self.sync()
        if self._meta_dirty:
            self._store_meta()

    # -- group commit ------------------------------------------------------------------

    def sync(self) -> None:
        """Make every add so far durable with one fdatasync (deletes are durable already)."""
        if self._pending and self._fsync:
            os.fdatasync(self._fd)
        self._pending = False

    @property
    def pending(self) -> bool:
        """Whether appends are waiting for sync()."""
        return self._pending

    # -- file handling -------------------------------------------------------------------

    def _append(self, record: bytes) -> None:
        try:
            write_all(self._fd, record, self._path)
        except OSError:
            os.ftruncate(self._fd, self._end)  # never leave half a record behind a later one
            raise

    def _rewrite(self, entries: list[Entry]) -> None:
        """Atomically replace the file with a header and these entries."""
        records = [_encode(*entry) for entry in entries]
        atomic_write(self._path, b"".join([HEADER.pack(MAGIC, FORMAT_VERSION), *records]), self._fsync)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self._path, os.O_RDWR | os.O_APPEND)
        self._entries = list(entries)
        self._offsets = []
        self._end = HEADER.size
        for record in records:
            self._offsets.append(self._end)
            self._end += len(record)
        self._pending = False

    def _load(self) -> None:
        data = self._path.read_bytes()
        if len(data) < HEADER.size:
            raise JournalCorrupt(self._path, 0, f"file is {len(data)} bytes, shorter than its {HEADER.size}-byte header")
        magic, version = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise JournalCorrupt(self._path, 0, f"bad magic {magic!r}, expected {MAGIC!r}")
        if version != FORMAT_VERSION:
            raise JournalCorrupt(self._path, len(MAGIC), f"unsupported format version {version}")
        offset = HEADER.size
        while offset < len(data):
            try:
                entry, end = _decode(data, offset)
            except ValueError as exc:
                if _valid_record_after(data, offset):
                    raise JournalCorrupt(self._path, offset, f"{exc}, but valid records follow") from None
                self._truncate_torn_tail(offset, len(data) - offset, str(exc))
                break
            if self._entries and entry[1] != self._entries[-1][1] + 1:
                raise JournalCorrupt(self._path, offset, f"entry idx {entry[1]} does not follow idx {self._entries[-1][1]}")
            self._entries.append(entry)
            self._offsets.append(offset)
            offset = end
        self._end = offset
        self._fd = os.open(self._path, os.O_RDWR | os.O_APPEND)

    def _truncate_torn_tail(self, offset: int, dropped: int, problem: str) -> None:
        logger.warning(
            "Raft journal %s: dropping torn tail at byte offset %d (%d bytes: %s), left by a crash",
            self._path, offset, dropped, problem,
        )
        fd = os.open(self._path, os.O_RDWR)
        try:
            os.ftruncate(fd, offset)
            if self._fsync:
                os.fsync(fd)  # before new appends land behind the old garbage's position
        finally:
            os.close(fd)

    def _load_meta(self) -> None:
        try:
            raw = self._meta_path.read_bytes()
        except FileNotFoundError:
            return
        try:
            meta: Any = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise JournalCorrupt(self._meta_path, exc.pos, f"invalid JSON ({exc.msg})") from None
        except UnicodeDecodeError as exc:
            raise JournalCorrupt(self._meta_path, exc.start, "not UTF-8 text") from None
        if not (
            isinstance(meta, dict)
            and set(meta) == {"currentTerm", "votedForNodeId", "raftCommitIndex"}
            and type(meta["currentTerm"]) is int
            and type(meta["raftCommitIndex"]) is int
            and (meta["votedForNodeId"] is None or isinstance(meta["votedForNodeId"], str))
        ):
            raise JournalCorrupt(
                self._meta_path, 0,
                "expected {currentTerm: int, votedForNodeId: str|null, raftCommitIndex: int}",
            )
        self._current_term = meta["currentTerm"]
        self._voted_for = meta["votedForNodeId"]
        self._commit_index = meta["raftCommitIndex"]

    def _store_meta(self) -> None:
        """Atomically replace the meta file; durable before returning when fsync is on."""
        meta = {
            "currentTerm": self._current_term,
            "votedForNodeId": self._voted_for,
            "raftCommitIndex": self._commit_index,
        }
        atomic_write(self._meta_path, json.dumps(meta).encode(), self._fsync)
        self._meta_dirty = False
