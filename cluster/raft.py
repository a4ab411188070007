"""The only module that imports pysyncobj: Raft with pre-vote, leader stickiness, an acknowledged lease, a durable journal and background snapshots."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pysyncobj.syncobj as _syncobj
from pysyncobj import (
    FAIL_REASON,
    SERIALIZER_STATE,
    SyncObj,
    SyncObjConf,
    SyncObjException,
    replicated,
)
from pysyncobj.monotonic import (
    monotonic as raft_clock,  # CLOCK_MONOTONIC_RAW: pysyncobj's deadlines use it
)
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from .config import Timers
from .durable import atomic_write, fsync_dir
from .journal import DurableJournal

logger = logging.getLogger(__name__)

_FOLLOWER, _CANDIDATE, _LEADER = 0, 1, 2
STALL_WARNING = 0.1  # seconds without a tick that are logged: a lease lasts lease_ratio x election_min (0.24 s by default)
_SNAPSHOT_FORMAT = "tandem-snapshot-1"

Encoder = Callable[[], bytes]


class RaftError(Exception):
    """The Raft node cannot start or cannot carry out a request."""


class SnapshotCorrupt(RaftError):
    """The snapshot file on disk cannot be read."""


class ProposalFailed(RaftError):
    """A proposed command was not committed (no leader, leader changed, queue full, timeout)."""


_FAIL_TEXT = {
    FAIL_REASON.QUEUE_FULL: "the command queue is full",
    FAIL_REASON.MISSING_LEADER: "there is no leader",
    FAIL_REASON.DISCARDED: "the command was discarded by a new leader",
    FAIL_REASON.NOT_LEADER: "the leader changed before the command committed",
    FAIL_REASON.LEADER_CHANGED: "the leader changed before the command committed",
    FAIL_REASON.REQUEST_DENIED: "the request was denied",
    FAIL_REASON.UNKNOWN_OUTCOME: "the outcome is unknown",
}


class _SnapshotWriter:
    """Writes a snapshot in a background thread; pysyncobj polls `check` for the outcome."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self._path = path
        self._fsync = fsync
        self._state = SERIALIZER_STATE.NOT_SERIALIZING
        self.last_duration = 0.0

    def start(self, produce: Callable[[], bytes]) -> None:
        self._state = SERIALIZER_STATE.SERIALIZING
        threading.Thread(target=self._run, args=(produce,), name="snapshot", daemon=True).start()

    def _run(self, produce: Callable[[], bytes]) -> None:
        started = time.monotonic()
        try:
            data = produce()
            atomic_write(self._path, data, self._fsync, tmp_suffix=".writing")  # pysyncobj itself renames ".tmp"
        except Exception:
            logger.exception("writing snapshot %s failed", self._path)
            self._state = SERIALIZER_STATE.FAILED
            return
        self.last_duration = time.monotonic() - started
        logger.info("snapshot written: %s (%d bytes, %.3f s)", self._path, len(data), self.last_duration)
        self._state = SERIALIZER_STATE.SUCCESS

    def check(self) -> int:
        state = self._state
        if state in (SERIALIZER_STATE.SUCCESS, SERIALIZER_STATE.FAILED):
            self._state = SERIALIZER_STATE.NOT_SERIALIZING
        return state


def read_snapshot(path: Path) -> dict[str, Any]:
    """Load and check a snapshot file written by this module."""
    try:
        doc = pickle.loads(path.read_bytes())
    except Exception as exc:
        raise SnapshotCorrupt(
            f"{path}: snapshot unreadable ({exc}); move the data directory away to resync this node from its peers"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != _SNAPSHOT_FORMAT:
        raise SnapshotCorrupt(f"{path}: not a Tandem snapshot (unknown format)")
    return doc


class _StampingTransport(TCPTransport):
    """Stamps AppendEntries with the leader's send time and echoes it in the follower's answer (for the lease)."""

    def send(self, node: Any, message: Any) -> bool:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries":
            message["lt"] = raft_clock()
        elif kind == "next_node_idx":
            message["elig"] = self._syncObj.eligible
            if self._syncObj._echo is not None:
                message["lt"], message["lterm"] = self._syncObj._echo
        return super().send(node, message)


@contextlib.contextmanager
def _journal_factory(journal: DurableJournal) -> Iterator[None]:
    original = _syncobj.createJournal
    _syncobj.createJournal = lambda _path: journal
    try:
        yield
    finally:
        _syncobj.createJournal = original


class RaftSettings(NamedTuple):
    """What a Raft node is built from: its address and peers, the link password, where it keeps its journal and
    snapshots, its timers, and the state machine (`on_apply` a committed command, `freeze` the image for a snapshot,
    `on_restore` one)."""

    address: str
    peers: list[str]
    password: str
    data_dir: Path
    fsync: bool
    timers: Timers
    campaign_factor: float  # election timeouts x this (the witness campaigns later)
    snapshot_entries: int
    first_campaign_delay: float  # seconds added to the first election timeout (the backup lets main win a cold start)
    on_apply: Callable[[Any], Any]
    freeze: Callable[[], Encoder]
    on_restore: Callable[[bytes], None]


class _SyncNode(SyncObj):
    """A pysyncobj node with pre-vote, leader stickiness, a majority-acknowledged lease and a durable journal: every
    override of pysyncobj's internals (pinned: pysyncobj 0.3.17, checked by tests/test_pysyncobj_internals.py) is here.

    Everything here runs on pysyncobj's tick thread unless stated otherwise.
    """

    def __init__(self, settings: RaftSettings) -> None:
        (address, peers, password, data_dir, fsync, timers, campaign_factor, snapshot_entries, first_campaign_delay,
         on_apply, freeze, on_restore) = settings
        data_dir.mkdir(parents=True, exist_ok=True)
        self._on_apply = on_apply
        self._freeze = freeze
        self._on_restore = on_restore
        self._fsync = fsync
        self._stickiness = timers.election_min
        self._lease = timers.lease
        self._ping_period = timers.heartbeat
        self._next_ping = 0.0
        self._link_timeout = timers.connection_timeout
        self._newer_term_sent: dict[str, float] = {}  # peer -> when this node last told it of its newer term
        self._last_leader_contact = -math.inf
        self._prevote_round = 0
        self._prevote_grants: set[str] = set()
        self._prevote_passed = False
        self._acked: dict[str, float] = {}
        self._lease_floor = -math.inf
        self._transfer_target: str | None = None
        self._echo: tuple[float, int] | None = None
        self._last_tick = math.inf  # the first tick measures no gap
        self.longest_tick_gap = 0.0  # seconds between two ticks of the Raft thread, at most, since start
        self.largest_entry = 0  # bytes of the largest log entry applied since start
        self.longest_apply = 0.0  # seconds of the longest apply of one entry (decode and state machine) on the Raft thread
        self.eligible = True  # may this node become active? Sent to the leader with every answer to AppendEntries
        self.may_campaign = True  # False: this node does not start elections (a server that is blocked)
        self._peer_eligible: dict[str, bool] = {}
        self._snapshot_path = data_dir / "raft.snapshot"
        self._startup_snapshot = self._check_snapshot()
        self._writer = _SnapshotWriter(self._snapshot_path, fsync)
        self._journal = DurableJournal(data_dir / "raft.journal", fsync=fsync)
        conf = SyncObjConf(
            password=password,
            autoTick=True,
            autoTickPeriod=timers.tick,
            appendEntriesPeriod=timers.heartbeat,
            raftMinTimeout=timers.election_min * campaign_factor,
            raftMaxTimeout=timers.election_max * campaign_factor,
            leaderFallbackTimeout=timers.election_min - 2 * timers.tick,
            connectionTimeout=max(timers.connection_timeout, timers.election_max * campaign_factor),
            connectionRetryTime=timers.connection_retry,
            appendEntriesUseBatch=False,
            appendEntriesBatchSizeBytes=2**20,
            sendBufferSize=2**20,
            recvBufferSize=2**20,
            bindAddress=address,
            maxBindRetries=3,
            bindRetryTime=0.2,
            journalFile=str(data_dir / "raft.journal"),
            fullDumpFile=str(self._snapshot_path),
            serializer=self._serialize,
            deserializer=self._deserialize,
            serializeChecker=self._writer.check,
            useFork=False,
            logCompactionMinEntries=snapshot_entries,
            logCompactionMinTime=600,
            dynamicMembershipChange=False,
        )
        with _journal_factory(self._journal):
            super().__init__(address, peers, conf, transportClass=_StampingTransport)
        self._nodes = {node.id: node for node in self.otherNodes}
        self._SyncObj__raftElectionDeadline += first_campaign_delay
        try:
            self.waitBinded()
        except SyncObjException:
            self.destroy()
            raise RaftError(f"cannot listen on {address} for the sync link (address in use or not local)") from None

    # ---- public read-only view (safe from any thread: single attribute reads) ----

    @property
    def address(self) -> str:
        return self.selfNode.id

    @property
    def is_leader(self) -> bool:
        return self._SyncObj__raftState == _LEADER

    @property
    def leader_address(self) -> str | None:
        leader = self._SyncObj__raftLeader
        return leader.id if leader is not None else None

    @property
    def last_log_index(self) -> int:
        return self._SyncObj__raftLog[-1][1]

    def match_index(self, address: str) -> int | None:
        """The leader's view of how far a follower's log matches; None when not leader."""
        if not self.is_leader:
            return None
        return self._SyncObj__raftMatchIndex.get(self._node(address))

    def ack_age(self, address: str) -> float | None:
        """Seconds since the leader last heard an answer from a follower; None when not leader."""
        if not self.is_leader:
            return None
        last = self._SyncObj__lastResponseTime.get(self._node(address))
        return None if last is None else max(0.0, raft_clock() - last)

    def leader_contact_age(self) -> float:
        """Seconds since this node last accepted AppendEntries from a leader."""
        return raft_clock() - self._last_leader_contact

    def _node(self, address: str) -> Any:
        return self._nodes[address]

    def peer_eligible(self, address: str) -> bool:
        """Whether a follower last said it may become active (True until it has said anything)."""
        return self._peer_eligible.get(address, True)

    def connected(self, address: str) -> bool:
        return self.isNodeConnected(self._node(address))

    def lease_remaining(self) -> float:
        """Seconds for which no other node can become leader; -inf when there is no lease."""
        return self._lease_expiry() - raft_clock()

    def _lease_expiry(self) -> float:
        if not self.is_leader:
            return -math.inf
        floor = self._lease_floor
        acks = sorted((lt for lt in self._acked.values() if lt >= floor), reverse=True)
        needed = (len(self.otherNodes) + 1) // 2
        if needed == 0:
            return math.inf
        if len(acks) < needed:
            return -math.inf
        return acks[needed - 1] + self._lease

    @property
    def snapshot_duration(self) -> float:
        return self._writer.last_duration

    # ---- actions ----

    def propose(self, command: Any, callback: Callable[[Any, str | None], None]) -> None:
        """Queue a command for the log; `callback(result, error_text)` runs on the Raft thread (any thread may call)."""

        def done(result: Any, error: int) -> None:
            callback(result, None if error == FAIL_REASON.SUCCESS else _FAIL_TEXT.get(error, f"error {error}"))

        self._apply(command, callback=done)

    def compact(self) -> None:
        """Take a snapshot and drop the log before it at the next tick (after a big configuration change: its entries
        would otherwise stay in memory, and be replayed by a wiped node, until snapshot_entries more have come)."""
        self.forceLogCompaction()

    def revoke_lease(self) -> None:
        """Stop counting acknowledgements: the lease lapses at once (before a leadership transfer)."""
        self._lease_floor = math.inf

    def restore_lease(self) -> None:
        """Count acknowledgements of heartbeats sent from now on (after a failed transfer)."""
        self._lease_floor = raft_clock()

    def transfer_to(self, address: str) -> bool:
        """Ask a caught-up follower to take over now (Raft TimeoutNow); False when pysyncobj refuses."""
        outcome: list[int] = []
        self._transfer_target = address
        self.transferLeadership(self._node(address), callback=lambda _res, err: outcome.append(err))
        return outcome == [FAIL_REASON.SUCCESS]

    def cancel_transfer(self) -> None:
        self._transfer_target = None

    def stop(self) -> None:
        """Stop the tick thread and close the journal (any thread but the tick thread)."""
        self.destroy()
        thread = self._SyncObj__thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # ---- replicated entry point ----

    @replicated
    def _apply(self, command: Any) -> Any:
        return self._on_apply(command)

    # ---- pysyncobj overrides ----

    def _onTick(self, timeToWait: float = 0.0) -> None:
        if self._journal.pending:
            self._journal.sync()
        now = raft_clock()
        gap, self._last_tick = now - self._last_tick, now
        if gap > STALL_WARNING:
            logger.warning("the Raft thread did not tick for %.0f ms (CPU, GIL or disk): leases last %.0f ms", gap * 1000, self._lease * 1000)
        self.longest_tick_gap = max(self.longest_tick_gap, gap)
        if (
            self._SyncObj__raftState != _LEADER
            and not self._SyncObj__transferInProgress
            and not self._prevote_passed
            and self._SyncObj__raftElectionDeadline < now
            and self._SyncObj__connectedToAnyone()
        ):
            self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
            if self.may_campaign:
                self._start_prevote()
        if now >= self._next_ping:
            self._next_ping = now + self._ping_period
            self._ping_peers()
        self._drop_silent_links(now)
        # pysyncobj's own tick starts an election once the deadline passes, a moment after the check above (the work in
        # between can take milliseconds): hold the deadline off unless the pre-vote passed or a transfer asked for it.
        held = not (self._prevote_passed or self._SyncObj__transferInProgress)
        deadline = self._SyncObj__raftElectionDeadline
        if held:
            self._SyncObj__raftElectionDeadline = math.inf
        try:
            super()._onTick(timeToWait)
        finally:
            if held and self._SyncObj__raftElectionDeadline == math.inf:  # no message moved it meanwhile
                self._SyncObj__raftElectionDeadline = deadline

    def _SyncObj__doApplyCommand(self, command: bytes) -> Any:
        started = time.perf_counter()
        try:
            return SyncObj._SyncObj__doApplyCommand(self, command)
        finally:
            self.largest_entry = max(self.largest_entry, len(command))
            self.longest_apply = max(self.longest_apply, time.perf_counter() - started)

    def _checkCommandsToApply(self) -> None:
        super()._checkCommandsToApply()
        if self._journal.pending:
            self._journal.sync()  # group commit: one fsync for all entries queued this tick

    def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False, nextNodeIdx: int | None = None, success: bool = False) -> None:
        if success:
            self._journal.sync()  # a follower acknowledges only what is on disk
        SyncObj._SyncObj__sendNextNodeIdx(self, node, reset, nextNodeIdx, success)

    def _SyncObj__setState(self, newState: int) -> None:
        old = self._SyncObj__raftState
        SyncObj._SyncObj__setState(self, newState)
        if newState == old:
            return
        if old == _LEADER:
            self._transfer_target = None
            self._acked.clear()
        if newState == _LEADER:
            self._acked.clear()
            self._lease_floor = -math.inf
        if newState == _CANDIDATE:
            self._prevote_passed = False
        logger.info("raft state %s -> %s (term %d)", _STATE_NAMES[old], _STATE_NAMES[newState], self.raftCurrentTerm)

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "ping":
            return
        if kind == "pre_vote":
            self._answer_prevote(node, message)
            return
        if kind == "pre_vote_response":
            self._count_prevote(node, message)
            return
        if kind == "request_vote" and not self._may_vote(node, message):
            return
        if kind == "newer_term":
            self._on_newer_term(node, message)
            return
        if kind == "append_entries" and message["term"] < self.raftCurrentTerm:
            self._notify_newer_term(node)
        if kind == "next_node_idx":
            self._peer_eligible[node.id] = message.get("elig", True) is True
        if kind == "next_node_idx" and self.is_leader and message.get("lterm") == self.raftCurrentTerm:
            if message["lt"] > self._acked.get(node.id, -math.inf):
                self._acked[node.id] = message["lt"]
        if kind == "append_entries" and message["term"] >= self.raftCurrentTerm:
            self._last_leader_contact = raft_clock()
            self._prevote_passed = False
            self._prevote_round += 1
            self._echo = (message.get("lt", -math.inf), message["term"])
            try:
                SyncObj._SyncObj__onMessageReceived(self, node, message)
            finally:
                self._echo = None
            return
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    # ---- elections: pre-vote and stickiness ----

    def _last_log(self) -> tuple[int, int]:
        entry = self._SyncObj__raftLog[-1]
        return entry[2], entry[1]

    def _start_prevote(self) -> None:
        self._prevote_round += 1
        self._prevote_grants = {self.selfNode.id}
        term, index = self._last_log()
        message = {
            "type": "pre_vote",
            "round": self._prevote_round,
            "term": self.raftCurrentTerm + 1,
            "last_log_term": term,
            "last_log_index": index,
        }
        logger.debug("pre-vote round %d for term %d", self._prevote_round, message["term"])
        for node in self.otherNodes:
            self._SyncObj__transport.send(node, dict(message))
        self._check_prevote()

    def _answer_prevote(self, node: Any, message: dict[str, Any]) -> None:
        granted = (
            not self.is_leader
            and message["term"] > self.raftCurrentTerm
            and self.leader_contact_age() >= self._stickiness
            and (message["last_log_term"], message["last_log_index"]) >= self._last_log()
        )
        logger.debug("pre-vote for %s (term %d): %s; leader contact %.3f s ago", node.id, message["term"], "granted" if granted else "refused", self.leader_contact_age())
        self._SyncObj__transport.send(node, {"type": "pre_vote_response", "round": message["round"], "granted": granted})

    def _count_prevote(self, node: Any, message: dict[str, Any]) -> None:
        if message["round"] != self._prevote_round or not message["granted"] or self.is_leader:
            return
        self._prevote_grants.add(node.id)
        self._check_prevote()

    def _check_prevote(self) -> None:
        if len(self._prevote_grants) > (len(self.otherNodes) + 1) / 2:
            logger.debug("pre-vote round %d passed", self._prevote_round)
            self._prevote_passed = True
            self._SyncObj__raftElectionDeadline = 0  # the base tick starts the real election

    def _may_vote(self, node: Any, message: dict[str, Any]) -> bool:
        """Leader stickiness: ignore a vote request (and its term) while a live leader is known, unless it comes from that
        leader itself (re-electing itself in a newer term, see `_on_newer_term`)."""
        if message["term"] <= self.raftCurrentTerm:
            return True
        if self.is_leader:
            return self._transfer_target == node.id
        return self.leader_contact_age() >= self._stickiness or node is self._SyncObj__raftLeader

    # ---- a follower stuck in a newer term ----
    # A node whose pre-vote passed but whose election failed (a voter heard the leader again in between) holds a newer
    # term than the leader. It ignores the leader's AppendEntries, and the leader (sticky) ignores its vote requests: it
    # would stay behind for good. So it tells the leader; a leader that still holds its lease re-elects itself at once in
    # a newer term (its voters grant that despite stickiness), and the stuck node follows it again.

    def _notify_newer_term(self, node: Any) -> None:
        now = raft_clock()
        if now - self._newer_term_sent.get(node.id, -math.inf) >= self._stickiness:
            self._newer_term_sent[node.id] = now
            self._SyncObj__transport.send(node, {"type": "newer_term", "term": self.raftCurrentTerm})

    def _on_newer_term(self, node: Any, message: dict[str, Any]) -> None:
        term = message.get("term")
        if not self.is_leader or type(term) is not int or term <= self.raftCurrentTerm:
            return
        holds_lease = self.lease_remaining() > 0
        logger.warning("%s is in term %d, ahead of this leader's %d: stepping down%s", node.id, term, self.raftCurrentTerm,
                       " and re-electing at once" if holds_lease else "")
        self._SyncObj__setCurrentTerm(term, None)
        self._SyncObj__setState(_FOLLOWER)
        self._SyncObj__raftLeader = None
        if holds_lease:  # the majority acknowledged it a moment ago: no pre-vote needed
            self._prevote_passed = True
            self._SyncObj__raftElectionDeadline = 0

    def _drop_silent_links(self, now: float) -> None:
        """Drop a link that has not carried a message for connection_timeout, or a dial that has not connected within
        election_min; pysyncobj then dials again. pysyncobj times a link out only when it sends on it, and never while it
        dials: a SYN lost in a partition is retried by the kernel only after 1, 3, 7, 15 s, so a healed link (and the
        standby behind it) could otherwise stay down that long."""
        transport = self._SyncObj__transport
        for link in (*transport._connections.values(), *transport._unknownConnections):
            silent = now - link._TcpConnection__lastReadTime  # since the last message, or since the dial began
            if link.state == CONNECTION_STATE.CONNECTING and silent > self._stickiness:
                logger.debug("sync link: no answer to a dial within %.1f s: dialling again", silent)
                link.disconnect()
            elif link.state == CONNECTION_STATE.CONNECTED and silent > self._link_timeout:
                logger.info("sync link silent for %.1f s: dropped, dialling again", silent)
                link.disconnect()

    def _ping_peers(self) -> None:
        """Keep every link busy: pysyncobj drops a connection on its first send after an idle period."""
        for node in self.otherNodes:
            self._SyncObj__transport.send(node, {"type": "ping"})

    # ---- snapshots ----

    def _check_snapshot(self) -> dict[str, Any] | None:
        if not self._snapshot_path.exists():
            return None
        doc = read_snapshot(self._snapshot_path)
        doc["stat"] = _file_id(self._snapshot_path)
        return doc

    def _serialize(self, _tmp_path: str, entries: tuple[Any, ...]) -> None:
        encode = self._freeze()
        self._writer.start(
            lambda: pickle.dumps({"format": _SNAPSHOT_FORMAT, "entries": entries, "image": encode()}, protocol=5)
        )

    def _deserialize(self, path: str) -> tuple[Any, ...]:
        snapshot = Path(path)
        doc = self._startup_snapshot
        self._startup_snapshot = None
        if doc is None or doc["stat"] != _file_id(snapshot):
            if self._fsync:
                with open(snapshot, "rb") as f:
                    os.fsync(f.fileno())
                fsync_dir(snapshot.parent)
            doc = read_snapshot(snapshot)
        self._on_restore(doc["image"])
        return doc["entries"]


_STATE_NAMES = {_FOLLOWER: "follower", _CANDIDATE: "candidate", _LEADER: "leader"}


def _file_id(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


class RaftNode:
    """Tandem's Raft node, in Tandem's words: its term, leader, commit and applied index, lease, proposals and leadership
    transfer. Nothing else of pysyncobj's is reachable from here. The properties are safe to read from any thread."""

    def __init__(self, settings: RaftSettings) -> None:
        self._node = _SyncNode(settings)

    # ---- this node and its log ----

    @property
    def address(self) -> str:
        return self._node.address

    @property
    def term(self) -> int:
        return self._node.raftCurrentTerm

    @property
    def is_leader(self) -> bool:
        return self._node.is_leader

    @property
    def leader_address(self) -> str | None:
        return self._node.leader_address

    @property
    def commit_index(self) -> int:
        return self._node.raftCommitIndex

    @property
    def applied_index(self) -> int:
        return self._node.raftLastApplied

    @property
    def last_log_index(self) -> int:
        return self._node.last_log_index

    def leader_contact_age(self) -> float:
        """Seconds since this node last accepted AppendEntries from a leader."""
        return self._node.leader_contact_age()

    def lease_remaining(self) -> float:
        """Seconds for which no other node can become leader; -inf when there is no lease."""
        return self._node.lease_remaining()

    # ---- the peers, as the leader sees them ----

    def match_index(self, address: str) -> int | None:
        """How far a follower's log matches the leader's; None when this node is not the leader."""
        return self._node.match_index(address)

    def ack_age(self, address: str) -> float | None:
        """Seconds since the leader last heard a follower answer; None when this node is not the leader."""
        return self._node.ack_age(address)

    def connected(self, address: str) -> bool:
        return self._node.connected(address)

    def peer_eligible(self, address: str) -> bool:
        """Whether a follower last said it may become active (True until it has said anything)."""
        return self._node.peer_eligible(address)

    # ---- what this node tells its peers ----

    @property
    def eligible(self) -> bool:
        """May this node become active? Sent to the leader with every answer to AppendEntries."""
        return self._node.eligible

    @eligible.setter
    def eligible(self, value: bool) -> None:
        self._node.eligible = value

    @property
    def may_campaign(self) -> bool:
        """False: this node starts no election (a server that is blocked)."""
        return self._node.may_campaign

    @may_campaign.setter
    def may_campaign(self, value: bool) -> None:
        self._node.may_campaign = value

    # ---- figures since start ----

    @property
    def snapshot_duration(self) -> float:
        return self._node.snapshot_duration

    @property
    def largest_entry(self) -> int:
        return self._node.largest_entry

    @property
    def longest_apply(self) -> float:
        return self._node.longest_apply

    @property
    def longest_tick_gap(self) -> float:
        return self._node.longest_tick_gap

    # ---- actions ----

    def propose(self, command: Any, callback: Callable[[Any, str | None], None]) -> None:
        """Queue a command for the log; `callback(result, error_text)` runs on the Raft thread (any thread may call)."""
        self._node.propose(command, callback)

    def on_tick(self, callback: Callable[[], None]) -> None:
        """Call `callback()` on the Raft thread at every tick (every `tick` seconds)."""
        self._node.addOnTickCallback(callback)

    def compact(self) -> None:
        self._node.compact()

    def revoke_lease(self) -> None:
        self._node.revoke_lease()

    def restore_lease(self) -> None:
        self._node.restore_lease()

    def transfer_to(self, address: str) -> bool:
        return self._node.transfer_to(address)

    def cancel_transfer(self) -> None:
        self._node.cancel_transfer()

    def stop(self) -> None:
        self._node.stop()
