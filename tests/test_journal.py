"""Tests for cluster.journal: durability, torn-tail recovery and corruption detection."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.journal import HEADER, DurableJournal, JournalCorrupt


def cmd(i: int) -> bytes:
    return f"command-{i}".encode() * 3


def filled(path: Path, count: int, fsync: bool = True) -> DurableJournal:
    journal = DurableJournal(path, fsync=fsync)
    for i in range(1, count + 1):
        journal.add(cmd(i), i, 1 + i // 4)
    journal.sync()
    return journal


def expected(first: int, last: int) -> list[tuple[bytes, int, int]]:
    return [(cmd(i), i, 1 + i // 4) for i in range(first, last + 1)]


def reopen(journal: DurableJournal, path: Path) -> DurableJournal:
    journal._destroy()
    return DurableJournal(path)


def test_new_journal_defaults(tmp_path: Path) -> None:
    journal = DurableJournal(tmp_path / "raft.journal")
    assert len(journal) == 0
    assert journal.getCurrentTerm() == 0
    assert journal.getVotedForNodeId() is None
    assert journal.getRaftCommitIndex() == 1
    assert not journal.pending
    journal._destroy()


def test_round_trip_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = filled(path, 10)
    journal.setCurrentTerm(7, "10.0.0.2:4321")
    journal.setRaftCommitIndex(8)
    journal.onOneSecondTimer()
    journal = reopen(journal, path)
    assert journal[:] == expected(1, 10)
    assert journal[0] == expected(1, 1)[0]
    assert journal[-1] == expected(10, 10)[0]
    assert journal[2:4] == expected(3, 4)
    assert len(journal) == 10
    assert journal.getCurrentTerm() == 7
    assert journal.getVotedForNodeId() == "10.0.0.2:4321"
    assert journal.getRaftCommitIndex() == 8
    journal._destroy()


def test_pending_until_sync(tmp_path: Path) -> None:
    journal = DurableJournal(tmp_path / "raft.journal")
    journal.add(b"x", 1, 1)
    assert journal.pending
    journal.sync()
    assert not journal.pending
    journal.sync()
    journal._destroy()


def test_add_rejects_index_gap(tmp_path: Path) -> None:
    journal = filled(tmp_path / "raft.journal", 3)
    with pytest.raises(ValueError, match="idx 5"):
        journal.add(b"x", 5, 2)
    assert len(journal) == 3
    journal._destroy()


def test_commit_index_persisted_by_destroy_and_clamped(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = filled(path, 5)
    journal.setRaftCommitIndex(50)
    assert journal.getRaftCommitIndex() == 5
    journal = reopen(journal, path)
    assert journal.getRaftCommitIndex() == 5
    journal.add(cmd(6), 6, 9)
    journal.add(cmd(7), 7, 9)
    assert journal.getRaftCommitIndex() == 7
    journal._destroy()


def test_delete_entries_from_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = filled(path, 10)
    journal.deleteEntriesFrom(6)
    assert journal[:] == expected(1, 6)
    journal.add(b"new", 7, 99)
    journal.sync()
    journal = reopen(journal, path)
    assert journal[:] == [*expected(1, 6), (b"new", 7, 99)]
    journal._destroy()


def test_delete_entries_to_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = filled(path, 10)
    journal.deleteEntriesTo(8)
    assert journal[:] == expected(9, 10)
    journal.add(cmd(11), 11, 1 + 11 // 4)
    journal.sync()
    journal = reopen(journal, path)
    assert journal[:] == expected(9, 11)
    journal.deleteEntriesFrom(1)
    journal = reopen(journal, path)
    assert journal[:] == expected(9, 9)
    assert not (tmp_path / "raft.journal.tmp").exists()
    journal._destroy()


def test_clear_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = filled(path, 4)
    journal.clear()
    journal.add(cmd(40), 40, 3)
    journal.add(cmd(41), 41, 3)
    journal.sync()
    journal = reopen(journal, path)
    assert journal[:] == [(cmd(40), 40, 3), (cmd(41), 41, 3)]
    journal._destroy()


@pytest.mark.parametrize("fsync", [True, False])
def test_sync_leaves_data_readable(tmp_path: Path, fsync: bool) -> None:
    path = tmp_path / "raft.journal"
    journal = filled(path, 20, fsync=fsync)
    journal.setCurrentTerm(3, None)
    journal.setRaftCommitIndex(12)
    journal.onOneSecondTimer()
    os.close(journal._fd)  # like a crash: no _destroy
    journal = DurableJournal(path, fsync=fsync)
    assert journal[:] == expected(1, 20)
    assert journal.getCurrentTerm() == 3
    assert journal.getRaftCommitIndex() == 12
    journal._destroy()


def record_offsets(path: Path, count: int) -> list[int]:
    journal = filled(path, count)
    offsets = list(journal._offsets)
    journal._destroy()
    return offsets


def test_torn_record_truncated_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "raft.journal"
    offsets = record_offsets(path, 6)
    size = path.stat().st_size
    os.truncate(path, offsets[5] + 10)  # crash in the middle of writing the last record
    with caplog.at_level(logging.WARNING, logger="cluster.journal"):
        journal = DurableJournal(path)
    assert journal[:] == expected(1, 5)
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    assert str(path) in warning.getMessage()
    assert f"offset {offsets[5]} (10 bytes" in warning.getMessage()
    assert path.stat().st_size == offsets[5] < size
    journal.add(cmd(6), 6, 2)
    journal.sync()
    journal = reopen(journal, path)
    assert journal[:] == expected(1, 6)
    journal._destroy()


@pytest.mark.parametrize("garbage", [b"\x00" * 4096, b"\xde\xad\xbe\xef" * 100, b"\x05"])
def test_garbage_tail_truncated_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    path = tmp_path / "raft.journal"
    record_offsets(path, 4)
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(garbage)
    with caplog.at_level(logging.WARNING, logger="cluster.journal"):
        journal = DurableJournal(path)
    assert journal[:] == expected(1, 4)
    assert len(caplog.records) == 1
    assert f"offset {size} ({len(garbage)} bytes" in caplog.records[0].getMessage()
    assert path.stat().st_size == size
    journal._destroy()


def test_checksum_failure_in_last_record_is_torn_tail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "raft.journal"
    offsets = record_offsets(path, 5)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="cluster.journal"):
        journal = DurableJournal(path)
    assert journal[:] == expected(1, 4)
    assert "checksum mismatch" in caplog.records[0].getMessage()
    assert path.stat().st_size == offsets[4]
    journal._destroy()


@pytest.mark.parametrize("where", [0, 4, 10, 30])
def test_flipped_byte_in_middle_record_is_corrupt(tmp_path: Path, where: int) -> None:
    """A damaged length, checksum, idx or command byte: records after it still parse, so it is not a torn tail."""
    path = tmp_path / "raft.journal"
    offsets = record_offsets(path, 6)
    data = bytearray(path.read_bytes())
    data[offsets[2] + where] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as info:
        DurableJournal(path)
    message = str(info.value)
    assert str(path) in message
    assert f"offset {offsets[2]}" in message
    assert "move" in message and "resync" in message


def test_index_gap_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    offsets = record_offsets(path, 6)
    data = path.read_bytes()
    path.write_bytes(data[: offsets[2]] + data[offsets[3] :])  # drop record 3 whole
    with pytest.raises(JournalCorrupt, match=f"offset {offsets[2]}: entry idx 4 does not follow idx 2"):
        DurableJournal(path)


@pytest.mark.parametrize(
    "content", [b"", b"TANDEM", b"PYSYNCOBJ\x00\x00\x00\x00\x00\x00\x00", HEADER.pack(b"TANDEMJ1", 99)]
)
def test_bad_header_is_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "raft.journal"
    path.write_bytes(content)
    with pytest.raises(JournalCorrupt, match="raft.journal is corrupt at byte offset"):
        DurableJournal(path)
    assert path.read_bytes() == content


@pytest.mark.parametrize(
    "meta",
    [
        b"",
        b'{"currentTerm": 3, "votedForNo',
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b'{"currentTerm": "3", "votedForNodeId": null, "raftCommitIndex": 1}',
        b'{"currentTerm": 3, "raftCommitIndex": 1}',
    ],
)
def test_corrupt_meta_is_corrupt(tmp_path: Path, meta: bytes) -> None:
    path = tmp_path / "raft.journal"
    filled(path, 3)._destroy()
    (tmp_path / "raft.journal.meta").write_bytes(meta)
    with pytest.raises(JournalCorrupt) as info:
        DurableJournal(path)
    assert f"{path}.meta is corrupt at byte offset" in str(info.value)


def test_missing_meta_with_entries_uses_defaults(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    journal = filled(path, 3)
    journal.setCurrentTerm(2, "a:1")
    journal._destroy()
    (tmp_path / "raft.journal.meta").unlink()
    journal = DurableJournal(path)
    assert journal[:] == expected(1, 3)
    assert (journal.getCurrentTerm(), journal.getVotedForNodeId(), journal.getRaftCommitIndex()) == (0, None, 1)
    journal._destroy()


CHILD = """
import os, sys
from pathlib import Path
from cluster.journal import DurableJournal

journal = DurableJournal(Path(sys.argv[1]), fsync=sys.argv[2] == "1")
journal.setCurrentTerm(4, "child:1")
for i in range(1, 1001):
    journal.add(b"entry-%d" % i * 20, i, 4)
    if i % 100 == 0:
        journal.sync()
        print(i, flush=True)
journal.add(b"unsynced", 1001, 4)
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("fsync", [True, False])
def test_sigkill_after_sync_keeps_synced_entries(tmp_path: Path, fsync: bool) -> None:
    path = tmp_path / "raft.journal"
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), "1" if fsync else "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        synced = 0
        for line in child.stdout:
            if line.strip() == "ready":
                break
            synced = int(line)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    assert synced == 1000
    journal = DurableJournal(path)
    assert len(journal) >= synced
    assert journal[:synced] == [(b"entry-%d" % i * 20, i, 4) for i in range(1, synced + 1)]
    assert (journal.getCurrentTerm(), journal.getVotedForNodeId()) == (4, "child:1")
    journal._destroy()
