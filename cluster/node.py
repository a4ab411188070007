"""A cluster node: the replicated process image, roles (active/standby/witness), activation, hand-off, fail-back and transfer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import changes
from .bulk import release_later
from .changes import Change
from .commands import Activate, ApplyDocuments, Command, UpdatePoints
from .config import NodeConfig, Role, Standing, TandemConfig
from .fence import Fence
from .guard import ActGuard, NotActive
from .raft import Encoder, ProposalFailed, RaftNode, RaftSettings
from .state import ProcessImage, Rejected

logger = logging.getLogger(__name__)

CAUGHT_UP_SLACK = 100  # entries a follower may trail the leader's log and still count as caught up
LAG_WINDOW = 10_000  # point batches over which the apply lag percentiles are reported
COMPACT_DELAY = 10.0  # seconds after a staged configuration change before the first server snapshots it (the next: 2x, 3x)


class RoleEvent(NamedTuple):
    node: str
    role: str  # active | standby | witness
    term: int
    wall: float


class TransferFailed(Exception):
    """A leadership transfer was refused or did not complete in time; the message says why."""


@dataclass
class _Transfer:
    target: NodeConfig
    deadline: float
    reason: str
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    started_term: int = -1
    requested: bool = False
    last_act: float | None = None


class ClusterNode:
    """The public face of the cluster for plugins and the web layer: read the image, propose, subscribe, act."""

    def __init__(self, config: TandemConfig, name: str) -> None:
        self.config = config
        self.me = config.node(name)
        self.name = name
        self.image = ProcessImage()
        self.role_history: deque[RoleEvent] = deque(maxlen=100)
        self._apply_lags: deque[float] = deque(maxlen=LAG_WINDOW)
        self.updates_applied = 0  # point updates this node applied since it started (a rate for benchmarks and metrics)
        self._timers = config.cluster.timers
        self._names = {node.raft: node.name for node in config.cluster.nodes}
        self._change_subscribers: list[Callable[[Change], None]] = []
        self._role_subscribers: list[Callable[[RoleEvent], None]] = []
        self._activated_term = -1
        self._activation_proposed_term = -1
        self._may_act = True
        self._active = False
        self._next_lifesign = 0.0
        self._main_caught_up_since: float | None = None
        self._transfer: _Transfer | None = None
        self._pending_transfer: _Transfer | None = None
        self.fence = Fence(lambda: self._permit(self._timers.act_margin) is not None)  # field and upstream sockets
        self.guard = ActGuard(name, self._permit, self._timers.act_margin, self.me.data_dir / "acts.log", self.fence.close)
        self.blocked: str | None = None  # why this server may not become active (e.g. a required plugin failed)
        self._status_extras: dict[str, Callable[[], Any]] = {}
        self._raft: RaftNode | None = None
        self._index = [node.name for node in config.cluster.nodes].index(name)
        self._compact_at: float | None = None  # when to snapshot after a big configuration change

    # ---- lifecycle ----

    def start(self) -> None:
        cluster = self.config.cluster
        self._raft = RaftNode(RaftSettings(
            address=self.me.raft,
            peers=[node.raft for node in cluster.nodes if node.name != self.name],
            password=self.config.raft_password,
            data_dir=self.me.data_dir,
            fsync=cluster.fsync,
            timers=self._timers,
            campaign_factor=self._timers.witness_election_factor if self.me.role is Role.WITNESS else 1.0,
            snapshot_entries=cluster.snapshot_entries,
            first_campaign_delay=self._timers.election_max if self.me.role is Role.BACKUP else 0.0,  # main wins a cold start
            on_apply=self._apply,
            freeze=self._freeze,
            on_restore=self._restore,
        ))
        self._raft.may_campaign = self._may_campaign()  # before the first election timeout runs out
        self._raft.on_tick(self._on_tick)
        logger.info("node %s (%s) started: raft %s, api %s", self.name, self.me.role.value, self.me.raft, self.me.api)

    def stop(self) -> None:
        if self._raft is not None:
            self._raft.stop()
        self.guard.close()

    @property
    def raft(self) -> RaftNode:
        assert self._raft is not None, "node not started"
        return self._raft

    # ---- subscriptions (callbacks run on the Raft thread: keep them short, hand work to your own loop) ----

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        self._change_subscribers.append(callback)
        return lambda: self._change_subscribers.remove(callback)

    def on_role(self, callback: Callable[[RoleEvent], None]) -> Callable[[], None]:
        self._role_subscribers.append(callback)
        return lambda: self._role_subscribers.remove(callback)

    def add_status(self, key: str, provider: Callable[[], Any]) -> None:
        """Add `key: provider()` to this node's status (/api/v1/node), e.g. the plugin host's view."""
        self._status_extras[key] = provider

    # ---- roles ----

    def _permit(self, margin: float) -> int | None:
        """The current term if this node may act for at least `margin` more seconds, else None."""
        raft = self._raft
        if raft is None or not self._may_act or not raft.is_leader:
            return None
        term = raft.term
        if term != self._activated_term or raft.lease_remaining() <= margin:
            return None
        return term

    def is_active(self) -> bool:
        return self._permit(0.0) is not None

    def applied_everything_committed(self) -> bool:
        """Whether this node's image holds every entry it knows committed (a consistent read on the active needs that)."""
        return self.raft.applied_index >= self.raft.commit_index

    @property
    def role(self) -> str:
        if self.me.role is Role.WITNESS:
            return Standing.WITNESS.value
        return (Standing.ACTIVE if self.is_active() else Standing.STANDBY).value

    def active_node(self) -> NodeConfig | None:
        """The active server as far as this node knows (its own replicated activation record and leader)."""
        activation = self.image.activation
        raft = self._raft
        if activation is None or raft is None or raft.leader_address is None:
            return None
        if self._names.get(raft.leader_address) != activation.node or activation.term != raft.term:
            return None
        return self.config.node(activation.node)

    # ---- proposing ----

    async def submit(self, command: Command, timeout: float = 5.0) -> object:
        """Commit a command through the log (active only); returns apply's result."""
        if not self.is_active() or self._transfer is not None:
            raise NotActive(f"{self.name} is not the active server")
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def settle(result: object, error: str | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(ProposalFailed(f"not committed: {error}"))

        self.raft.propose(command, lambda result, error: loop.call_soon_threadsafe(settle, result, error))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ProposalFailed(f"not committed within {timeout} s (outcome unknown)") from None

    # ---- transfer ----

    def request_transfer(self, to: str, timeout: float | None = None) -> concurrent.futures.Future:
        """Start a planned hand-over of the active role to `to`; the future gives a result dict or TransferFailed."""
        target = self.config.node(to)
        if target.role is Role.WITNESS:
            raise TransferFailed(f"{to} is the witness: it votes but never becomes active; transfer to a server")
        if target.name == self.name:
            raise TransferFailed(f"{to} is already this node")
        if not self.raft.peer_eligible(target.raft):
            raise TransferFailed(f"{to} reports that it may not become active (see its status: blocked)")
        if not self.is_active():
            raise TransferFailed(f"{self.name} is not the active server")
        if self._transfer is not None or self._pending_transfer is not None:
            raise TransferFailed("a transfer is already in progress")
        transfer = _Transfer(target, time.monotonic() + (timeout or self.config.cluster.transfer_timeout), "operator")
        self._pending_transfer = transfer
        return transfer.future

    def _begin_transfer(self, transfer: _Transfer) -> None:
        raft = self.raft
        if not raft.is_leader:
            transfer.future.set_exception(TransferFailed(f"{self.name} is no longer the leader"))
            return
        self._may_act = False
        raft.revoke_lease()
        transfer.last_act = self.guard.last_act
        transfer.started_term = raft.term
        self._transfer = transfer
        logger.info("transfer to %s started (%s)", transfer.target.name, transfer.reason)

    def _drive_transfer(self, now: float) -> None:
        transfer = self._transfer
        assert transfer is not None
        raft = self.raft
        target = transfer.target
        activation = self.image.activation
        if activation is not None and activation.node == target.name and activation.term > transfer.started_term:
            self._end_transfer(None)
            return
        if now > transfer.deadline:
            state = "did not take over" if transfer.requested else "was not reachable and caught up"
            self._end_transfer(f"{target.name} {state} within the timeout; {self.name} stays active")
            return
        if not transfer.requested and raft.is_leader and raft.connected(target.raft):
            if raft.match_index(target.raft) == raft.last_log_index:
                transfer.requested = raft.transfer_to(target.raft)

    def _end_transfer(self, error: str | None) -> None:
        transfer = self._transfer
        assert transfer is not None
        self._transfer = None
        raft = self.raft
        raft.cancel_transfer()
        if error is None:
            activation = self.image.activation
            assert activation is not None
            logger.info("transfer to %s done in term %d", transfer.target.name, activation.term)
            transfer.future.set_result(
                {"from": self.name, "to": transfer.target.name, "term": activation.term, "last_act": transfer.last_act}
            )
        else:
            if raft.is_leader:
                raft.restore_lease()
            logger.warning("transfer failed: %s", error)
            transfer.future.set_exception(TransferFailed(error))
        self._may_act = True

    # ---- the Raft thread's per-tick work ----

    def _on_tick(self) -> None:
        try:
            self._tick()
        except Exception:
            logger.exception("role tick failed")  # never let it stop pysyncobj's tick (it would skip polling)

    def _may_campaign(self) -> bool:
        """A blocked server (loading or missing plugins) starts no election: it would only have to hand the role on.
        The witness does, so that the cluster always finds a leader."""
        return self.me.role is Role.WITNESS or self.blocked is None

    def _tick(self) -> None:
        raft = self.raft
        now = time.monotonic()
        if self._compact_at is not None and now >= self._compact_at:
            self._compact_at = None
            raft.compact()
        if not self.is_active():
            self.fence.close()  # the role is lost: nothing queued while active may reach a device or client now
        self.fence.sweep()
        raft.eligible = self.me.is_server and self.blocked is None
        raft.may_campaign = self._may_campaign()
        if self._transfer is None and self._pending_transfer is not None:
            transfer, self._pending_transfer = self._pending_transfer, None
            self._begin_transfer(transfer)
        if self._transfer is not None:
            self._drive_transfer(now)
        if self.me.role is Role.WITNESS or self.blocked is not None:
            if raft.is_leader and self._transfer is None:
                self._hand_off(now)
            return
        term = raft.term
        if raft.is_leader and self._activated_term != term and self._activation_proposed_term != term:
            self._propose_activation(term)
        active = self.is_active()
        if active != self._active:
            self._active = active
            self._emit(RoleEvent(self.name, (Standing.ACTIVE if active else Standing.STANDBY).value, term, time.time()))
        if active:
            if now >= self._next_lifesign:
                self._next_lifesign = now + self._timers.lifesign_interval
                with contextlib.suppress(NotActive):  # the lease may have less than the act margin left: no life sign then
                    self.guard.act("lifesign")
            self._check_failback(now)

    def _propose_activation(self, term: int) -> None:
        self._activation_proposed_term = term

        def done(result: object, error: str | None) -> None:
            if error is not None or isinstance(result, Rejected):
                logger.warning("activation for term %d not committed: %s", term, error or result)
                self._activation_proposed_term = -1

        previous = self.image.activation
        contact = self.raft.leader_contact_age()  # since the last AppendEntries of the previous leader
        gap = float(contact) if previous is not None and previous.node != self.name and math.isfinite(contact) else None
        self.raft.propose(Activate(node=self.name, term=term, ts=time.time(), gap=gap), done)

    def _caught_up(self, node: NodeConfig) -> bool:
        raft = self.raft
        match = raft.match_index(node.raft)
        age = raft.ack_age(node.raft)
        return (
            raft.connected(node.raft)
            and match is not None
            and raft.last_log_index - match <= CAUGHT_UP_SLACK
            and age is not None
            and age < self._timers.election_min
        )

    def _hand_off(self, now: float) -> None:
        """The witness (or a blocked server) won an election: pass leadership at once to the best caught-up server."""
        servers = [
            n
            for n in self.config.cluster.nodes
            if n.is_server and n.name != self.name and self.raft.connected(n.raft) and self.raft.peer_eligible(n.raft)
        ]
        if not servers:
            return
        best = max(servers, key=lambda n: (self.raft.match_index(n.raft) or 0, n.role is Role.MAIN))
        self._transfer = _Transfer(best, now + self._timers.election_max, "witness hand-off", started_term=self.raft.term)

    def _check_failback(self, now: float) -> None:
        main = self.config.by_role(Role.MAIN)
        if self.me.role is not Role.BACKUP or self.config.cluster.failback != "auto":
            return
        if self._transfer is not None or self._pending_transfer is not None or not self._caught_up(main):
            self._main_caught_up_since = None
            return
        if self._main_caught_up_since is None:
            self._main_caught_up_since = now
        elif now - self._main_caught_up_since >= self.config.cluster.failback_holdoff and self.raft.peer_eligible(main.raft):
            # the hold-off runs while main may still be loading its plugins; it must be eligible only to hand back
            self._main_caught_up_since = None
            transfer = _Transfer(main, now + self.config.cluster.transfer_timeout, "fail-back")
            transfer.future.add_done_callback(_log_outcome)
            self._begin_transfer(transfer)

    def _emit(self, event: RoleEvent) -> None:
        logger.info("role: %s is %s (term %d)", event.node, event.role, event.term)
        self.role_history.append(event)
        for callback in list(self._role_subscribers):
            try:
                callback(event)
            except Exception:
                logger.exception("role subscriber %r failed", callback)

    # ---- state machine plumbing (Raft thread) ----

    def _apply(self, command: Command) -> object:
        staging = self.image.staging  # kept here, so that a staging the command ends is not freed all at once on this thread
        result = self.image.apply(command)
        if staging is not None and self.image.staging is not staging:
            release_later(staging.changes)
        if type(command) is UpdatePoints:
            self._apply_lags.append(time.time() - command.ts)  # newest sample's stamp -> applied here
            self.updates_applied += len(command.updates)
        if isinstance(command, Activate) and command.node == self.name and not isinstance(result, Rejected):
            self._activated_term = command.term
        if type(command) is ApplyDocuments and command.staged is not None and not isinstance(result, Rejected):
            # A big configuration change: snapshot it rather than keep (and have a wiped node replay) its parts, once the
            # drivers have started on it, and one server after the other (each encoding takes a core for a while).
            self._compact_at = time.monotonic() + COMPACT_DELAY * (1 + self._index)
        self._notify(changes.applied(command, result, self.image))
        return result

    def _freeze(self) -> Encoder:
        frozen = self.image.freeze()
        return lambda: ProcessImage.encode(frozen)

    def _restore(self, data: bytes) -> None:
        self.image = ProcessImage.decode(data)
        logger.info("image restored from snapshot: %d points", len(self.image.points))
        self._notify(changes.restored(self.image.applied))

    def _notify(self, change: Change) -> None:
        for callback in list(self._change_subscribers):
            try:
                callback(change)
            except Exception:
                logger.exception("change subscriber %r failed", callback)

    # ---- status ----

    def local_status(self) -> dict[str, Any]:
        """This node's own view, as served by /api/v1/node."""
        raft = self.raft
        activation = self.image.activation
        leader = self._names.get(raft.leader_address) if raft.leader_address else None
        peers = {}
        for node in self.config.cluster.nodes:
            if node.name != self.name:
                peers[node.name] = {
                    "connected": raft.connected(node.raft),
                    "match_index": raft.match_index(node.raft),
                    "ack_age": raft.ack_age(node.raft),
                    "eligible": raft.peer_eligible(node.raft),  # as the peer last reported: it may become active
                }
        lease = raft.lease_remaining()
        return {
            "name": self.name,
            "config_role": self.me.role.value,
            "role": self.role,
            "term": raft.term,
            "leader": leader,
            "is_leader": raft.is_leader,
            "commit_index": raft.commit_index,
            "applied_index": raft.applied_index,
            "last_log_index": raft.last_log_index,
            "last_ts": self.image.last_ts,
            "leader_contact_age": None if math.isinf(raft.leader_contact_age()) else raft.leader_contact_age(),
            "lease_remaining": lease if math.isfinite(lease) and lease > 0 else 0.0,
            "activation": None if activation is None else activation._asdict(),
            "acts": {"term": self.guard.term, "first": self.guard.first_act, "last": self.guard.last_act},
            "transfer": None if self._transfer is None else self._transfer.target.name,
            "points": len(self.image.points),
            "updates_applied": self.updates_applied,
            "commands_applied": self.image.applied,  # the log position derived state (trends) is recorded by
            "apply_lag": _percentiles(self._apply_lags),
            "largest_entry": raft.largest_entry,  # bytes, since this node started
            "longest_apply": raft.longest_apply,  # seconds one entry held the Raft thread, since this node started
            "longest_tick_gap": raft.longest_tick_gap,  # seconds the Raft thread went without a tick, since this node started
            "blocked": self.blocked,
            **{key: provider() for key, provider in self._status_extras.items()},
            "peers": peers,
        }


def _percentiles(samples: deque[float]) -> dict[str, float | int | None]:
    """Median, p99 and max of the seconds from a point batch's newest sample to its apply on this node."""
    ordered = sorted(samples)
    if not ordered:
        return {"batches": 0, "p50": None, "p99": None, "max": None}
    return {
        "batches": len(ordered),
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)],
        "max": ordered[-1],
    }


def _log_outcome(future: concurrent.futures.Future) -> None:
    if future.exception() is None:
        logger.info("fail-back done: %s", future.result())
