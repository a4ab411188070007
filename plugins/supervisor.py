"""How the hosts run plugin code: reconcile on role and log changes, restart a failed coroutine with back-off, end it
when the node may not act, stop it within a budget."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from cluster.changes import Change
from cluster.guard import NotActive
from cluster.node import ClusterNode

logger = logging.getLogger(__name__)

STOP_BUDGET = 0.15  # seconds a task gets to finish after cancellation (field I/O stops within 200 ms)
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)  # back-off after run() fails
RECHECK_PERIOD = 0.5  # seconds between reconciliations without an event (a lease blip shorter than a tick sends none)


async def follow(
    node: ClusterNode,
    wake: asyncio.Event,
    reconcile: Callable[[], Awaitable[None]],
    on_change: Callable[[Change, Callable[[], None]], None],
    what: str,
) -> None:
    """Await `reconcile()` now, on every role event, whenever `wake` is set, and every RECHECK_PERIOD, until cancelled.
    `on_change(change, wake_up)` sees every applied command on the Raft thread; `wake_up()` is safe to call there."""
    loop = asyncio.get_running_loop()
    wake_up = lambda *_: loop.call_soon_threadsafe(wake.set)  # noqa: E731 - called from the Raft thread
    unsubscribe = [node.on_role(wake_up), node.subscribe(lambda change: on_change(change, wake_up))]
    try:
        while True:
            try:
                await reconcile()
            except Exception:  # keep following the role whatever a plugin did
                logger.exception("%s: reconciling failed", what)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), RECHECK_PERIOD)
            wake.clear()
    finally:
        for cancel in unsubscribe:
            cancel()


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
