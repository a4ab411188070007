"""What one applied log entry changed, derived once when it is applied and handed to every subscriber."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, NamedTuple

from .commands import Activate, Command, Step, UpdatePoints, WriteOutcome, WritePoint
from .state import ProcessImage, Rejected

_NOTHING: Mapping[str, frozenset[str]] = MappingProxyType({})


class Change(NamedTuple):
    """The summary of one applied command, or of a snapshot install (`restored`: the whole image was replaced).

    `seq` counts the commands applied so far (the same on every replica); after a snapshot, the snapshot's count. A
    rejected command changed nothing: only its `seq` and `command` are set."""

    seq: int
    command: Command | None = None  # for a subscriber that needs the details (a driver's reported values); None: restored
    points: frozenset[str] = frozenset()  # points whose value or desired write changed
    writes: frozenset[str] = frozenset()  # of those, the ones whose write was made or settled (not a driver's report)
    kinds: frozenset[str] = frozenset()  # document kinds whose visible documents changed (a staged part changes none)
    state: Mapping[str, frozenset[str]] = _NOTHING  # function -> keys of its replicated state changed
    activated: str | None = None  # the node an applied activation record made active

    @property
    def restored(self) -> bool:
        return self.command is None


def restored(seq: int) -> Change:
    """The image was replaced from a snapshot taken after command `seq`: anything may have changed."""
    return Change(seq)


def applied(command: Command, result: object, image: ProcessImage) -> Change:
    """What `command` changed in `image`, which it was just applied to with `result`."""
    seq = image.applied
    if isinstance(result, Rejected):
        return Change(seq, command)
    kind = type(command)
    kinds = frozenset(image.kinds_changed)
    if kind is UpdatePoints:
        return Change(seq, command, points=frozenset(update[0] for update in command.updates))
    if kind is WritePoint or kind is WriteOutcome:
        names = frozenset((command.name,))
        return Change(seq, command, points=names, writes=names, kinds=kinds)
    if kind is Step:
        names = frozenset(point for point, _ in command.writes)
        state = MappingProxyType({command.function: frozenset(key for key, _, _ in command.changes)})
        return Change(seq, command, points=names, writes=names, kinds=kinds, state=state)
    if kind is Activate:
        return Change(seq, command, kinds=kinds, activated=command.node)
    return Change(seq, command, kinds=kinds)
