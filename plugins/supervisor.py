"""Run a plugin's long-lived coroutine: restart it with back-off when it fails, end it when the node may not act, stop it within a budget."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from cluster.guard import NotActive

logger = logging.getLogger(__name__)

STOP_BUDGET = 0.15  # seconds a task gets to finish after cancellation (field I/O stops within 200 ms)
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)  # back-off after run() fails


async def keep_running(what: str, run: Callable[[], Awaitable[None]], failed: Callable[[str], None]) -> None:
    """Await `run()` until cancelled; on failure log once per distinct error, tell `failed`, and restart with back-off.
    Returns when `run()` raises NotActive (the lease lapsed at the moment of acting; the host starts it again once active)."""
    failures, last = 0, None
    while True:
        try:
            await run()
            error = "run() returned; it must run until cancelled"
        except asyncio.CancelledError:
            raise
        except NotActive:
            return
        except Exception as exc:  # a plugin's bug must not take the node down
            error = f"{type(exc).__name__}: {exc}"
        if error != last:
            logger.error("%s failed: %s", what, error)
            failed(error)
            last = error
        await asyncio.sleep(RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)])
        failures += 1


async def stop_all(tasks: Iterable[asyncio.Task]) -> None:
    """Cancel the tasks and wait up to STOP_BUDGET for them; log the ones that overrun."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=STOP_BUDGET)
        for task in late:
            logger.error("%s did not stop within %.0f ms of cancellation", task.get_name(), STOP_BUDGET * 1000)
