"""Work on hundreds of thousands of objects without holding the GIL for long (the Raft thread must keep answering
heartbeats): one C call that frees or sorts a million of them holds it for hundreds of milliseconds. So big containers are
freed one element at a time, in a thread of their own, and big lists are sorted in runs and pairwise merges."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, TypeVar

T = TypeVar("T")
RUN = 10_000  # items sorted by one call

logger = logging.getLogger(__name__)

_waiting: queue.SimpleQueue[Any] = queue.SimpleQueue()
_started = threading.Lock()
_thread: threading.Thread | None = None


def release_later(*containers: list | dict) -> None:
    """Empty these lists and dicts (and so free what only they hold) soon, one element at a time. The caller must not use
    them any more."""
    global _thread
    with _started:
        if _thread is None:
            _thread = threading.Thread(target=_release_forever, name="release", daemon=True)
            _thread.start()
    for container in containers:
        _waiting.put(container)


def _release_forever() -> None:
    while True:
        container = _waiting.get()
        pop = container.popitem if isinstance(container, dict) else container.pop
        while container:
            pop()
        del container, pop


def sorted_in_runs(items: list[T], key: Any = None) -> list[T]:
    """`sorted(items, key=key)`, in steps that each hold the GIL briefly: runs of RUN items, then pairwise merges of
    already sorted runs (which timsort does in linear time)."""
    runs = [sorted(items[start : start + RUN], key=key) for start in range(0, len(items), RUN)]
    while len(runs) > 1:
        runs = [sorted(runs[i] + runs[i + 1], key=key) if i + 1 < len(runs) else runs[i] for i in range(0, len(runs), 2)]
    return runs[0] if runs else []
