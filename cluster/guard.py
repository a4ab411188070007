"""The act guard: every action of the active server passes here, checks the lease at that moment, and is recorded."""

from __future__ import annotations

import json
import logging
import logging.handlers
import threading
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)


class NotActive(Exception):
    """This node may not act now (not leader, not activated, lease lapsed, or handing over)."""


class ActGuard:
    """Grants acts only while `permit(margin)` returns the term whose lease outlasts the act margin; calls `on_refusal()` on
    every refusal (the node cuts its fence: the event loop may notice a lapsed lease before the Raft tick does)."""

    def __init__(
        self, node: str, permit: Callable[[float], int | None], margin: float, log_path: Path, on_refusal: Callable[[], None] = lambda: None
    ) -> None:
        self._node = node
        self._permit = permit
        self._margin = margin
        self._on_refusal = on_refusal
        self._lock = threading.Lock()
        self.term: int | None = None
        self.first_act: float | None = None
        self.last_act: float | None = None
        self.refused = 0
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = logging.handlers.RotatingFileHandler(log_path, maxBytes=4 * 2**20, backupCount=1)
        self._record = logging.getLogger(f"tandem.acts.{node}")
        self._record.propagate = False
        self._record.setLevel(logging.INFO)
        self._record.addHandler(self._handler)

    def act(self, what: str) -> int:
        """Check the lease now and record the act; returns the term acted in, raises NotActive otherwise."""
        mono = time.monotonic()
        term = self._permit(self._margin)
        if term is None:
            with self._lock:
                self.refused += 1
            self._on_refusal()
            raise NotActive(f"{self._node} is not the active server")
        wall = time.time()
        with self._lock:
            if term != self.term:
                self.term, self.first_act = term, wall
            self.last_act = wall
        self._record.info(json.dumps({"node": self._node, "term": term, "what": what, "wall": wall, "mono": mono}))
        return term

    def close(self) -> None:
        self._record.removeHandler(self._handler)
        self._handler.close()


def read_acts(path: Path) -> list[dict]:
    """The recorded acts of one node, oldest first (rotated file included)."""
    acts: list[dict] = []
    for file in (path.with_name(path.name + ".1"), path):
        if file.exists():
            acts.extend(json.loads(line) for line in file.read_text().splitlines() if line.strip())
    return acts
