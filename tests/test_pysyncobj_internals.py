"""One check per pysyncobj internal that cluster/raft.py relies on: an upgrade that breaks one fails here, by name."""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pysyncobj.syncobj as syncobj_module
import pytest
from pysyncobj import SERIALIZER_STATE, SyncObj
from pysyncobj.journal import Journal
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.transport import TCPTransport

from cluster import raft
from cluster.config import Timers
from cluster.journal import DurableJournal
from plugins.simulator.process import free_ports
from webmanager.tools.launcher import wait_for

ROOT = Path(__file__).resolve().parent.parent

# Private methods raft.py overrides or calls, with the parameters it passes (self first).
METHODS = {
    "_onTick": ["self", "timeToWait"],
    "_checkCommandsToApply": ["self"],
    "_SyncObj__doApplyCommand": ["self", "command"],
    "_SyncObj__sendNextNodeIdx": ["self", "node", "reset", "nextNodeIdx", "success"],
    "_SyncObj__setState": ["self", "newState"],
    "_SyncObj__setCurrentTerm": ["self", "term", "votedForNodeId"],
    "_SyncObj__onMessageReceived": ["self", "node", "message"],
    "_SyncObj__connectedToAnyone": ["self"],
    "_SyncObj__generateRaftTimeout": ["self"],
}

# Private attributes raft.py reads or sets on a running node, with their type there.
ATTRIBUTES = {
    "_SyncObj__raftState": int,
    "_SyncObj__raftLeader": object,
    "_SyncObj__raftLog": DurableJournal,
    "_SyncObj__raftElectionDeadline": float,
    "_SyncObj__raftMatchIndex": dict,
    "_SyncObj__lastResponseTime": dict,
    "_SyncObj__transferInProgress": bool,
    "_SyncObj__transport": TCPTransport,
    "_SyncObj__thread": object,
}

# Messages raft.py reads or stamps, each with the fields it uses, as pysyncobj sends them.
MESSAGES = {
    "append_entries": ["'term'"],
    "next_node_idx": ["'next_node_idx'", "'success'"],
    "request_vote": ["'term'"],
}


def _node(tmp_path: Path, address: str, peers: list[str]) -> raft.RaftNode:
    return raft.RaftNode(raft.RaftSettings(
        address=address,
        peers=peers,
        password="internals",
        data_dir=tmp_path / address.replace(":", "_"),
        fsync=False,
        timers=Timers(),
        campaign_factor=1.0,
        snapshot_entries=10_000,
        first_campaign_delay=0.0,
        on_apply=lambda command: command,
        freeze=lambda: lambda: b"image",
        on_restore=lambda _image: None,
    ))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[raft.RaftNode, raft.RaftNode]]:
    """Two real pysyncobj nodes on loopback, one of them leader, with a committed entry."""
    directory = tmp_path_factory.mktemp("internals")
    a, b = (f"127.0.0.1:{port}" for port in free_ports(2))
    nodes = (_node(directory, a, [b]), _node(directory, b, [a]))
    try:
        wait_for(lambda: any(n.is_leader for n in nodes) and all(n.leader_address for n in nodes), 10, "a leader")
        leader = next(n for n in nodes if n.is_leader)
        done: list[tuple[object, str | None]] = []
        leader.propose("first", lambda result, error: done.append((result, error)))
        wait_for(lambda: done, 10, "the proposal to commit")
        assert done == [("first", None)]
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def test_the_installed_version_is_the_pinned_one() -> None:
    pinned = [d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"] if d.startswith("pysyncobj")]
    assert pinned == [f"pysyncobj=={version('pysyncobj')}"], "raft.py was checked against the pinned pysyncobj only"


@pytest.mark.parametrize("name", METHODS)
def test_private_method_has_the_signature_raft_py_uses(name: str) -> None:
    method = getattr(SyncObj, name, None)
    assert method is not None, f"pysyncobj no longer has SyncObj.{name}"
    assert list(inspect.signature(method).parameters) == METHODS[name], f"SyncObj.{name} changed its parameters"


@pytest.mark.parametrize("name", ATTRIBUTES)
def test_private_attribute_exists_on_a_running_node(pair: tuple[raft.RaftNode, raft.RaftNode], name: str) -> None:
    for n in pair:
        assert hasattr(n._node, name), f"pysyncobj no longer sets SyncObj.{name}"
        assert isinstance(getattr(n._node, name), ATTRIBUTES[name]), f"SyncObj.{name} changed its type"


def test_raft_state_numbers_match() -> None:
    states = syncobj_module._RAFT_STATE
    assert (states.FOLLOWER, states.CANDIDATE, states.LEADER) == (raft._FOLLOWER, raft._CANDIDATE, raft._LEADER)


def test_the_journal_is_created_through_the_module_level_factory(pair: tuple[raft.RaftNode, raft.RaftNode]) -> None:
    """raft.py replaces pysyncobj.syncobj.createJournal while SyncObj.__init__ runs, to hand it the durable journal."""
    assert syncobj_module.createJournal is not None
    for n in pair:
        assert n._node._SyncObj__raftLog is n._node._journal


def test_the_durable_journal_implements_every_journal_method() -> None:
    wanted = {name for name, _ in inspect.getmembers(Journal, inspect.isfunction)}
    missing = {name for name in wanted if getattr(DurableJournal, name) is getattr(Journal, name)}
    assert not missing, f"pysyncobj's Journal has methods DurableJournal does not implement: {sorted(missing)}"


def test_log_entries_are_command_index_term(pair: tuple[raft.RaftNode, raft.RaftNode]) -> None:
    for n in pair:
        _command, index, term = n._node._SyncObj__raftLog[-1]
        assert (index, term) == (n.last_log_index, n.term)
        assert n.commit_index <= index


@pytest.mark.parametrize("kind", MESSAGES)
def test_message_type_and_fields_are_still_sent(kind: str) -> None:
    source = inspect.getsource(syncobj_module)
    assert f"'type': '{kind}'" in source, f"pysyncobj no longer sends {kind!r} messages"
    for field in MESSAGES[kind]:
        assert field in source, f"pysyncobj's {kind!r} message lost its field {field}"


def test_transport_links_are_where_raft_py_looks(pair: tuple[raft.RaftNode, raft.RaftNode]) -> None:
    """_drop_silent_links walks the transport's connections and reads each link's last read time and state."""
    for n in pair:
        transport = n._node._SyncObj__transport
        assert transport._syncObj is n._node
        assert isinstance(transport._unknownConnections, set)
        links = list(transport._connections.values())
        assert links and all(isinstance(link, TcpConnection) for link in links)
        for link in links:
            assert isinstance(link._TcpConnection__lastReadTime, float)
            assert link.state == CONNECTION_STATE.CONNECTED
    assert (CONNECTION_STATE.DISCONNECTED, CONNECTION_STATE.CONNECTING, CONNECTION_STATE.CONNECTED) == (0, 1, 2)


def test_a_dropped_link_is_dialled_again(pair: tuple[raft.RaftNode, raft.RaftNode]) -> None:
    """TcpConnection.disconnect on a live link makes pysyncobj dial again (what _drop_silent_links relies on)."""
    follower = next(n for n in pair if not n.is_leader)
    link = next(iter(follower._node._SyncObj__transport._connections.values()))
    link.disconnect()
    wait_for(lambda: all(n.connected(p.address) for n in pair for p in pair if p is not n), 10, "the link to be dialled again")


def test_the_snapshot_hooks_are_called(pair: tuple[raft.RaftNode, raft.RaftNode]) -> None:
    """SyncObjConf's serializer and serializeChecker: a compaction writes our snapshot through our writer."""
    assert (SERIALIZER_STATE.NOT_SERIALIZING, SERIALIZER_STATE.SERIALIZING) == (0, 1)
    leader = next(n for n in pair if n.is_leader)
    path = leader._node._snapshot_path
    leader.compact()
    wait_for(path.exists, 10, "a snapshot file")
    assert raft.read_snapshot(path)["image"] == b"image"
