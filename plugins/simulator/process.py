"""The controlling side of a simulated device process: start it with `python -m`, exchange lines, pause, resume, kill."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from typing import Any


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` ports free on `host` right now (for a simulated device, a test's node or the demo)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SimulatorProcess:
    """One simulated device process that reads commands on stdin and answers one line each on stdout."""

    kind = "device"

    def __init__(self, port: int, prefix: list[str] | None = None) -> None:
        self.port = port
        self.prefix = list(prefix or [])  # a command prefix, e.g. ["ip", "netns", "exec", "NS"]: run it in a network namespace
        self.process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()

    def _spawn(self, module: str, *args: str) -> None:
        command = [*self.prefix, sys.executable, "-m", module, "--port", str(self.port), *args]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._lines = queue.Queue()
        # A reader thread, not select() + readline(): the text stream buffers ahead, and select() does not see that.
        threading.Thread(target=_pump, args=(self.process.stdout, self._lines), daemon=True).start()

    def _line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = ""
        if not line:
            raise RuntimeError(f"simulated {self.kind} on port {self.port} did not answer within {timeout} s")
        return line

    def _send(self, line: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)  # a paused process dies as well, but its pipes are cleaner this way
            self.process.kill()
            self.process.wait(10)
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()
            self.process = None


def _pump(stream: Any, lines: queue.Queue[str]) -> None:
    """Hand every line of `stream` to `lines`; an empty string marks its end."""
    for line in stream:
        lines.put(line)
    lines.put("")
