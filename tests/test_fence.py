"""The socket fence on real sockets: hardening, refusal after the role is lost, cut-off TCP and UDP sockets, data queued
in a partition that never arrives after the heal (network namespaces), and safety against reused descriptor numbers."""

from __future__ import annotations

import errno
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import NetnsHosts

from cluster.fence import Fence, harden
from cluster.guard import NotActive
from webmanager.tools.launcher import holds_for, wait_for

RECEIVER = """
import socket, sys
server = socket.create_server(("0.0.0.0", 7000))
print("ready", flush=True)
connection, _ = server.accept()
with open(sys.argv[1], "ab", buffering=0) as out:
    while data := connection.recv(100):
        out.write(data)
"""


@pytest.fixture
def peer() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of TCP sockets on loopback: (ours, the peer's)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        ours = socket.create_connection(server.getsockname())
        theirs, _ = server.accept()
    yield ours, theirs
    ours.close()
    theirs.close()


def test_harden_sets_zero_linger_user_timeout_and_keepalive(peer):
    ours, _ = peer
    harden(ours, 0.75)
    assert struct.unpack("ii", ours.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)) == (1, 0)
    assert ours.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 750
    assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1


def test_a_socket_registered_after_the_role_is_lost_is_cut_at_once(peer):
    ours, theirs = peer
    with pytest.raises(NotActive):
        Fence(lambda: False).register(ours, 1.0)
    with pytest.raises(ConnectionResetError):  # RST, not a clean end
        theirs.recv(10)
    with pytest.raises(OSError):
        ours.send(b"late")


def test_closing_the_fence_cuts_tcp_and_udp_sockets(peer):
    ours, theirs = peer
    datagram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fence = Fence(lambda: True)
    fence.register(ours, 1.0)
    fence.register(datagram, 1.0)
    ours.send(b"sent while active")
    assert theirs.recv(100) == b"sent while active"
    fence.close()
    assert len(fence) == 0 and fence.cuts == 2
    with pytest.raises(ConnectionResetError):
        theirs.recv(10)
    with pytest.raises(OSError) as refused:
        datagram.sendto(b"late", ("127.0.0.1", 9))
    assert refused.value.errno == errno.EPIPE
    datagram.close()


def test_sweep_lets_go_of_a_socket_its_owner_closed(peer):
    ours, theirs = peer
    fence = Fence(lambda: True)
    fence.register(ours, 1.0)
    ours.close()
    theirs.settimeout(0.2)
    with pytest.raises(TimeoutError):
        theirs.recv(10)  # our duplicate keeps the connection open until sweep lets go of it
    fence.sweep()
    assert len(fence) == 0
    with pytest.raises(ConnectionResetError):
        theirs.recv(10)  # then the kernel closes it with zero linger: RST


def test_a_descriptor_number_reused_after_the_owner_closed_it_is_never_cut(peer):
    ours, theirs = peer
    fence = Fence(lambda: True)
    fence.register(ours, 1.0)
    number = ours.fileno()
    with socket.create_server(("127.0.0.1", 0)) as server:
        ours.close()
        reused = socket.create_connection(server.getsockname())
        other, _ = server.accept()
    try:
        assert reused.fileno() == number  # the kernel hands out the lowest free number
        fence.close()  # the role is lost: the old connection is cut, the new one behind the same number is not
        with pytest.raises(ConnectionResetError):
            theirs.recv(10)
        reused.send(b"still mine")
        assert other.recv(100) == b"still mine"
    finally:
        reused.close()
        other.close()


@pytest.mark.parametrize("cut", [False, True], ids=["plain-close", "fence-cut"])
def test_data_queued_in_a_partition_arrives_after_the_heal_unless_the_fence_cut_it(tmp_path: Path, cut: bool):
    """Cable pulled with a frame in the send queue, then the cable put back: a plain close() lets the kernel deliver it
    late; a fence cut (RST, queue dropped) does not."""
    received = tmp_path / "received"
    with NetnsHosts(["device"]) as net:
        receiver = subprocess.Popen([*net.prefix("device"), sys.executable, "-c", RECEIVER, str(received)], stdout=subprocess.PIPE, text=True)
        try:
            assert receiver.stdout is not None and receiver.stdout.readline() == "ready\n"
            connection = socket.create_connection((net.address["device"], 7000), timeout=2)
            fence = Fence(lambda: True)
            fence.register(connection, 5.0)
            connection.send(b"active|")
            wait_for(lambda: received.exists() and received.read_bytes() == b"active|", 5, "the frame sent while connected")
            net.cut("device")
            connection.send(b"STALE|")  # written while active, stuck in the kernel's queue behind the pulled cable
            if cut:
                fence.close()
            else:
                connection.close()
            net.heal("device")
            arrived = lambda: received.read_bytes() == b"active|STALE|"  # noqa: E731
            if cut:
                holds_for(lambda: not arrived(), 4.0, "the cut frame staying undelivered")
            else:
                wait_for(arrived, 10, "the kernel to retransmit the frame after the heal")
        finally:
            receiver.kill()
            receiver.wait()
