"""The socket fence: sockets opened while active drop their unsent data on close and are cut off the moment the role is lost.

A frame written to a TCP socket while active stays in the kernel's send queue when the network is cut, and the kernel
retransmits it after the network heals, while another server is active. A plain close() does not stop that. So every
field and upstream socket is handed to the fence, which sets a zero linger (a close sends RST and drops the queue),
TCP_USER_TIMEOUT (the kernel gives up on data unacknowledged for that long) and keepalive, and keeps its own duplicate of
the descriptor. When the role is lost it aborts each one from the thread that noticed (the Raft tick or a refused act),
whatever the event loop is doing: a TCP socket is disconnected (RFC 793 ABORT: RST, queues dropped), a UDP socket is
shut down for sending. The duplicate means a descriptor number the owner closed and the system reused is never touched.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from .guard import NotActive

logger = logging.getLogger(__name__)

KEEPALIVE_IDLE = 1  # seconds of silence before the first keepalive probe
KEEPALIVE_INTERVAL = 1  # seconds between probes
KEEPALIVE_PROBES = 3  # unanswered probes before the kernel drops the connection

_libc = ctypes.CDLL(None, use_errno=True)
_UNSPEC = struct.pack("H14x", socket.AF_UNSPEC)  # struct sockaddr with sa_family AF_UNSPEC


def disconnect(fd: int) -> None:
    """Abort the TCP connection behind `fd` now: connect() to AF_UNSPEC runs the kernel's tcp_disconnect, which sends
    RST and drops the send and receive queues (Linux). Raises OSError if the kernel refuses."""
    address = ctypes.create_string_buffer(_UNSPEC, len(_UNSPEC))
    if _libc.connect(fd, address, len(_UNSPEC)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def harden(sock: Any, user_timeout: float) -> None:
    """Zero linger, TCP_USER_TIMEOUT and keepalive on a TCP socket (`sock`: a socket or asyncio's TransportSocket)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, round(user_timeout * 1000)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)


class _Fenced:
    """A registered socket: the owner's object (to see when it closed it) and our duplicate of its descriptor."""

    def __init__(self, owner: Any, duplicate: socket.socket) -> None:
        self.owner = owner
        self.duplicate = duplicate

    def cut(self) -> None:
        """Stop the socket from sending anything more: abort a TCP connection, shut a UDP socket for writing."""
        try:
            if self.duplicate.type == socket.SOCK_STREAM:
                disconnect(self.duplicate.fileno())
            else:
                self.duplicate.shutdown(socket.SHUT_RDWR)
        except OSError as exc:  # ENOTCONN (already closed by the peer) and the like: nothing left to send
            logger.debug("fence: cutting %s: %s", self.duplicate, exc)


class Fence:
    """The sockets opened while active; `close()` cuts them all. Any thread may call any method."""

    def __init__(self, may_act: Callable[[], bool]) -> None:
        self._may_act = may_act
        self._lock = threading.Lock()
        self._sockets: list[_Fenced] = []
        self.cuts = 0  # sockets cut because the role was lost (a counter for status and tests)

    def close(self) -> None:
        """The node is not active: cut every registered socket and forget it (called on every tick while not active)."""
        if not self._sockets:
            return
        with self._lock:
            fenced, self._sockets = self._sockets, []
        for entry in fenced:
            entry.cut()
            entry.duplicate.close()
        if fenced:
            self.cuts += len(fenced)
            logger.info("fence: role lost, %d socket(s) opened while active cut off", len(fenced))

    def register(self, sock: Any, user_timeout: float) -> None:
        """Fence a socket the active just opened (TCP is hardened first, with TCP_USER_TIMEOUT `user_timeout`); raises
        NotActive, with the socket already cut, if the node may not act any more."""
        if sock.type == socket.SOCK_STREAM:
            harden(sock, user_timeout)
        entry = _Fenced(sock, socket.socket(fileno=os.dup(sock.fileno())))
        with self._lock:  # atomic with close(): a socket is either cut by it or registered while the node may act
            if self._may_act():
                self._sockets.append(entry)
                return
        entry.cut()
        entry.duplicate.close()
        raise NotActive("the role was lost while the connection was being opened")

    def abort(self, sock: Any) -> None:
        """Cut one registered socket now and forget it; call it before closing a fenced socket (a request timed out, the
        connection is in doubt, or you are done with it)."""
        with self._lock:
            fenced = [entry for entry in self._sockets if entry.owner is sock]
            self._sockets = [entry for entry in self._sockets if entry.owner is not sock]
        for entry in fenced:
            entry.cut()
            entry.duplicate.close()

    def sweep(self) -> None:
        """Let go of the duplicates of sockets their owners closed (the kernel then closes them: RST, zero linger)."""
        if not self._sockets:
            return
        with self._lock:
            closed = [entry for entry in self._sockets if entry.owner.fileno() == -1]
            self._sockets = [entry for entry in self._sockets if entry.owner.fileno() != -1]
        for entry in closed:
            entry.duplicate.close()

    def __len__(self) -> int:
        return len(self._sockets)
